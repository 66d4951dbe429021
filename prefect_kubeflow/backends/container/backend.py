"""Container backend: each node is a container running torchrun, on a network of its own job.

A job is a network ``<job>-net`` and containers ``<job>-node-<i>`` built by `specs.py`, whose
labels hold the job's record, so any process finds the same jobs through the engine. The job's
host folder (its ``nodes/`` part mounted at ``/pk-job``) carries the shipped function and each
node's log, which the node's keeper writes in the local backend's format: one log reader, one
forwarder. Docker and Podman are both driven through the Docker API (`engine.py`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests
from docker.errors import DockerException

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend, JobRecord, JobSpec, NodeState, to_trainjob
from prefect_kubeflow.backends.container.engine import (
    Engine,
    connect,
    engine_errors,
    ensure_image,
    is_not_found,
    run_node,
)
from prefect_kubeflow.backends.container.specs import (
    BACKEND_LABEL,
    JOB_DIR_LABEL,
    JOB_LABEL,
    NODE_LABEL,
    RECORD_LABEL,
    ContainerSettings,
    build_node_specs,
    job_labels,
    network_name,
    node_name,
    nodes_dir,
)
from prefect_kubeflow.backends.jobfiles import (
    node_exit_file,
    node_failure,
    node_log,
    read_result,
    write_function,
)
from prefect_kubeflow.backends.logfile import LogLine, read_node_log
from prefect_kubeflow.backends.torchrun import resolve_nproc_per_node
from prefect_kubeflow.errors import (
    BackendError,
    NameConflictError,
)
from prefect_kubeflow.files import remove_tree
from prefect_kubeflow.types import TrainJob

CREATED_FILE = "created"  # in the job's folder once every node exists
DELETING_FILE = "deleting"  # the job is being deleted: it no longer reads as a job
_STATE_POLL_SECONDS = 2.0
# Engine states of a container that has not ended (Podman names more than Docker); any other
# (exited, dead, stopped) has, and is inspected for its exit code.
PENDING_STATES = ("created", "configured", "initialized")
RUNNING_STATES = ("running", "paused", "restarting", "stopping", "removing")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Node:
    """A node's container as the engine lists it; the exit code once it has exited."""

    id: str
    labels: dict[str, str]
    state: str
    exit_code: int | None = None
    finished_at: float = float("inf")
    oom_killed: bool = False


