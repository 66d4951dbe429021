"""One harness per backend: how the conformance suite configures it and sees, from outside
the library, what a job has running or left behind. A new backend joins the suite with one
harness here and one entry in `HARNESSES`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import docker
import pytest
from realcluster import AGENT_LABEL

from prefect_kubeflow import (
    ContainerBackendConfig,
    KubernetesBackendConfig,
    LocalProcessBackendConfig,
)
from prefect_kubeflow.backends.container.engine import default_host
from prefect_kubeflow.backends.container.specs import JOB_LABEL
from prefect_kubeflow.backends.kubernetes.trainjob import INDEX_LABEL, JOBSET_LABEL
from prefect_kubeflow.blocks import TrainingBackendConfig

TEST_IMAGE = os.environ.get("PK_TEST_IMAGE", "localhost/prefect-kubeflow-test:debian12-torch1.13")


def engine_client(engine: str) -> docker.DockerClient:
    """A client of `engine` with the test image present. Without them the test skips (a
    machine with no engine); CI requires both engines (PK_REQUIRE_ENGINES=1): there it fails."""
    try:
        client = docker.DockerClient(base_url=default_host(engine), timeout=60)
        client.ping()
        client.images.get(TEST_IMAGE)
    except docker.errors.DockerException as exc:
        if os.environ.get("PK_REQUIRE_ENGINES"):
            raise
        pytest.skip(f"{engine} or its test image is not available here: {exc}")
    return client


def _cmdlines() -> dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return found


class LocalHarness:
    """Local processes: a job's processes all name its folder in their command line."""

    id = "local"
    stderr_is_warning = True  # a node's stderr lines reach Prefect at WARNING

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "shared").mkdir(exist_ok=True)

    def config(self, **overrides) -> TrainingBackendConfig:
        return LocalProcessBackendConfig(
            jobs_dir=str(self.root / "jobs"),
            venv_cache_dir=str(self.root / "venvs"),
            stop_grace_period_seconds=5,
            **overrides,
        )

    def shared(self) -> tuple[Path, str]:
        """A folder the test and the nodes both see: (host path, path in a node)."""
        return self.root / "shared", str(self.root / "shared")

    def running(self, name: str) -> list[str]:
        marker = str(self.root / "jobs" / name).encode()
        return [f"process {pid}" for pid, cmd in _cmdlines().items() if marker in cmd]

    def leftovers(self, name: str) -> list[str]:
        folder = self.root / "jobs" / name
        return self.running(name) + ([str(folder)] if folder.exists() else [])

    def kill_node(self, name: str, index: int) -> None:
        """SIGKILL the node's torchrun agent."""
        marker = str(self.root / "jobs" / name).encode()
        rank = f"--node_rank\0{index}\0".encode()
        [agent] = [
            pid
            for pid, cmd in _cmdlines().items()
            if marker in cmd
            and cmd.split(b"\0")[1:3] == [b"-m", b"torch.distributed.run"]
            and rank in cmd
        ]
        os.kill(agent, signal.SIGKILL)


class ContainerHarness:
    """Docker or Podman: a job's containers and network carry its label."""

    stderr_is_warning = True

    def __init__(self, engine: str, root: Path) -> None:
        self.id = engine
        self.engine = engine
        self.root = root
        (root / "shared").mkdir(exist_ok=True)
        self.api = engine_client(engine)

    def config(self, **overrides) -> TrainingBackendConfig:
        return ContainerBackendConfig(
            container_runtime=self.engine,
            image=TEST_IMAGE,
            pull_policy="Never",
            jobs_dir=str(self.root / "container-jobs"),
            stop_grace_period_seconds=5,
            volumes=[f"{self.root / 'shared'}:/shared"],
            **overrides,
        )

    def shared(self) -> tuple[Path, str]:
        return self.root / "shared", "/shared"

    def _containers(self, name: str):
        return self.api.containers.list(all=True, filters={"label": f"{JOB_LABEL}={name}"})

    def running(self, name: str) -> list[str]:
        ended = ("exited", "dead", "stopped")
        return [f"container {c.name}" for c in self._containers(name) if c.status not in ended]

    def leftovers(self, name: str) -> list[str]:
        networks = self.api.networks.list(filters={"label": f"{JOB_LABEL}={name}"})
        folder = self.root / "container-jobs" / name
        return (
            [f"container {c.name}" for c in self._containers(name)]
            + [f"network {n.name}" for n in networks]
            + ([str(folder)] if folder.exists() else [])
        )

    def kill_node(self, name: str, index: int) -> None:
        self.api.containers.get(f"{name}-node-{index}").kill()


