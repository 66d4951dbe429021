"""One harness per backend: how the conformance suite configures it and sees, from outside
the library, what a job has running or left behind. A new backend joins the suite with one
harness here and one entry in `HARNESSES`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import docker
import pytest

from prefect_kubeflow import ContainerBackendConfig, LocalProcessBackendConfig
from prefect_kubeflow.backends.container.engine import default_host
from prefect_kubeflow.backends.container.specs import JOB_LABEL
from prefect_kubeflow.blocks import TrainingBackendConfig

TEST_IMAGE = os.environ.get("PK_TEST_IMAGE", "localhost/prefect-kubeflow-test:torch-2.13.0")


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


HARNESSES = {
    "local": LocalHarness,
    "docker": lambda root: ContainerHarness("docker", root),
    "podman": lambda root: ContainerHarness("podman", root),
}