class ContainerBackend(Backend):
    """Runs each node as a container; the engine's labels are the job records."""

    def __init__(self, settings: ContainerSettings) -> None:
        self.settings = settings
        self.jobs_dir = settings.jobs_dir.expanduser().absolute()
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine, connected on first use."""
        with self._lock:
            if self._engine is None:
                self._engine = connect(
                    self.settings.container_runtime, self.settings.container_host
                )
            return self._engine

    # -- creating ----------------------------------------------------------------------------

    def create(self, spec: JobSpec) -> None:
        """Create and start the job's network and containers; nothing is left if this raises."""
        engine = self.engine
        image = self.settings.image or spec.image
        image_env = ensure_image(engine, image, self.settings)
        nproc, device = resolve_nproc_per_node(spec.num_proc_per_node, spec.resources_per_node, 0)
        record = JobRecord.for_spec(spec, image, nproc, device)
        job_dir = self.jobs_dir / spec.name
        nodes = build_node_specs(spec, record, self.settings, engine.name, job_dir, image_env)
        try:
            nodes_dir(job_dir).mkdir(parents=True)
        except FileExistsError as exc:
            raise NameConflictError(f"a job folder {job_dir} already exists") from exc
        try:
            write_function(nodes_dir(job_dir), spec)
            with engine_errors(f"creating network {network_name(spec.name)}"):
                engine.client.networks.create(
                    network_name(spec.name),
                    check_duplicate=True,  # Docker allows two networks of one name otherwise
                    driver=self.settings.network_driver or "bridge",
                    labels=job_labels(record, job_dir),
                )
            # Each node in its own thread: the engine's round trips overlap.
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                for future in [pool.submit(run_node, engine, node) for node in nodes]:
                    future.result()
            (job_dir / CREATED_FILE).touch()
        except BaseException:
            self._remove_after_failure(spec.name, job_dir)
            raise

    def _remove_after_failure(self, name: str, job_dir: Path) -> None:
        """Clean up a job that could not be created, without hiding why it could not."""
        try:
            # Only what this call made (labelled with its folder): a name conflict means the
            # other objects of that name belong to someone else.
            self._remove(name, job_dir, only_this_folder=True)
        except BackendError as exc:
            logger.warning("could not remove what was created of job %s: %s", name, exc)
        remove_tree(job_dir, f"the folder of job {name}")

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
            node = _Node(row["Id"], dict(row.get("Labels") or {}), str(row.get("State") or ""))
            if node.state not in RUNNING_STATES and node.state not in PENDING_STATES:
                with engine_errors(f"inspecting container {row['Id'][:12]}"):
                    try:
                        details = api.inspect_container(row["Id"])["State"]
                    except DockerException as exc:
                        if is_not_found(exc):
                            continue  # removed while we listed
                        raise
                node = _Node(
                    node.id,
                    node.labels,
                    node.state,
                    int(details["ExitCode"]),
                    _epoch(str(details["FinishedAt"])),
                    bool(details.get("OOMKilled")),
                )
            nodes.append(node)
        return nodes

    def describe(self, name: str) -> TrainJob | None:
        """The job as its containers show it now."""
        nodes = self._nodes(name)
        return self._to_trainjob(nodes) if nodes and not _deleting(nodes) else None

    def list_jobs(self) -> list[TrainJob]:
        """Every job on the engine, oldest first; one whose record this version cannot read
        is skipped with a warning."""
        jobs = []
        for name, nodes in _by_job(self._nodes()).items():
            if _deleting(nodes):
                continue
            try:
                jobs.append(self._to_trainjob(nodes))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "skipping %s: its record is not one this version reads (%s)", name, exc
                )
        return sorted(jobs, key=lambda job: job.creation_timestamp)

    def _to_trainjob(self, containers: list[_Node]) -> TrainJob:
        record = JobRecord.from_json(containers[0].labels[RECORD_LABEL])
        job_dir = Path(containers[0].labels[JOB_DIR_LABEL])
        by_index = {int(node.labels[NODE_LABEL]): node for node in containers}
        # Nodes are created in parallel; until the job is complete, a missing one is coming.
        complete = (job_dir / CREATED_FILE).exists()
        states = []
        for index in range(record.num_nodes):
            node = by_index.get(index)
            if node is None:
                states.append(
                    NodeState(constants.STEP_FAILED if complete else constants.STEP_PENDING)
                )
            elif node.exit_code is not None:
                states.append(NodeState.ended(node.exit_code, node.finished_at))
            elif node.state in PENDING_STATES:
                states.append(NodeState(constants.STEP_PENDING))
            else:
                states.append(NodeState(constants.STEP_RUNNING))

        def failure(index: int) -> str:
            node = by_index.get(index)
            if node is None or node.exit_code is None:
                return f"{constants.NODE}-{index}: its container is gone"
            return self._failure(node, job_dir, index, record.nproc_per_node)

        return to_trainjob(record, states, failure)

    def _failure(self, node: _Node, job_dir: Path, index: int, nproc: int) -> str:
        """Why a node failed: the keeper's record, the out-of-memory kill, or the engine's log
        when the keeper never ran (an image without a usable python3)."""
        assert node.exit_code is not None
        message = node_failure(nodes_dir(job_dir), index, node.exit_code, nproc)
        if node.oom_killed:
            message += " (out of memory: raise resources_per_node['memory'])"
        if not node_log(nodes_dir(job_dir), index).exists():
            try:
                tail = self.engine.client.api.logs(node.id, tail=20).decode(errors="replace")
                message += "\n" + tail.rstrip()
            except (DockerException, requests.RequestException) as exc:
                logger.warning("could not read the engine's log of %s: %s", node.id[:12], exc)
        return message

    def node_logs(
        self, name: str, node_index: int, follow: bool = False, tail_lines: int | None = None
    ) -> Iterator[LogLine]:
        """One node's lines from its log file; with `follow`, until its container has ended."""
        job_nodes = self._nodes_dir(name)
        ended = self._ended(name, node_index, job_nodes)
        return read_node_log(node_log(job_nodes, node_index), follow, ended, tail_lines)

    def result(self, name: str) -> bytes | None:
        """Rank 0's pickled return value, from the nodes' folder on this machine."""
        return read_result(self._nodes_dir(name))

    def _nodes_dir(self, name: str) -> Path:
        """The host folder the job's nodes write to (its logs, exits and result)."""
        nodes = self._nodes(name)
        if not nodes or _deleting(nodes):
            raise self.not_found(name)
        return nodes_dir(Path(nodes[0].labels[JOB_DIR_LABEL]))

    def _ended(self, name: str, node_index: int, job_nodes: Path) -> Callable[[], bool]:
        """Whether the node has ended: its exit file (the keeper's), else, for a container
        killed before its keeper could write it, the engine, asked every few seconds."""
        exit_file = node_exit_file(job_nodes, node_index)
        asked = [time.monotonic()]

        def ended() -> bool:
            if exit_file.exists() or (job_nodes.parent / DELETING_FILE).exists():
                return True
            if time.monotonic() - asked[0] < _STATE_POLL_SECONDS:
                return False
            asked[0] = time.monotonic()
            try:
                state = self.engine.client.api.inspect_container(node_name(name, node_index))
            except (DockerException, requests.RequestException) as exc:
                return is_not_found(exc)  # gone; or the engine is busy: ask again later
            status = str(state["State"]["Status"])
            return status not in RUNNING_STATES and status not in PENDING_STATES

        return ended

    # -- stopping and deleting ---------------------------------------------------------------

    def stop(self, name: str) -> None:
        """Stop every running container of the job now (SIGTERM, then SIGKILL after grace)."""
        running = [n for n in self._nodes(name) if n.exit_code is None]
        with ThreadPoolExecutor(max_workers=max(len(running), 1)) as pool:
            list(pool.map(self._stop_node, running))

    def _stop_node(self, node: _Node) -> None:
        with engine_errors(f"stopping {node.id[:12]}"):
            try:
                self.engine.client.api.stop(node.id, timeout=int(self.settings.grace_period))
            except DockerException as exc:
                if not is_not_found(exc):
                    raise

    def delete(self, name: str) -> bool:
        """Stop the containers; remove containers, network and folder."""
        nodes = self._nodes(name)
        job_dir = Path(nodes[0].labels[JOB_DIR_LABEL]) if nodes else self.jobs_dir / name
        if job_dir.is_dir():
            (job_dir / DELETING_FILE).touch()
        if nodes:
            self.stop(name)
        return self._remove(name, job_dir)

    def _remove(self, name: str, job_dir: Path, only_this_folder: bool = False) -> bool:
        """Remove every container, the network and the folder of the job; whatever exists.
        Whether anything did."""
        api = self.engine.client.api
        labels = [f"{JOB_LABEL}={name}", BACKEND_LABEL]
        if only_this_folder:
            labels.append(f"{JOB_DIR_LABEL}={job_dir}")
        label = {"label": labels}
        with engine_errors(f"listing what is left of {name}"):
            containers = api.containers(all=True, filters=label)
            networks = api.networks(filters=label)
        existed = bool(containers or networks) or job_dir.is_dir()
        for container in containers:
            with engine_errors(f"removing a container of {name}"):
                try:
                    api.remove_container(container["Id"], force=True)
                except DockerException as exc:
                    if not is_not_found(exc):
                        raise
        for network in networks:
            with engine_errors(f"removing network {network['Name']}"):
                try:
                    api.remove_network(network["Id"])
                except DockerException as exc:
                    if not is_not_found(exc):
                        raise
        remove_tree(job_dir, f"the folder of job {name}")
        return existed


def _deleting(nodes: list[_Node]) -> bool:
    """Whether the job of these nodes is being deleted."""
    return (Path(nodes[0].labels[JOB_DIR_LABEL]) / DELETING_FILE).exists()


def _by_job(nodes: list[_Node]) -> dict[str, list[_Node]]:
    """Node containers grouped by their job."""
    grouped: dict[str, list[_Node]] = {}
    for node in nodes:
        grouped.setdefault(node.labels[JOB_LABEL], []).append(node)
    return grouped


def _epoch(timestamp: str) -> float:
    """An engine's RFC 3339 time (nanoseconds, UTC) as Unix seconds; far future if unparsable."""
    match = _RFC3339.match(timestamp)
    if match is None:
        return float("inf")
    whole = datetime.fromisoformat(match[1]).replace(tzinfo=timezone.utc).timestamp()
    return whole + float(match[2] or 0)
