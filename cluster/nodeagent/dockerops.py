"""The container runtime: Docker calls for pod sandboxes, containers and job networks.

A pod is a "sandbox" container (`sleep infinity`, holding the pod's network namespace, IP,
hostname and DNS aliases, like the kubelet's pause container) plus one container per attempt
of the pod's container, joined to the sandbox's network and IPC namespaces. Every object
carries the label `pk-node-agent=<id>` (and `pk-node-agent.job`, `pk-node-agent.pod`, ...).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound

LABEL = "pk-node-agent"


class DockerOps:
    """Docker operations of one cluster (thread-safe)."""

    def __init__(
        self,
        client: docker.DockerClient,
        cluster_id: str,
        sandbox_image: str,
        host_aliases: list[str] | None = None,
    ) -> None:
        self.client = client
        self.host_aliases = host_aliases or []
        self.api = client.api
        self.id = cluster_id
        self.sandbox_image = sandbox_image
        self._networks: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def _check_open(self, created: str | None = None) -> None:
        """Refuse to create anything once the cluster is stopping."""
        if self.closed:
            if created:
                self.remove(created)
            raise RuntimeError("the node agent is stopping")

    def labels(self, **extra: str) -> dict[str, str]:
        """The labels of everything this cluster creates."""
        return {LABEL: self.id, **{f"{LABEL}.{k}": v for k, v in extra.items()}}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """One list call: every container of this cluster, by id."""
        found = self.api.containers(all=True, filters={"label": f"{LABEL}={self.id}"})
        return {c["Id"]: c for c in found}

    def network_name(self, namespace: str, job: str) -> str:
        """`pk-<id>-<namespace>-<job>`."""
        return f"pk-{self.id}-{namespace}-{job}"

    def ensure_network(self, namespace: str, job: str) -> dict[str, str]:
        """The job's bridge network (created once); returns its name and gateway."""
        key = (namespace, job)
        with self._lock:
            if key in self._networks:
                return self._networks[key]
            name = self.network_name(namespace, job)
            existing = self.api.networks(names=[name])
            net = (
                existing[0]
                if existing
                else self.api.create_network(
                    name, driver="bridge", labels=self.labels(job=job, namespace=namespace)
                )
            )
            info = self.api.inspect_network(net["Id"])
            config = (info.get("IPAM", {}).get("Config") or [{}])[0]
            self._networks[key] = {
                "name": name,
                "id": info["Id"],
                "gateway": config.get("Gateway", ""),
            }
            return self._networks[key]

    def remove_network(self, namespace: str, job: str) -> bool:
        """Remove the job's network; False while containers are still attached to it."""
        with self._lock:
            try:
                self.api.remove_network(self.network_name(namespace, job))
            except NotFound:
                pass
            except APIError:
                return False
            self._networks.pop((namespace, job), None)
            return True

    def known_networks(self) -> list[tuple[str, str]]:
        """(namespace, job) of the networks this cluster created and still knows."""
        with self._lock:
            return list(self._networks)

    def create_sandbox(
        self, pod: dict[str, Any], job: str, aliases: list[str], dns_search: list[str]
    ) -> tuple[str, str]:
        """Create and start the pod sandbox; returns (container id, pod IP)."""
        self._check_open()
        meta, spec = pod["metadata"], pod["spec"]
        net = self.ensure_network(meta["namespace"], job)
        endpoint = self.api.create_endpoint_config(aliases=aliases)
        host_config = self.api.create_host_config(
            dns_search=dns_search,
            dns_opt=["ndots:5"],
            ipc_mode="shareable",
            extra_hosts={
                name: net["gateway"] for name in ["host.pk-node.internal", *self.host_aliases]
            }
            if net["gateway"]
            else None,
        )
        hostname = spec.get("hostname") or meta["name"]
        domain = (
            f"{spec['subdomain']}.{meta['namespace']}.svc.cluster.local"
            if spec.get("subdomain")
            else None
        )
        created = self.api.create_container(
            self.sandbox_image,
            command=["infinity"],
            entrypoint=["sleep"],
            hostname=hostname,
            domainname=domain,
            host_config=host_config,
            networking_config=self.api.create_networking_config({net["name"]: endpoint}),
            labels=self.labels(
                job=job,
                pod=meta["name"],
                namespace=meta["namespace"],
                **{"pod-uid": meta["uid"], "role": "sandbox"},
            ),
            name=f"pk-{self.id}-{meta['name']}-sandbox",
        )
        self._check_open(created["Id"])
        self.api.start(created["Id"])
        info = self.api.inspect_container(created["Id"])
        address = info["NetworkSettings"]["Networks"].get(net["name"], {}).get("IPAddress", "")
        return created["Id"], address

    def image_id(self, image: str) -> str | None:
        """The local image id, or None when the image is not present."""
        try:
            return self.api.inspect_image(image)["Id"]
        except ImageNotFound:
            return None
        except APIError:
            return None

    def pull(self, image: str) -> str | None:
        """Try to pull; returns an error text (None on success)."""
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        try:
            self.api.pull(repo, tag=tag or "latest")
        except APIError as exc:
            return str(exc.explanation or exc)
        return None

    def create_container(
        self,
        pod: dict[str, Any],
        job: str,
        container: dict[str, Any],
        sandbox: str,
        attempt: int,
        config: dict[str, Any],
    ) -> str:
        """Create (not start) one attempt of a pod's container."""
        self._check_open()
        meta = pod["metadata"]
        suffix = f"-{attempt}" if attempt else ""
        host_config = self.api.create_host_config(
            network_mode=f"container:{sandbox}",
            ipc_mode=f"container:{sandbox}",
            binds=config["binds"],
            tmpfs=config["tmpfs"] or None,
            **config["limits"],
        )
        security = container.get("securityContext") or {}
        pod_security = pod["spec"].get("securityContext") or {}
        user = security.get("runAsUser", pod_security.get("runAsUser"))
        group = security.get("runAsGroup", pod_security.get("runAsGroup"))
        created = self.api.create_container(
            container["image"],
            command=config["args"],
            entrypoint=config["command"],
            environment=config["env"],
            working_dir=container.get("workingDir"),
            user=f"{user}:{group}" if user is not None and group is not None else user,
            host_config=host_config,
            detach=True,
            tty=False,
            stdin_open=False,
            labels=self.labels(
                job=job,
                pod=meta["name"],
                namespace=meta["namespace"],
                container=container["name"],
                attempt=str(attempt),
                **{"pod-uid": meta["uid"], "role": "container"},
            ),
            name=f"pk-{self.id}-{meta['name']}{suffix}"
            if container["name"] == "node"
            else f"pk-{self.id}-{meta['name']}-{container['name']}{suffix}",
        )
        self._check_open(created["Id"])
        return created["Id"]

    def start(self, container_id: str) -> str | None:
        """Start a created container; returns the runtime's error text on failure."""
        try:
            self.api.start(container_id)
        except APIError as exc:
            return str(exc.explanation or exc)
        return None

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """`docker inspect`, or None when gone."""
        try:
            return self.api.inspect_container(container_id)
        except NotFound:
            return None

    def stop(self, container_id: str, grace: int) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        with contextlib.suppress(NotFound, APIError):
            self.api.stop(container_id, timeout=max(0, grace))

    def kill(self, container_id: str) -> None:
        """SIGKILL."""
        with contextlib.suppress(NotFound, APIError):
            self.api.kill(container_id)

    def remove(self, container_id: str) -> None:
        """Force-remove a container."""
        with contextlib.suppress(NotFound, APIError):
            self.api.remove_container(container_id, force=True)

    def tail(self, container_id: str, lines: int) -> bytes:
        """The last lines of a container's output (for FallbackToLogsOnError)."""
        try:
            return self.api.logs(container_id, tail=lines)
        except (NotFound, APIError):
            return b""

    def cleanup(self) -> None:
        """Remove every container and network of this cluster, in parallel."""
        found = self.api.containers(all=True, filters={"label": f"{LABEL}={self.id}"})
        threads = [threading.Thread(target=self.remove, args=(c["Id"],)) for c in found]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        for net in self.api.networks(filters={"label": f"{LABEL}={self.id}"}):
            with contextlib.suppress(NotFound, APIError):
                self.api.remove_network(net["Id"])
        with self._lock:
            self._networks.clear()


def pod_dir(workdir: Path, uid: str) -> Path:
    """Per-pod host folder (termination logs, emptyDir volumes)."""
    path = workdir / "pods" / uid
    path.mkdir(parents=True, exist_ok=True)
    return path
