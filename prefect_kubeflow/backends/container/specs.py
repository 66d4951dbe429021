"""What a container job is made of, built without touching an engine: the settings, the
labels, and one `NodeSpec` per node (command, environment, mounts, resources).

Pure functions only, so every container a job would get can be checked in a test with no
Docker or Podman running; `backend.py` executes the plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cloudpickle
from platformdirs import user_data_dir

import prefect_kubeflow
from prefect_kubeflow import constants
from prefect_kubeflow._version import __version__
from prefect_kubeflow.backends.base import JobRecord, JobSpec
from prefect_kubeflow.backends.entrypoint import RESTART_COUNT_ENV
from prefect_kubeflow.backends.jobfiles import node_exit_file, node_log
from prefect_kubeflow.backends.torchrun import pip_install_command, torchrun_argv
from prefect_kubeflow.errors import InvalidInputError
from prefect_kubeflow.resources import gpu_count, memory_bytes, quantity

# Labels: Kubeflow's names where Kubeflow has one.
JOB_LABEL = constants.TRAINJOB_NAME_LABEL
STEP_LABEL = "trainer.kubeflow.org/step"
RUNTIME_LABEL = "trainer.kubeflow.org/runtime-name"
PREFIX = constants.LABEL_PREFIX
BACKEND_LABEL = constants.BACKEND_VERSION_LABEL
NODE_LABEL = PREFIX + "node-index"
RECORD_LABEL = constants.JOB_RECORD_KEY
JOB_DIR_LABEL = PREFIX + "job-dir"  # the job's host folder, whichever jobs_dir made it
ATTEMPT_LABEL = PREFIX + "attempt"  # which attempt of the gang a node container belongs to

JOB_MOUNT = PurePosixPath("/pk-job")
NODES_DIR = "nodes"
PACKAGE_MOUNT = PurePosixPath("/opt/prefect-kubeflow")
PYTHON = "python3"
MASTER_PORT = 29500
ENGINES = ("docker", "podman")


@dataclass(frozen=True)
class ContainerSettings:
    """How the container backend runs; `registry_password` is unwrapped only here, at the call."""

    container_runtime: Literal["docker", "podman"] | None = None
    container_host: str | None = None
    image: str | None = None
    pull_policy: str = "IfNotPresent"
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    volumes: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    network_driver: str = "bridge"
    shm_size: str | None = None
    jobs_dir: Path = field(
        default_factory=lambda: Path(user_data_dir(constants.APP_NAME)) / "container-jobs"
    )
    grace_period: float = 10.0
    rendezvous_timeout: int = 120


@dataclass(frozen=True)
class NodeSpec:
    """One node's container, as the engine will be asked to create it."""

    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    binds: list[str]
    network: str
    working_dir: str
    nano_cpus: int | None = None
    mem_limit: int | None = None
    gpu_ids: list[str] = field(default_factory=list)
    gpu_driver: str | None = None  # "nvidia" (Docker) or "cdi" (Podman)
    shm_size: str | None = None


def node_name(job: str, node_index: int) -> str:
    """The container (and host) name of a node; node 0's is the rendezvous address."""
    return f"{job}-{constants.NODE}-{node_index}"


def network_name(job: str) -> str:
    """The job's own network."""
    return f"{job}-net"


def nodes_dir(job_dir: Path) -> Path:
    """The part of the job's folder its containers see (the function, node logs and exits)."""
    return job_dir / NODES_DIR


def job_labels(record: JobRecord, job_dir: Path) -> dict[str, str]:
    """The labels of the job's network and of every node: the user's (a `Labels` option), and
    ours, which hold the job's record."""
    return {
        **record.labels,
        JOB_LABEL: record.name,
        RUNTIME_LABEL: record.runtime_name,
        BACKEND_LABEL: __version__,
        RECORD_LABEL: record.to_json(),
        JOB_DIR_LABEL: str(job_dir),
    }


