"""Container backend: each node is a container running torchrun, on a network of its own job.

A job is a network ``<job>-net`` and containers ``<job>-node-<i>``, labelled with the job, the
node and what `get_job` shows, so any process finds the same jobs through the engine. The
job's host folder (mounted at ``/pk-job``) carries the shipped function and each node's log,
which the node's keeper (``prefect_kubeflow.backends.node``, mounted read-only with the rest
of the package) writes in the same format as on the local backend: one log reader, one
forwarder. Node ``i`` has node rank ``i``; all nodes rendezvous on node 0 by its name.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from docker.errors import DockerException, ImageNotFound
from docker.models.containers import Container
from docker.models.images import Image
from docker.types import DeviceRequest
from platformdirs import user_data_dir

import prefect_kubeflow
from prefect_kubeflow import __version__, constants
from prefect_kubeflow.backends.base import JobSpec, SupervisorCommand
from prefect_kubeflow.backends.container.engine import (
    Engine,
    connect,
    engine_errors,
    is_not_found,
)
from prefect_kubeflow.backends.jobfiles import (
    OWNER_FILE,
    flow_run_id,
    lost_flow_run_id,
    node_exit_file,
    node_failure,
    node_log,
    start_owner,
    stop_supervisor,
    write_flow_run,
    write_function,
)
from prefect_kubeflow.backends.logfile import LogLine, read_node_log
from prefect_kubeflow.backends.torchrun import (
    pip_install_command,
    resolve_nproc_per_node,
    torchrun_argv,
)
from prefect_kubeflow.errors import (
    BackendError,
    ImageUnavailableError,
    JobNotFoundError,
    NameConflictError,
)
from prefect_kubeflow.types import (
    Runtime,
    RuntimeTrainer,
    Step,
    TrainerType,
    TrainJob,
    gpu_count,
    memory_bytes,
    quantity,
)

# Labels: Kubeflow's names where Kubeflow has one.
JOB_LABEL = "trainer.kubeflow.org/trainjob-name"
STEP_LABEL = "trainer.kubeflow.org/step"
RUNTIME_LABEL = "trainer.kubeflow.org/runtime-name"
PREFIX = "prefect-kubeflow.io/"
BACKEND_LABEL = PREFIX + "backend-version"
NODE_LABEL = PREFIX + "node-index"
SPEC_LABEL = PREFIX + "job"  # JSON: what get_job shows that the engine does not know
JOB_DIR_LABEL = PREFIX + "job-dir"  # the job's host folder, whichever jobs_dir made it

JOB_MOUNT = PurePosixPath("/pk-job")
NODES_DIR = "nodes"
PACKAGE_MOUNT = PurePosixPath("/opt/prefect-kubeflow")
PYTHON = "python3"
MASTER_PORT = 29500
# A node whose container has exited gets this long for its keeper's exit file to appear.
EXIT_FILE_GRACE_SECONDS = 5.0
_STATE_POLL_SECONDS = 2.0


class ContainerBackend:
    """Runs each node as a container; the engine's labels are the job records."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.jobs_dir = (
            Path(
                settings.get("jobs_dir")
                or Path(user_data_dir(constants.APP_NAME)) / "container-jobs"
            )
            .expanduser()
            .absolute()
        )
        self.grace_period = float(settings.get("stop_grace_period_seconds", 10.0))
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ContainerBackend:
        """Build from `ContainerBackendConfig`'s fields; the engine is reached on first use."""
        return cls(settings)

    @property
    def engine(self) -> Engine:
        """The engine, connected once."""
        with self._lock:
            if self._engine is None:
                self._engine = connect(
                    self.settings.get("container_runtime"), self.settings.get("container_host")
                )
            return self._engine

    # -- creating ----------------------------------------------------------------------------

    def create_job(self, spec: JobSpec, supervisor: SupervisorCommand | None) -> None:
        """Create and start the job's network and containers, then its supervisor.

        Nothing is left behind when this raises.
        """
        engine = self.engine
        image = self.settings.get("image") or spec.runtime.trainer.image
        image_env = self._ensure_image(engine, image)
        nproc, device = resolve_nproc_per_node(spec.num_proc_per_node, spec.resources_per_node, 0)
        job_dir = self.jobs_dir / spec.name
        record = {
            "created": datetime.now(timezone.utc).isoformat(),
            "num_nodes": spec.num_nodes,
            "nproc_per_node": nproc,
            "device": device,
            "framework": spec.runtime.trainer.framework,
            "image": image,
            "runtime_origin": spec.runtime.origin,
        }
        labels = {
            JOB_LABEL: spec.name,
            RUNTIME_LABEL: spec.runtime.name,
            BACKEND_LABEL: __version__,
            SPEC_LABEL: json.dumps(record),
            JOB_DIR_LABEL: str(job_dir),
        }
        # pip's index URLs (maybe with credentials) go in the environment, not the command.
        pip_argv, pip_env = _pip_install(spec)
        setup = [json.dumps(pip_argv)] if pip_argv else []
        env = {**self.settings.get("env", {}), **spec.env, **pip_env}
        python_path = [str(PACKAGE_MOUNT), env.get("PYTHONPATH") or image_env.get("PYTHONPATH")]
        env.update(
            PYTHONPATH=":".join(p for p in python_path if p),
            PYTHONUNBUFFERED="1",
            # pip installs packages_to_install into the image's Python: the container is
            # thrown away after the job (Debian-based images mark theirs as externally managed).
            PIP_BREAK_SYSTEM_PACKAGES="1",
            PIP_ROOT_USER_ACTION="ignore",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        job_id = uuid.uuid4().hex
        try:
            _nodes_dir(job_dir).mkdir(parents=True)
            write_function(_nodes_dir(job_dir), spec)
            with engine_errors(f"creating network {spec.name}-net"):
                engine.client.networks.create(
                    f"{spec.name}-net",
                    check_duplicate=True,  # Docker allows two networks of one name otherwise
                    driver=self.settings.get("network_driver") or "bridge",
                    labels=labels,
                )

            def create_and_start(index: int) -> None:
                options = self._host_config(spec.resources_per_node, engine.name, index)
                self._start(
                    self._create_node(
                        engine, spec, index, image, nproc, job_id, setup, labels, env, options
                    )
                )

            # Each node in its own thread: the engine's round trips overlap.
            with ThreadPoolExecutor(max_workers=spec.num_nodes) as pool:
                for future in [pool.submit(create_and_start, i) for i in range(spec.num_nodes)]:
                    future.result()
            # Niced at once: the nodes are starting and need the CPU more than its imports do.
            start_owner(job_dir, supervisor, lower_priority=True)
        except FileExistsError:
            raise NameConflictError(f"a job folder {job_dir} already exists") from None
        except BaseException:
            # Clean up without hiding why creating failed.
            with contextlib.suppress(Exception):
                self._remove(spec.name, job_dir)
            shutil.rmtree(job_dir, ignore_errors=True)
            raise

    def _ensure_image(self, engine: Engine, image: str) -> dict[str, str]:
        """Make `image` present as `pull_policy` says, before anything is created; return the
        image's environment."""
        if not image:
            raise ImageUnavailableError(
                "no image: the runtime names none; set ContainerBackendConfig.image"
            )
        policy = self.settings.get("pull_policy") or "IfNotPresent"
        found: Image | None = None
        with engine_errors(f"inspecting image {image}"), contextlib.suppress(ImageNotFound):
            found = engine.client.images.get(image)
        if found is not None and policy != "Always":
            return _image_env(found)
        if policy == "Never":
            raise ImageUnavailableError(
                f"image {image!r} is not present in {engine.name} and pull_policy is Never; "
                f"build or load it (`{engine.name} build`/`{engine.name} load`), "
                "or allow pulling with pull_policy IfNotPresent"
            )
        auth = None
        if self.settings.get("registry_username"):
            password = self.settings.get("registry_password")
            secret = getattr(password, "get_secret_value", lambda: password)()
            auth = {"username": self.settings["registry_username"], "password": secret}
        try:
            pulled = engine.client.images.pull(image, auth_config=auth)
        except (DockerException, requests.RequestException) as exc:
            reason = getattr(exc, "explanation", None) or str(exc)
            raise ImageUnavailableError(
                f"image {image!r} could not be pulled ({reason}); check the name and the "
                f"registry's credentials, or build or load it into {engine.name} "
                "(e.g. scripts/build-test-image.sh) and set pull_policy IfNotPresent"
            ) from None
        return _image_env(pulled if isinstance(pulled, Image) else pulled[0])

    def _host_config(
        self, resources: Mapping[str, Any], engine: str, node_index: int
    ) -> dict[str, Any]:
        """Container options from resources_per_node and the block's shm size. Node `i`
        asking for `g` GPUs gets GPUs `i*g` to `i*g+g-1`: nodes never share one."""
        options: dict[str, Any] = {}
        if constants.CPU_LABEL in resources:
            options["nano_cpus"] = int(quantity(resources[constants.CPU_LABEL]) * 1e9)
        if constants.MEMORY_LABEL in resources:
            options["mem_limit"] = memory_bytes(resources[constants.MEMORY_LABEL])
        gpus = gpu_count(resources)
        ids = [str(i) for i in range(node_index * gpus, (node_index + 1) * gpus)]
        if gpus and engine == "docker":
            options["device_requests"] = [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
        elif gpus:  # Podman (5.4+): CDI device names
            cdi = [f"nvidia.com/gpu={i}" for i in ids]
            options["device_requests"] = [DeviceRequest(driver="cdi", device_ids=cdi)]
        if self.settings.get("shm_size"):
            options["shm_size"] = self.settings["shm_size"]
        return options

    def _create_node(
        self,
        engine: Engine,
        spec: JobSpec,
        index: int,
        image: str,
        nproc: int,
        job_id: str,
        setup: list[str],
        labels: dict[str, str],
        env: dict[str, str],
        host_config: dict[str, Any],
    ) -> Container:
        name = _node_name(spec.name, index)
        package = Path(prefect_kubeflow.__file__).parent
        entrypoint = PACKAGE_MOUNT / "prefect_kubeflow" / "backends" / "entrypoint.py"
        # The keeper is the container's PID 1: it handles SIGTERM (stop) itself, so no init
        # binary is needed (Podman's would have to be installed).
        command = [
            PYTHON,
            "-m",
            "prefect_kubeflow.backends.node",
            str(JOB_MOUNT / node_log(Path(), index)),
            str(JOB_MOUNT / node_exit_file(Path(), index)),
            job_id,
            *setup,
            "--",
            *torchrun_argv(
                PYTHON,
                spec.num_nodes,
                index,
                nproc,
                _node_name(spec.name, 0),
                MASTER_PORT,
                Path(entrypoint),
                Path(JOB_MOUNT),
                int(self.settings.get("rendezvous_timeout_seconds") or 0) or None,
            ),
        ]
        volumes = {
            # Only the nodes' folder: the job's own records (owner, flow run) stay out of reach.
            str(_nodes_dir(Path(labels[JOB_DIR_LABEL]))): {"bind": str(JOB_MOUNT), "mode": "rw"},
            str(package): {"bind": str(PACKAGE_MOUNT / "prefect_kubeflow"), "mode": "ro"},
        }
        binds = [f"{host}:{v['bind']}:{v['mode']}" for host, v in volumes.items()]
        binds += list(self.settings.get("volumes") or [])
        with engine_errors(f"creating container {name}"):
            return engine.client.containers.create(
                image,
                command=command,
                name=name,
                hostname=name,
                labels={**labels, STEP_LABEL: f"{constants.NODE}-{index}", NODE_LABEL: str(index)},
                environment=env,
                volumes=binds,
                network=f"{spec.name}-net",
                working_dir=str(JOB_MOUNT),
                stop_signal="SIGTERM",  # what the keeper handles, whatever the image says
                **host_config,
            )

    def _start(self, container: Container) -> None:
        try:
            with engine_errors(f"starting container {container.name}"):
                container.start()
        except BackendError as exc:
            if PYTHON in str(exc) and "not found" in str(exc):
                raise BackendError(
                    f"{exc}; the image must provide {PYTHON} (3.10 or newer) and torch"
                ) from None
            raise

    def start_job(self, name: str) -> None:
        """Nothing to do: `create_job` has started every node (or removed the job)."""

    # -- watching ----------------------------------------------------------------------------

    def wait_node(self, name: str, node_index: int) -> int:
        """Wait for the node's container to exit and its log to be complete; its exit code."""
        container = _node_name(name, node_index)
        exit_file = node_exit_file(_nodes_dir(self._job_dir(name)), node_index)
        while True:
            try:
                code = int(self.engine.client.api.wait(container)["StatusCode"])
                break
            except (DockerException, requests.RequestException) as exc:
                if is_not_found(exc):
                    return 1  # removed under us: the job is being deleted
                time.sleep(2)  # the engine is restarting or busy: the node may still run
        deadline = time.monotonic() + EXIT_FILE_GRACE_SECONDS
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the keeper writes it after the log is complete
        return code

    def stop_job(self, name: str) -> None:
        """Stop every running container of the job now (SIGTERM, then SIGKILL after grace)."""
        running = [n for n in self._nodes(name) if n.state in ("running", "created")]
        with ThreadPoolExecutor(max_workers=max(len(running), 1)) as pool:
            list(pool.map(self._stop, running))

    def _stop(self, node: _Node) -> None:
        with engine_errors(f"stopping {node.name}"):
            try:
                self.engine.client.api.stop(node.id, timeout=int(self.grace_period))
            except DockerException as exc:
                if not is_not_found(exc):
                    raise

    # -- flow runs ---------------------------------------------------------------------------

    def set_flow_run(self, name: str, flow_run_id: str, closed: bool = False) -> None:
        """Remember the flow run that runs the job; `closed` once its run is over."""
        write_flow_run(self._job_dir(name), flow_run_id, closed)

    def flow_run_id(self, name: str) -> str | None:
        """The flow run that runs the job, once it started."""
        return flow_run_id(self._job_dir(name))

    def lost_flow_run_id(self, name: str) -> str | None:
        """The flow run of a job whose supervising process died before closing it."""
        return lost_flow_run_id(self._job_dir(name))

    # -- reading -----------------------------------------------------------------------------

    def _nodes(self, name: str | None = None) -> list[_Node]:
        """The node containers of job `name` (of every job without), from one list call;
        only exited ones are inspected (for their exit code). Light on purpose: a full
        inspect of every container, polled while nodes start, slows the engine's starts."""
        labels = [BACKEND_LABEL] + ([f"{JOB_LABEL}={name}"] if name else [])
        api = self.engine.client.api
        with engine_errors("listing containers"):
            rows = api.containers(all=True, filters={"label": labels})
        nodes = []
        for row in rows:
            state = str(row.get("State") or "")
            exit_code, finished, oom = None, "", False
            if state in ("exited", "dead"):
                with engine_errors(f"inspecting container {row['Id'][:12]}"):
                    try:
                        details = api.inspect_container(row["Id"])["State"]
                    except DockerException as exc:
                        if is_not_found(exc):
                            continue  # removed while we listed
                        raise
                exit_code, finished = int(details["ExitCode"]), str(details["FinishedAt"])
                oom = bool(details.get("OOMKilled"))
            nodes.append(
                _Node(
                    id=row["Id"],
                    name=str((row.get("Names") or [""])[0]).lstrip("/"),
                    labels=dict(row.get("Labels") or {}),
                    state=state,
                    exit_code=exit_code,
                    finished_at=finished,
                    oom_killed=oom,
                )
            )
        return nodes

    def _job_dir(self, name: str, nodes: list[_Node] | None = None) -> Path:
        """The job's host folder, as its containers' label names it."""
        for node in self._nodes(name) if nodes is None else nodes:
            return Path(node.labels[JOB_DIR_LABEL])
        raise JobNotFoundError(name, self._names())

    def _names(self) -> list[str]:
        try:
            return sorted({node.labels[JOB_LABEL] for node in self._nodes()})
        except BackendError:
            return []

    def get_job(self, name: str) -> TrainJob:
        """The job as its containers show it now."""
        nodes = self._nodes(name)
        if not nodes:
            raise JobNotFoundError(name, self._names())
        return self._to_trainjob(name, nodes)

    def list_jobs(self) -> list[TrainJob]:
        """Every job on the engine, oldest first."""
        by_job: dict[str, list[_Node]] = {}
        for node in self._nodes():
            by_job.setdefault(node.labels[JOB_LABEL], []).append(node)
        jobs = [self._to_trainjob(name, nodes) for name, nodes in by_job.items()]
        return sorted(jobs, key=lambda job: job.creation_timestamp)

    def _to_trainjob(self, name: str, nodes: list[_Node]) -> TrainJob:
        labels = nodes[0].labels
        record = json.loads(labels[SPEC_LABEL])
        by_index = {int(node.labels[NODE_LABEL]): node for node in nodes}
        job_dir = self._job_dir(name, nodes)
        # Nodes are created in parallel; until the owner is recorded, a missing one is coming.
        created = (job_dir / OWNER_FILE).exists()
        steps, failed = [], []
        for index in range(record["num_nodes"]):
            node = by_index.get(index)
            if node is None and not created:
                status = constants.STEP_PENDING
            elif node is None:
                status = constants.STEP_FAILED
                failed.append((index, "", 1))
            elif node.exit_code is not None:
                status = constants.STEP_SUCCEEDED if node.exit_code == 0 else constants.STEP_FAILED
                if node.exit_code != 0:
                    failed.append((index, node.finished_at, node.exit_code))
            elif node.state == "created":
                status = constants.STEP_PENDING
            else:
                status = constants.STEP_RUNNING
            steps.append(
                Step(
                    name=f"{constants.NODE}-{index}",
                    status=status,
                    pod_name=_node_name(name, index),
                    device=record["device"],
                    device_count=str(record["nproc_per_node"]),
                )
            )
        statuses = {step.status for step in steps}
        message = None
        if failed:
            job_status = constants.TRAINJOB_FAILED
            index, _, code = min(failed, key=lambda f: _sortable_time(f[1]))
            failed_node = by_index.get(index)
            if failed_node is None:
                message = f"{constants.NODE}-{index}: its container is gone"
            else:
                message = self._failure(failed_node, job_dir, index, code, record["nproc_per_node"])
        elif statuses == {constants.STEP_SUCCEEDED}:
            job_status = constants.TRAINJOB_COMPLETE
        elif constants.STEP_RUNNING in statuses:
            job_status = constants.TRAINJOB_RUNNING
        else:
            job_status = constants.TRAINJOB_CREATED
        trainer = RuntimeTrainer(
            trainer_type=TrainerType.CUSTOM_TRAINER,
            framework=record["framework"],
            image=record["image"],
            num_nodes=record["num_nodes"],
            device=record["device"],
            device_count=str(record["nproc_per_node"]),
        )
        return TrainJob(
            name=name,
            runtime=Runtime(
                name=labels[RUNTIME_LABEL], trainer=trainer, origin=record["runtime_origin"]
            ),
            steps=steps,
            num_nodes=record["num_nodes"],
            creation_timestamp=datetime.fromisoformat(record["created"]),
            status=job_status,
            message=message,
        )

    def _failure(self, node: _Node, job_dir: Path, index: int, code: int, nproc: int) -> str:
        """Why a node failed; a signal death (exit 128+n) named as such."""
        if code > 128 and code - 128 in {s.value for s in signal.Signals}:
            code = -(code - 128)
        nodes_dir = _nodes_dir(job_dir)
        message = node_failure(nodes_dir, index, code, nproc)
        if node.oom_killed:
            message += " (out of memory: raise resources_per_node['memory'])"
        if not node_log(nodes_dir, index).exists():
            # The keeper never ran (an image without a usable python3): the engine's log says.
            with contextlib.suppress(DockerException, requests.RequestException):
                tail = self.engine.client.api.logs(node.id, tail=20).decode(errors="replace")
                message += "\n" + tail.rstrip()
        return message

    def node_logs(
        self, name: str, node_index: int, follow: bool, tail_lines: int | None
    ) -> Iterator[LogLine]:
        """One node's lines from its log file; with `follow`, until its container has ended."""
        nodes_dir = _nodes_dir(self._job_dir(name))
        ended = self._ended(name, node_index, nodes_dir)
        return read_node_log(node_log(nodes_dir, node_index), follow, ended, tail_lines)

    def _ended(self, name: str, node_index: int, nodes_dir: Path) -> Callable[[], bool]:
        """Whether the node has ended: its exit file (the keeper's), else, for a container
        killed before its keeper could write it, the engine, asked every few seconds."""
        exit_file = node_exit_file(nodes_dir, node_index)
        asked = [time.monotonic()]

        def ended() -> bool:
            if exit_file.exists():
                return True
            if time.monotonic() - asked[0] < _STATE_POLL_SECONDS:
                return False
            asked[0] = time.monotonic()
            try:
                state = self.engine.client.api.inspect_container(_node_name(name, node_index))
            except (DockerException, requests.RequestException) as exc:
                return is_not_found(exc)  # gone; or the engine is busy: ask again later
            return str(state["State"]["Status"]) in ("exited", "dead")

        return ended

    # -- deleting ----------------------------------------------------------------------------

    def delete_job(self, name: str) -> None:
        """Stop the supervisor and the containers; remove containers, network and folder."""
        nodes = self._nodes(name)
        if not nodes:
            raise JobNotFoundError(name, self._names())
        job_dir = self._job_dir(name, nodes)
        running = any(node.state in ("running", "created") for node in nodes)
        stop_supervisor(job_dir, running, self.grace_period, lambda: self.stop_job(name))
        self._remove(name, job_dir)

    def _remove(self, name: str, job_dir: Path) -> None:
        """Remove every container, the network and the folder of the job; whatever exists."""
        api = self.engine.client.api
        label = {"label": [f"{JOB_LABEL}={name}", BACKEND_LABEL]}
        with engine_errors(f"listing what is left of {name}"):
            containers = api.containers(all=True, filters=label)
            networks = api.networks(filters=label)
        for container in containers:
            try:
                api.remove_container(container["Id"], force=True)
            except DockerException as exc:
                if not is_not_found(exc):
                    raise BackendError(f"removing a container of {name}: {exc}") from None
        for network in networks:
            try:
                api.remove_network(network["Id"])
            except DockerException as exc:
                if not is_not_found(exc):
                    raise BackendError(f"removing network {network['Name']}: {exc}") from None
        shutil.rmtree(job_dir, ignore_errors=True)


@dataclass(frozen=True)
class _Node:
    """A node's container as the engine lists it; the exit code once it has exited."""

    id: str
    name: str
    labels: dict[str, str]
    state: str
    exit_code: int | None
    finished_at: str
    oom_killed: bool = False


def _pip_install(spec: JobSpec) -> tuple[list[str], dict[str, str]]:
    """The pip command and environment installing the job's packages_to_install."""
    if not spec.packages_to_install:
        return [], {}
    index_urls = spec.pip_index_urls or list(constants.DEFAULT_PIP_INDEX_URLS)
    return pip_install_command(PYTHON, spec.packages_to_install, index_urls)


def _node_name(job: str, node_index: int) -> str:
    return f"{job}-{constants.NODE}-{node_index}"


def _image_env(image: Image) -> dict[str, str]:
    """The environment an image sets (``Config.Env``)."""
    pairs = (image.attrs.get("Config") or {}).get("Env") or []
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def _sortable_time(timestamp: str) -> str:
    """An engine's RFC 3339 time with its fraction padded to nanoseconds: Docker trims the
    fraction's trailing zeros, so plain strings would not sort in time order."""
    head, dot, rest = timestamp.partition(".")
    if not dot:
        return timestamp
    digits = rest.rstrip("Z")
    return f"{head}.{digits.ljust(9, '0')}Z"


def _nodes_dir(job_dir: Path) -> Path:
    """The part of the job's folder its containers see (the function, node logs and exits)."""
    return job_dir / NODES_DIR