class KubernetesHarness:
    """A cluster in miniature (`minicluster`): a loopback API server playing the Trainer
    operator, whose pods are Docker containers. What a job has is its TrainJob, its pods and
    their containers and network."""

    id = "kubernetes"
    # A pod log interleaves stdout and stderr (the API serves one stream): all lines are INFO.
    stderr_is_warning = False

    def __init__(self, root: Path) -> None:
        from minicluster import MiniCluster

        self.root = root
        (root / "shared").mkdir(exist_ok=True)
        engine_client("docker")
        # Its node advertises more CPUs than this machine has, as a cluster's node would: a
        # 2-node x 2-CPU job then schedules on a 2-core machine.
        self.cluster = MiniCluster(root / "cluster", image=TEST_IMAGE, node_cpus=16)
        self.cluster.start()
        self.cluster.install_crds()
        # Fail-fast, as the other backends: JobSet's defaults would restart a failed node's
        # container in place up to the Job's backoffLimit (6) before the job fails.
        self.cluster.install_default_runtime(
            host_shared_dir=root / "shared", backoff_limit=0, restart_policy="Never"
        )

    def config(self, **overrides) -> TrainingBackendConfig:
        return KubernetesBackendConfig(
            config_file=str(self.cluster.kubeconfig_path),
            delete_timeout_seconds=60,
            **overrides,
        )

    def shared(self) -> tuple[Path, str]:
        return self.root / "shared", "/shared"

    def running(self, name: str) -> list[str]:
        ended = ("exited", "dead")
        return [
            f"container {c.name}" for c in self.cluster.containers(name) if c.status not in ended
        ]

    def leftovers(self, name: str) -> list[str]:
        def of_job(obj: dict) -> bool:
            labels = obj["metadata"].get("labels") or {}
            return obj["metadata"]["name"] == name or labels.get(JOBSET_LABEL) == name

        return (
            [f"container {c.name}" for c in self.cluster.containers(name)]
            + [f"network {n.name}" for n in self.cluster.networks(name)]
            + [
                f"{resource} {obj['metadata']['name']}"
                for resource in ("trainjobs", "pods")
                for obj in self.cluster.objects(resource)
                if of_job(obj)
            ]
        )

    def kill_node(self, name: str, index: int) -> None:
        [pod] = [
            pod["metadata"]["name"]
            for pod in self.cluster.objects("pods")
            if pod["metadata"]["labels"].get(JOBSET_LABEL) == name
            and pod["metadata"]["labels"].get(INDEX_LABEL) == str(index)
        ]
        self.cluster.kill_pod_container(pod)

    def close(self) -> None:
        self.cluster.stop()


class RealClusterHarness:
    """The real test cluster (`realcluster`: kube-apiserver, Kubeflow Trainer, JobSet, our node
    agent running pods as Docker containers), one per session; a namespace per harness. What a
    job has is its TrainJob, its pods, and their containers and network. It runs the part of
    the conformance suite listed in `test_real_cluster.py`."""

    id = "kubernetes"
    # A pod log interleaves stdout and stderr (the API serves one stream): all lines are INFO.
    stderr_is_warning = False

    def __init__(self, root: Path) -> None:
        from realcluster import RealCluster

        engine_client("docker")
        self.root = root
        self.cluster = RealCluster.get()
        self.namespace = self.cluster.new_namespace()
        (self.cluster.shared / self.namespace).mkdir(mode=0o777)

    def config(self, **overrides) -> TrainingBackendConfig:
        return KubernetesBackendConfig(
            config_file=str(self.cluster.kubeconfig),
            namespace=self.namespace,
            delete_timeout_seconds=60,
            **overrides,
        )

    def shared(self) -> tuple[Path, str]:
        return self.cluster.shared / self.namespace, f"/shared/{self.namespace}"

    def running(self, name: str) -> list[str]:
        ended = ("exited", "dead", "created")
        return [
            f"container {c.name}"
            for c in self.cluster.containers(self.namespace, name)
            if c.status not in ended and c.labels.get(f"{AGENT_LABEL}.role") == "container"
        ]

    def leftovers(self, name: str) -> list[str]:
        def of_job(obj: dict) -> bool:
            labels = obj["metadata"].get("labels") or {}
            return obj["metadata"]["name"] == name or labels.get(JOBSET_LABEL) == name

        return (
            [f"container {c.name}" for c in self.cluster.containers(self.namespace, name)]
            + [f"network {n.name}" for n in self.cluster.networks(self.namespace, name)]
            + [
                f"{resource} {obj['metadata']['name']}"
                for resource in ("trainjobs", "pods")
                for obj in self.cluster.objects(resource, self.namespace)
                if of_job(obj)
            ]
        )

    def kill_node(self, name: str, index: int) -> None:
        """SIGKILL the node's running container, as a crash would."""
        [pod] = [
            pod["metadata"]["name"]
            for pod in self.cluster.objects("pods", self.namespace)
            if pod["metadata"]["labels"].get(JOBSET_LABEL) == name
            and pod["metadata"]["labels"].get(INDEX_LABEL) == str(index)
        ]
        [container] = [
            c
            for c in self.cluster.containers(self.namespace, name)
            if c.labels.get(f"{AGENT_LABEL}.pod") == pod
            and c.labels.get(f"{AGENT_LABEL}.role") == "container"
            and c.status == "running"
        ]
        container.kill()

    def close(self) -> None:
        self.cluster.core.delete_namespace(self.namespace)


HARNESSES = {
    "local": LocalHarness,
    "docker": lambda root: ContainerHarness("docker", root),
    "podman": lambda root: ContainerHarness("podman", root),
    "kubernetes": KubernetesHarness,
}