def node_env(
    spec: JobSpec, settings: ContainerSettings, image_env: Mapping[str, str]
) -> dict[str, str]:
    """Every node's environment: the block's, the trainer's, pip's index settings (they may
    carry credentials: never in the command line) and what the keeper needs."""
    _, pip_env = _pip_install(spec)
    env = {**settings.env, **spec.env, **pip_env}
    python_path = [str(PACKAGE_MOUNT), env.get("PYTHONPATH") or image_env.get("PYTHONPATH")]
    env.update(
        PYTHONPATH=":".join(p for p in python_path if p),
        PYTHONUNBUFFERED="1",
        # pip installs packages_to_install into the image's Python: the container is thrown
        # away after the job (Debian-based images mark theirs as externally managed).
        PIP_BREAK_SYSTEM_PACKAGES="1",
        PIP_ROOT_USER_ACTION="ignore",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def rendezvous_env(spec: JobSpec, index: int, nproc: int) -> dict[str, str]:
    """What a `CustomTrainerContainer`'s own ``torchrun`` reads to find its peers, as the
    Trainer's torch plugin sets it on a cluster."""
    return {
        "PET_NNODES": str(spec.num_nodes),
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_NODE_RANK": str(index),
        "PET_MASTER_ADDR": node_name(spec.name, 0),
        "PET_MASTER_PORT": str(MASTER_PORT),
    }


def node_command(
    spec: JobSpec,
    settings: ContainerSettings,
    index: int,
    nproc: int,
    image_command: list[str],
) -> list[str]:
    """The keeper (the container's PID 1: it handles SIGTERM itself, so no init binary is
    needed) running pip if there are packages, then torchrun with node rank `index`; for a
    `CustomTrainerContainer`, the image's own command."""
    keeper = [
        PYTHON,
        "-m",
        "prefect_kubeflow.backends.node",
        str(JOB_MOUNT / node_log(Path(), index)),
        str(JOB_MOUNT / node_exit_file(Path(), index)),
        spec.name,
    ]
    if spec.custom_image:
        if not image_command:
            raise InvalidInputError(
                f"image {spec.image!r} has no command (Entrypoint or Cmd) for a "
                "CustomTrainerContainer to run; give it one, such as "
                'CMD ["torchrun", "/app/train.py"]'
            )
        return [*keeper, "--", *image_command]
    pip_argv, _ = _pip_install(spec)
    entrypoint = PACKAGE_MOUNT / "prefect_kubeflow" / "backends" / "entrypoint.py"
    return [
        *keeper,
        *([json.dumps(pip_argv)] if pip_argv else []),
        "--",
        *torchrun_argv(
            PYTHON,
            spec.num_nodes,
            index,
            nproc,
            node_name(spec.name, 0),
            MASTER_PORT,
            Path(entrypoint),
            Path(JOB_MOUNT),
            settings.rendezvous_timeout or None,
        ),
    ]


def node_binds(job_dir: Path, settings: ContainerSettings) -> list[str]:
    """What every node mounts: the nodes' folder, this package and its cloudpickle, and the
    block's volumes."""
    package = Path(prefect_kubeflow.__file__).parent
    return [
        # Only the nodes' folder: the job's own records stay out of the containers' reach.
        f"{nodes_dir(job_dir)}:{JOB_MOUNT}:rw",
        f"{package}:{PACKAGE_MOUNT / 'prefect_kubeflow'}:ro",
        # The host's cloudpickle pickles rank 0's result: the same version reads it back.
        f"{Path(cloudpickle.__file__).parent}:{PACKAGE_MOUNT / 'cloudpickle'}:ro",
        *settings.volumes,
    ]


def build_node_specs(
    spec: JobSpec,
    record: JobRecord,
    settings: ContainerSettings,
    engine: str,
    job_dir: Path,
    image_env: Mapping[str, str],
    image_command: list[str],
) -> list[NodeSpec]:
    """One container per node of the job, on `engine` ("docker" or "podman"): the first
    attempt's (`restarted` makes a later one's)."""
    labels = job_labels(record, job_dir)
    env = node_env(spec, settings, image_env)
    binds = node_binds(job_dir, settings)
    resources = spec.resources_per_node
    gpus = gpu_count(resources)
    specs = []
    for index in range(spec.num_nodes):
        name = node_name(spec.name, index)
        # Node i asking for g GPUs gets GPUs i*g to i*g+g-1: nodes never share one.
        ids = [str(i) for i in range(index * gpus, (index + 1) * gpus)]
        nproc = record.nproc_per_node
        specs.append(
            NodeSpec(
                name=name,
                image=record.image,
                command=node_command(spec, settings, index, nproc, image_command),
                env={
                    **env,
                    **(rendezvous_env(spec, index, nproc) if spec.custom_image else {}),
                    RESTART_COUNT_ENV: "0",
                },
                labels={
                    **labels,
                    STEP_LABEL: f"{constants.NODE}-{index}",
                    NODE_LABEL: str(index),
                    ATTEMPT_LABEL: "0",
                },
                binds=binds,
                network=network_name(spec.name),
                working_dir=str(JOB_MOUNT),
                nano_cpus=_nano_cpus(resources),
                mem_limit=(
                    memory_bytes(resources[constants.MEMORY_LABEL])
                    if constants.MEMORY_LABEL in resources
                    else None
                ),
                gpu_ids=ids if engine == "docker" else [f"nvidia.com/gpu={i}" for i in ids],
                gpu_driver=("nvidia" if engine == "docker" else "cdi") if gpus else None,
                shm_size=settings.shm_size,
            )
        )
    return specs


def restarted(node: NodeSpec, attempt: int) -> NodeSpec:
    """`node` as attempt `attempt` of its gang runs it."""
    return replace(
        node,
        env={**node.env, RESTART_COUNT_ENV: str(attempt)},
        labels={**node.labels, ATTEMPT_LABEL: str(attempt)},
    )


def _nano_cpus(resources: Mapping[str, Any]) -> int | None:
    if constants.CPU_LABEL not in resources:
        return None
    return int(quantity(resources[constants.CPU_LABEL]) * 1e9)


def _pip_install(spec: JobSpec) -> tuple[list[str], dict[str, str]]:
    """The pip command and environment installing the job's packages_to_install."""
    if not spec.packages_to_install:
        return [], {}
    index_urls = spec.pip_index_urls or list(constants.DEFAULT_PIP_INDEX_URLS)
    return pip_install_command(PYTHON, spec.packages_to_install, index_urls)
