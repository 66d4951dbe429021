"""Container backend: each node is a container running torchrun, on a network of its own job.

A job is a network ``<job>-net`` and containers ``<job>-node-<i>`` built by `specs.py`, whose
labels hold the job's record, so any process finds the same jobs through the engine. The job's
host folder (its ``nodes/`` part mounted at ``/pk-job``) carries the shipped function and each
node's log, which the node's keeper writes in the local backend's format: one log reader, one
forwarder. Docker and Podman are both driven through the Docker API (`engine.py`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import requests
from docker.errors import DockerException

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend, JobRecord, JobSpec
from prefect_kubeflow.backends.container.engine import (
    Engine,
    connect,
    engine_errors,
    ensure_image,
    is_not_found,
    run_node,
)
from prefect_kubeflow.backends.container.nodes import (
    CREATED_FILE,
    DELETING_FILE,
    PENDING_STATES,
    RUNNING_STATES,
    Node,
    attempt_of,
    by_job,
    created_attempt,
    deleting,
    list_nodes,
    remove_job,
)
from prefect_kubeflow.backends.container.specs import (
    JOB_DIR_LABEL,
    NODE_LABEL,
    RECORD_LABEL,
    ContainerSettings,
    NodeSpec,
    build_node_specs,
    job_labels,
    network_name,
    node_name,
    nodes_dir,
    restarted,
)
from prefect_kubeflow.backends.jobfiles import (
    archive_attempt,
    created_message,
    events_of,
    forget_deleted_events,
    job_event,
    keep_deleted_events,
    mark_cancelled,
    no_restart_reason,
    node_exit_file,
    node_failure,
    node_log,
    read_cancelled,
    read_restarts,
    read_result,
    read_trainer_status,
    record_watcher,
    restarted_message,
    write_function,
)
from prefect_kubeflow.backends.logfile import LogLine, read_node_log
from prefect_kubeflow.backends.status import (
    NodeState,
    attempt_failure,
    restart_pending,
    to_trainjob,
)
from prefect_kubeflow.backends.torchrun import resolve_nproc_per_node
from prefect_kubeflow.errors import (
    BackendError,
    JobNotFoundError,
    NameConflictError,
)
from prefect_kubeflow.files import remove_tree, write_json_atomic
from prefect_kubeflow.types import Event, TrainJob

NODES_FILE = "nodes.json"  # the node containers' specs, for a gang restart
_STATE_POLL_SECONDS = 2.0
logger = logging.getLogger(__name__)


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
        # A CustomTrainerContainer's image is the user's choice; the block's image replaces
        # only the runtime's.
        image = spec.image if spec.custom_image else self.settings.image or spec.image
        info = ensure_image(engine, image, self.settings)
        nproc, device = resolve_nproc_per_node(spec.num_proc_per_node, spec.resources_per_node, 0)
        record = JobRecord.for_spec(spec, image, nproc, device, info.digest)
        job_dir = self.jobs_dir / spec.name
        nodes = build_node_specs(
            spec, record, self.settings, engine.name, job_dir, info.env, info.command
        )
        try:
            nodes_dir(job_dir).mkdir(parents=True)
        except FileExistsError as exc:
            raise NameConflictError(f"a job folder {job_dir} already exists") from exc
        try:
            if not spec.custom_image:
                write_function(nodes_dir(job_dir), spec)
            # Out of the containers' reach: the environment may carry pip's credentials.
            write_json_atomic(job_dir / NODES_FILE, [asdict(node) for node in nodes])
            forget_deleted_events(self.jobs_dir, spec.name)
            job_event(nodes_dir(job_dir), spec.name, "Created", created_message(spec))
            with engine_errors(f"creating network {network_name(spec.name)}"):
                engine.client.networks.create(
                    network_name(spec.name),
                    check_duplicate=True,  # Docker allows two networks of one name otherwise
                    driver=self.settings.network_driver or "bridge",
                    labels=job_labels(record, job_dir),
                )
            # Each node in its own thread: the engine's round trips overlap.
            self._start_nodes(nodes, job_dir, attempt=0)
        except BaseException:
            self._remove_after_failure(spec.name, job_dir)
            raise

    def _start_nodes(self, nodes: list[NodeSpec], job_dir: Path, attempt: int) -> None:
        """Create and start the attempt's containers, each in its own thread (the engine's
        round trips overlap); then mark the attempt complete."""
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            for future in [pool.submit(run_node, self.engine, node) for node in nodes]:
                future.result()
        (job_dir / CREATED_FILE).write_text(str(attempt))

    def _remove_after_failure(self, name: str, job_dir: Path) -> None:
        """Clean up a job that could not be created, without hiding why it could not."""
        try:
            # Only what this call made (labelled with its folder): a name conflict means the
            # other objects of that name belong to someone else.
            remove_job(self.engine, name, job_dir, only_this_folder=True)
        except BackendError as exc:
            logger.warning("could not remove what was created of job %s: %s", name, exc)
        remove_tree(job_dir, f"the folder of job {name}")

    # -- reading -----------------------------------------------------------------------------

    def describe(self, name: str) -> TrainJob | None:
        """The job as its containers show it now."""
        nodes = list_nodes(self.engine, name)
        return self._to_trainjob(nodes) if nodes and not deleting(nodes) else None

    def list_jobs(self) -> list[TrainJob]:
        """Every job on the engine, oldest first; one whose record this version cannot read
        is skipped with a warning."""
        jobs = []
        for name, nodes in by_job(
            list_nodes(
                self.engine,
            )
        ).items():
            if deleting(nodes):
                continue
            try:
                jobs.append(self._to_trainjob(nodes))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "skipping %s: its record is not one this version reads (%s)", name, exc
                )
        return sorted(jobs, key=lambda job: job.creation_timestamp)

    def _to_trainjob(self, containers: list[Node]) -> TrainJob:
        record = JobRecord.from_json(containers[0].labels[RECORD_LABEL])
        job_dir = Path(containers[0].labels[JOB_DIR_LABEL])
        restarts = read_restarts(nodes_dir(job_dir))
        current = [n for n in containers if attempt_of(n) == len(restarts)]
        by_index = {int(node.labels[NODE_LABEL]): node for node in current}
        # Nodes are created in parallel; until the attempt is complete, a missing one is coming.
        complete = created_attempt(job_dir) == len(restarts)
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

        no_restart = no_restart_reason(nodes_dir(job_dir))
        cancelled = read_cancelled(nodes_dir(job_dir))
        job = to_trainjob(record, states, failure, restarts, no_restart, cancelled)
        job.trainer_status = read_trainer_status(nodes_dir(job_dir))
        return job

    def _failure(self, node: Node, job_dir: Path, index: int, nproc: int) -> str:
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
        nodes = list_nodes(self.engine, name)
        if not nodes or deleting(nodes):
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

    def events(self, name: str) -> list[Event]:
        """The job's event log, kept in its folder (and for an hour after it is deleted)."""
        nodes = list_nodes(self.engine, name)
        node_dir = None
        if nodes and not deleting(nodes):
            node_dir = nodes_dir(Path(nodes[0].labels[JOB_DIR_LABEL]))
        events = events_of(self.jobs_dir, node_dir, name)
        if events is None:
            raise self.not_found(name)
        return events

    def record_event(self, name: str, reason: str, message: str) -> None:
        """Add an event to the job's log in its folder."""
        try:
            job_event(self._nodes_dir(name), name, reason, message)
        except (OSError, BackendError) as exc:
            logger.warning("could not record event %s of %s: %s", reason, name, exc)

    # -- restarting, stopping and deleting -----------------------------------------------------

    def restart(self, name: str) -> None:
        """Archive the ended attempt's files (claiming the restart), rename its containers out
        of the way (they stay, for the engine's view of them, until the job is deleted), then
        start the next attempt's containers from the job's node specs. Nothing happens unless
        a restart is due and this call claims it."""
        if not restart_pending(self.get(name)):
            return
        containers = self._await_ended(name)
        job = self.get(name)
        job_dir = Path(containers[0].labels[JOB_DIR_LABEL])
        reason = attempt_failure(job)
        try:
            attempt = archive_attempt(nodes_dir(job_dir), job.num_nodes, reason)
        except FileExistsError:
            return  # another watcher claimed this restart
        job_event(nodes_dir(job_dir), name, "Restarted", restarted_message(attempt, reason))
        for node in containers:
            if attempt_of(node) == job.attempt:
                old = f"{node_name(name, int(node.labels[NODE_LABEL]))}-attempt-{job.attempt}"
                with engine_errors(f"renaming {node.id[:12]}"):
                    self.engine.client.api.rename(node.id, old)
        nodes = [NodeSpec(**data) for data in json.loads((job_dir / NODES_FILE).read_text())]
        try:
            self._start_nodes([restarted(node, attempt) for node in nodes], job_dir, attempt)
        except BaseException:
            # What started is stopped and the attempt marked made: its missing nodes then read
            # Failed, never Pending for good.
            self.stop(name)
            (job_dir / CREATED_FILE).write_text(str(attempt))
            raise
        if (job_dir / DELETING_FILE).exists():  # deleted while it restarted
            remove_job(self.engine, name, job_dir)
        elif read_cancelled(nodes_dir(job_dir)) is not None:  # cancelled while it restarted
            self.stop(name)

    def _await_ended(self, name: str) -> list[Node]:
        """The job's containers once all have stopped: a keeper writes its exit file a moment
        before its container stops.

        Raises:
            BackendError: one still runs after the grace period.
        """
        deadline = time.monotonic() + self.settings.grace_period + 5
        containers = list_nodes(self.engine, name)
        while any(node.exit_code is None for node in containers):
            if time.monotonic() > deadline:
                raise BackendError(f"TrainJob {name!r} still runs: only a stopped gang restarts")
            time.sleep(0.1)
            containers = list_nodes(self.engine, name)
        return containers

    def record_watcher(self, name: str) -> None:
        """Record this process as the job's watcher, in its folder."""
        record_watcher(self._nodes_dir(name))

    def cancel(self, name: str, message: str) -> None:
        """Mark the job cancelled (no restart follows), then stop it."""
        try:
            mark_cancelled(self._nodes_dir(name), message)
        except JobNotFoundError:
            return  # deleted: nothing left to cancel
        super().cancel(name, message)

    def cancelled(self, name: str) -> str | None:
        """Why the job was cancelled, from its folder."""
        try:
            return read_cancelled(self._nodes_dir(name))
        except JobNotFoundError:
            return None

    def stop(self, name: str) -> None:
        """Stop every running container of the job now (SIGTERM, then SIGKILL after grace)."""
        running = [n for n in list_nodes(self.engine, name) if n.exit_code is None]
        with ThreadPoolExecutor(max_workers=max(len(running), 1)) as pool:
            list(pool.map(self._stop_node, running))

    def _stop_node(self, node: Node) -> None:
        with engine_errors(f"stopping {node.id[:12]}"):
            try:
                self.engine.client.api.stop(node.id, timeout=int(self.settings.grace_period))
            except DockerException as exc:
                if not is_not_found(exc):
                    raise

    def delete(self, name: str) -> bool:
        """Stop the containers; remove containers, network and folder."""
        nodes = list_nodes(self.engine, name)
        job_dir = Path(nodes[0].labels[JOB_DIR_LABEL]) if nodes else self.jobs_dir / name
        if job_dir.is_dir():
            (job_dir / DELETING_FILE).touch()
        if nodes:
            self.stop(name)
        if nodes_dir(job_dir).is_dir():
            keep_deleted_events(self.jobs_dir, nodes_dir(job_dir), name)
        return remove_job(self.engine, name, job_dir)
