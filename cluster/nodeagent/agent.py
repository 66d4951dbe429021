"""The agent's process: registers the Node, renews its Lease, runs the pod loop and the log
endpoint until SIGTERM, then removes every container and network it made."""

from __future__ import annotations

import logging
import os
import platform
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import kubernetes
from kubernetes.client.rest import ApiException

from .dockerops import DockerOps
from .events import EventRecorder
from .kubelet import Kubelet
from .logserver import LogServer
from .podstatus import Node
from .util import micro_time, rfc3339

log = logging.getLogger(__name__)
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
TICK = 0.25
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


@dataclass
class Settings:
    """What `python -m nodeagent` is told."""

    kubeconfig: str
    node_name: str
    workdir: Path
    sandbox_image: str
    tls_cert: str
    tls_key: str
    client_ca: str
    host_aliases: list[str] = field(default_factory=list)
    port: int = 0
    cpus: int | None = None
    docker_host: str = "unix:///var/run/docker.sock"
    kubelet_version: str = "v1.37.2"


def this_machine(name: str, cpus: int | None) -> Node:
    """The Node as this machine is: its memory, and its CPUs unless `cpus` says otherwise."""
    with open("/proc/meminfo") as meminfo:
        total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return Node(name=name, cpu_milli=(cpus or os.cpu_count() or 1) * 1000, memory=total_kib * 1024)


def node_status(node: Node, version: str, engine: str) -> dict[str, Any]:
    """The Node's status as a kubelet reports it: resources, Ready, address, kubelet port."""
    stamp = rfc3339()
    resources = {
        "cpu": str(node.cpu_milli // 1000),
        "memory": f"{node.memory // 1024}Ki",
        "pods": str(node.max_pods),
    }

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID"),
            condition("Ready", "True", "KubeletReady", "the node agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node.address},
            {"type": "Hostname", "address": node.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": node.port}},
        "nodeInfo": {
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "containerRuntimeVersion": f"docker://{engine}",
            "operatingSystem": "linux",
            "architecture": ARCH,
            "kernelVersion": platform.release(),
            "osImage": "prefect-kubeflow node agent",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


class Agent:
    """One node of the test cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        api = kubernetes.config.new_client_from_config(config_file=settings.kubeconfig)
        self.core = kubernetes.client.CoreV1Api(api)
        self.coordination = kubernetes.client.CoordinationV1Api(api)
        self.docker = docker.DockerClient(base_url=settings.docker_host)
        self.node = this_machine(settings.node_name, settings.cpus)
        self.ops = DockerOps(
            self.docker, uuid.uuid4().hex[:8], settings.sandbox_image, settings.host_aliases
        )
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pod")
        recorder = EventRecorder(self.core, self.node.name)
        settings.workdir.mkdir(parents=True, exist_ok=True)
        self.kubelet = Kubelet(
            self.core, self.ops, recorder, self.node, settings.workdir, self.executor
        )
        self.logs = LogServer(
            self.docker,
            self._pod_of,
            (settings.tls_cert, settings.tls_key, settings.client_ca),
            settings.port,
        )
        self.node.port = self.logs.port
        self.stopping = threading.Event()

    def _pod_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self.kubelet.pods.get((namespace, name))
        if pod is None:
            return None
        state = self.kubelet.states.get(pod["metadata"]["uid"])
        published = state.published if state else None
        return {**pod, "status": published or pod.get("status") or {}}

    def register(self) -> None:
        """Create the Node (or take over the one of this name) and report it Ready."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node.name,
                "labels": {
                    "kubernetes.io/hostname": self.node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": node_status(self.node, "", "")["nodeInfo"][
                        "architecture"
                    ],
                },
            },
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._report()

    def _report(self) -> None:
        engine = str(self.docker.version().get("Version", ""))
        status = node_status(self.node, self.settings.kubelet_version, engine)
        self.core.patch_node_status(
            self.node.name, {"status": status}, _content_type="application/merge-patch+json"
        )

    def _renew(self) -> None:
        """Renew the node's Lease (and its status) every few seconds until stopped."""
        while not self.stopping.wait(RENEW_EVERY):
            try:
                self._renew_lease()
                self._report()
            except Exception as exc:  # the API server may be restarting: try again
                log.warning("lease renewal failed: %s", exc)

    def _renew_lease(self) -> None:
        namespace, name = "kube-node-lease", self.node.name
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_time(),
        }
        try:
            self.coordination.patch_namespaced_lease(
                name, namespace, {"spec": spec}, _content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            lease: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
            self.coordination.create_namespaced_lease(namespace, lease)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then clean up."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        self.logs.start()
        self.register()
        self._renew_lease()
        threading.Thread(target=self._renew, name="lease", daemon=True).start()
        log.info("node %s ready, kubelet port %d", self.node.name, self.node.port)
        try:
            while not self.stopping.is_set():
                self._tick()
                self.kubelet.wake.wait(TICK)
                self.kubelet.wake.clear()
        finally:
            self.ops.closed = True
            self.logs.stop()
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.ops.cleanup()

    def _tick(self) -> None:
        try:
            pods = self.kubelet.bound_pods()
            snapshot = self.ops.snapshot()
        except Exception as exc:  # the API server or Docker hiccupped: next tick
            log.warning("tick skipped: %s", exc)
            time.sleep(1)
            return
        self.kubelet.sync(pods, snapshot)
