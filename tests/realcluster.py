"""The real test cluster for the Kubernetes tests: `scripts/test-cluster.sh up` (kube-apiserver,
controller-manager, scheduler, Kubeflow Trainer, JobSet, and our node agent running pods as
Docker containers), started once per test session and stopped (`down`) when it ends. Each
harness gets a namespace of its own; the pods' containers carry the node agent's labels."""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import docker
import kubernetes

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test-cluster.sh"
AGENT_LABEL = "pk-node-agent"  # cluster/nodeagent/dockerops.py
GROUP, VERSION = "trainer.kubeflow.org", "v1alpha1"
RUNTIME = "torch-distributed"


class RealCluster:
    """One running test cluster: its kubeconfig, API clients, and a folder its pods share."""

    _lock = threading.Lock()
    _current: RealCluster | None = None

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pk-real-cluster-"))
        self.kubeconfig = self.root / "kubeconfig"
        self.shared = self.root / "shared"
        self.shared.mkdir()
        self.shared.chmod(0o777)
        self.env = {
            **os.environ,
            "PK_CLUSTER_STATE_DIR": str(self.root / "state"),
            "XDG_CACHE_HOME": os.environ.get("PK_USER_CACHE_HOME", str(Path.home() / ".cache")),
        }
        done = subprocess.run(
            ["bash", str(SCRIPT), "up", str(self.kubeconfig)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=3600,  # a first start builds the binaries (~15 min on 2 cores)
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the test cluster did not start:\n{done.stderr[-4000:]}")
        api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.docker = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=60)
        self.install_fail_fast_runtime()

    @classmethod
    def get(cls) -> RealCluster:
        """The session's cluster, started on first use."""
        with cls._lock:
            if cls._current is None:
                cls._current = cls()
                atexit.register(cls._current.stop)
            return cls._current

    def stop(self) -> None:
        """`scripts/test-cluster.sh down`: every process and container it started."""
        subprocess.run(
            ["bash", str(SCRIPT), "down"],
            env=self.env,
            capture_output=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def upstream_runtime(self, name: str = RUNTIME) -> dict[str, Any]:
        """A ClusterTrainingRuntime as the cluster was given it (images: the test image)."""
        found = self.custom.get_cluster_custom_object(
            GROUP, VERSION, "clustertrainingruntimes", name
        )
        return copy.deepcopy(found)

    def install_fail_fast_runtime(self) -> None:
        """`torch-distributed` made fail-fast, as the other backends are (the Job's backoffLimit
        0, restartPolicy Never: upstream's defaults retry a failed node in place 6 times), with
        the session's shared folder mounted at /shared."""
        runtime = self.upstream_runtime()
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            runtime["metadata"].pop(key, None)
        job = next(
            j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"
        )
        job["template"]["spec"]["backoffLimit"] = 0
        pod = job["template"]["spec"]["template"]["spec"]
        pod["restartPolicy"] = "Never"
        pod.setdefault("volumes", []).append(
            {"name": "shared", "hostPath": {"path": str(self.shared), "type": "Directory"}}
        )
        node = next(c for c in pod["containers"] if c["name"] == "node")
        node.setdefault("volumeMounts", []).append({"name": "shared", "mountPath": "/shared"})
        self.custom.delete_cluster_custom_object(GROUP, VERSION, "clustertrainingruntimes", RUNTIME)
        self.custom.create_cluster_custom_object(GROUP, VERSION, "clustertrainingruntimes", runtime)

    def new_namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def objects(self, resource: str, namespace: str) -> list[dict[str, Any]]:
        """The TrainJobs (`trainjobs`) or pods (`pods`) of a namespace, as plain JSON."""
        if resource == "pods":
            items = self.core.list_namespaced_pod(namespace).items
            return [self.core.api_client.sanitize_for_serialization(p) for p in items]
        found = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, resource)
        return list(found["items"])

    def containers(self, namespace: str, job: str) -> list[Any]:
        """The node agent's containers of a job's pods (sandboxes included)."""
        labels = [f"{AGENT_LABEL}.namespace={namespace}", f"{AGENT_LABEL}.job={job}"]
        return self.docker.containers.list(all=True, filters={"label": labels})

    def networks(self, namespace: str, job: str) -> list[Any]:
        labels = [f"{AGENT_LABEL}.namespace={namespace}", f"{AGENT_LABEL}.job={job}"]
        return self.docker.networks.list(filters={"label": labels})
