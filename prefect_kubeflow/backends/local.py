"""Local process backend: each node is a torchrun agent subprocess on this machine.

A job is a folder: ``job.json`` (the record and how to launch the nodes), the shipped function,
``host.json`` (the process hosting the nodes, `prefect_kubeflow.backends.nodehost`),
``node-<i>.log`` and ``node-<i>.exit``. Status is derived from those files and from which
processes live, so any process sees the same jobs. The host is this backend's engine: it starts
the nodes detached from the caller, reaps them and tears the gang down when one fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir, user_data_dir

from prefect_kubeflow import constants
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.base import Backend, JobRecord, JobSpec
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
    read_exit,
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
from prefect_kubeflow.errors import BackendError, NameConflictError
from prefect_kubeflow.files import remove_tree, write_json_atomic
from prefect_kubeflow.types import Event, TrainJob

JOB_FILE = "job.json"
HOST_FILE = "host.json"
# A job being deleted is first renamed to this (atomically: of two deletes, one wins), so it
# no longer reads as a job; an interrupted delete leaves it for the next delete to finish.
TOMBSTONE = ".deleted-{name}-"
ERROR_FILE = "error.txt"
logger = logging.getLogger(__name__)


def local_gpu_count() -> int:
    """NVIDIA GPUs visible on this machine, counted without importing torch."""
    return sum(1 for _ in Path("/dev").glob("nvidia[0-9]*"))


@dataclass(frozen=True)
class LocalSettings:
    """How the local backend runs: where jobs and venvs live, how long a node may take to stop."""

    jobs_dir: Path = field(default_factory=lambda: Path(user_data_dir(constants.APP_NAME)) / "jobs")
    venv_dir: Path = field(
        default_factory=lambda: Path(user_cache_dir(constants.APP_NAME)) / "venvs"
    )
    grace_period: float = 10.0


@dataclass(frozen=True)
class LocalJob:
    """``job.json``: the shared record, and what the host needs to launch the nodes."""

    record: JobRecord
    job_id: str  # the marker every process of the job carries in its environment
    workdir: str
    packages_to_install: list[str]
    pip_index_urls: list[str]
    env: dict[str, str]

    @classmethod
    def read(cls, job_dir: Path) -> LocalJob:
        """The job kept in `job_dir`."""
        data = json.loads((job_dir / JOB_FILE).read_text())
        return cls(**{**data, "record": JobRecord(**data["record"])})


def read_host(job_dir: Path) -> dict[str, Any] | None:
    """``{"pid", "start"}`` of the job's host process, once it was started."""
    try:
        host = dict(json.loads((job_dir / HOST_FILE).read_text()))
    except (OSError, ValueError):
        return None
    # Without a start time a pid could name any process: never signal or trust it.
    return host if isinstance(host.get("pid"), int) and host.get("start") else None


def host_alive(job_dir: Path) -> bool:
    """Whether the job's host still runs (or has yet to be recorded: the job is being made)."""
    host = read_host(job_dir)
    return host is None or processes.is_alive(host["pid"], host["start"])


class LocalProcessBackend(Backend):
    """Runs each node as a torchrun agent subprocess; jobs live under `jobs_dir`."""

    runs_images = False

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.jobs_dir = settings.jobs_dir.expanduser().absolute()

    def _dir(self, name: str) -> Path | None:
        path = self.jobs_dir / name
        if not _valid_name(name) or not (path / JOB_FILE).exists():
            return None
        return path

    # -- creating ----------------------------------------------------------------------------

    def create(self, spec: JobSpec) -> None:
        """Write the job's folder, then start its host, which starts the nodes."""
        nproc, device = resolve_nproc_per_node(
            spec.num_proc_per_node, spec.resources_per_node, local_gpu_count()
        )
        job = LocalJob(
            record=JobRecord.for_spec(spec, spec.image, nproc, device),
            job_id=uuid.uuid4().hex,
            workdir=os.getcwd(),
            packages_to_install=list(spec.packages_to_install),
            pip_index_urls=list(spec.pip_index_urls),
            env=dict(spec.env),
        )
        job_dir = self.jobs_dir / spec.name
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        try:
            job_dir.mkdir()
        except FileExistsError as exc:
            raise NameConflictError(f"a job folder {job_dir} already exists") from exc
        try:
            write_function(job_dir, spec)
            forget_deleted_events(self.jobs_dir, spec.name)
            job_event(job_dir, spec.name, "Created", created_message(spec))
            # job.json last but for the host: a job is listed only once it is complete.
            write_json_atomic(job_dir / JOB_FILE, asdict(job))
            self._start_host(job_dir)
        except BaseException:
            remove_tree(job_dir, "the folder of a job that could not be created")
            raise

    def _start_host(self, job_dir: Path) -> None:
        """Start the job's host detached from this process: the job outlives its caller."""
        argv = [
            sys.executable,
            "-m",
            "prefect_kubeflow.backends.nodehost",
            str(job_dir),
            str(self.settings.venv_dir),
            str(self.settings.grace_period),
        ]
        with open(job_dir / "host.log", "wb") as log:
            host = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # A host gone before its start time could be read is recorded as dead (-1), not unborn.
        started = processes.start_time(host.pid) or -1
        try:
            write_json_atomic(job_dir / HOST_FILE, {"pid": host.pid, "start": started})
        except OSError:
            os.killpg(host.pid, signal.SIGKILL)  # leads its own session: its keepers go too
            raise

    # -- reading -----------------------------------------------------------------------------

    def describe(self, name: str) -> TrainJob | None:
        """The job as its files and processes show it now."""
        job_dir = self._dir(name)
        if job_dir is None:
            return None
        try:
            job = LocalJob.read(job_dir)
        except FileNotFoundError:
            return None  # deleted while we read it
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("skipping %s: its record is not one this version reads (%s)", name, exc)
            return None
        return self._to_trainjob(job, job_dir)

    def list_jobs(self) -> list[TrainJob]:
        """Every job under `jobs_dir`, oldest first."""
        names = [p.parent.name for p in self.jobs_dir.glob(f"*/{JOB_FILE}")]
        jobs = [job for job in map(self.describe, names) if job is not None]
        return sorted(jobs, key=lambda job: job.creation_timestamp)

    def _to_trainjob(self, job: LocalJob, job_dir: Path) -> TrainJob:
        alive = host_alive(job_dir)
        exits = [read_exit(job_dir, rank) for rank in range(job.record.num_nodes)]
        nodes = []
        for rank, ended in enumerate(exits):
            if ended is not None:
                nodes.append(NodeState.ended(ended["code"], ended["at"]))
            elif not alive:
                nodes.append(NodeState(constants.STEP_FAILED))
            elif node_log(job_dir, rank).exists():
                nodes.append(NodeState(constants.STEP_RUNNING))
            else:
                nodes.append(NodeState(constants.STEP_PENDING))

        def failure(rank: int) -> str:
            error = job_dir / ERROR_FILE
            if error.exists():
                return error.read_text()
            ended = exits[rank]
            if ended is None or ended["orphaned"]:
                pid = (read_host(job_dir) or {}).get("pid")
                return f"the process hosting the job's nodes (pid {pid}) died"
            return node_failure(job_dir, rank, ended["code"], job.record.nproc_per_node)

        restarts, no_restart = read_restarts(job_dir), no_restart_reason(job_dir)
        trainjob = to_trainjob(
            job.record, nodes, failure, restarts, no_restart, read_cancelled(job_dir)
        )
        trainjob.trainer_status = read_trainer_status(job_dir)
        return trainjob

    def node_logs(
        self, name: str, node_index: int, follow: bool = False, tail_lines: int | None = None
    ) -> Iterator[LogLine]:
        """One node's lines from its log file; with `follow`, until the node has ended."""
        job_dir = self._existing_dir(name)
        exit_file = node_exit_file(job_dir, node_index)

        def ended() -> bool:
            return exit_file.exists() or self._dir(name) is None or not host_alive(job_dir)

        return read_node_log(node_log(job_dir, node_index), follow, ended, tail_lines)

    def result(self, name: str) -> bytes | None:
        """Rank 0's pickled return value, from the job's folder."""
        return read_result(self._existing_dir(name))

    def events(self, name: str) -> list[Event]:
        """The job's event log, kept in its folder (and for an hour after it is deleted)."""
        events = events_of(self.jobs_dir, self._dir(name), name)
        if events is None:
            raise self.not_found(name)
        return events

    def record_event(self, name: str, reason: str, message: str) -> None:
        """Add an event to the job's log in its folder."""
        job_dir = self._dir(name)
        if job_dir is not None:
            try:
                job_event(job_dir, name, reason, message)
            except OSError as exc:
                logger.warning("could not record event %s of %s: %s", reason, name, exc)

    def _existing_dir(self, name: str) -> Path:
        job_dir = self._dir(name)
        if job_dir is None:
            raise self.not_found(name)
        return job_dir

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, name: str) -> None:
        """Stop every process of the job (torchrun agents and their workers)."""
        job_dir = self._dir(name)
        if job_dir is not None:
            processes.kill_marked(LocalJob.read(job_dir).job_id, self.settings.grace_period)

    def restart(self, name: str) -> None:
        """Archive the ended attempt (its host's record too: the job reads Pending until the
        new host runs), then start a new host for the next attempt. Nothing happens unless a
        restart is due and this call claims it."""
        job_dir = self._existing_dir(name)
        if not restart_pending(self.get(name)):
            return
        self._await_host_exit(job_dir, name)
        # A keeper orphaned by a killed host would write its exit into the next attempt.
        processes.kill_marked(LocalJob.read(job_dir).job_id, self.settings.grace_period)
        job = self.get(name)
        reason = attempt_failure(job)
        try:
            attempt = archive_attempt(
                job_dir, job.num_nodes, reason, extra=(HOST_FILE, "host.log", ERROR_FILE)
            )
        except FileExistsError:
            return  # another watcher claimed this restart
        job_event(job_dir, name, "Restarted", restarted_message(attempt, reason))
        try:
            self._start_host(job_dir)
        except BaseException:
            # A dead host: the attempt reads Failed, never Pending for good.
            write_json_atomic(job_dir / HOST_FILE, {"pid": 0, "start": -1})
            raise
        if read_cancelled(job_dir) is not None:  # cancelled while it restarted
            self.stop(name)

    def _await_host_exit(self, job_dir: Path, name: str) -> None:
        """The host outlives its nodes' exit files by a moment (reaping, its last sweep of
        the job's processes, which would take the next attempt's for its own): wait it out."""
        host = read_host(job_dir)
        deadline = time.monotonic() + self.settings.grace_period + 5
        while host is not None and processes.is_alive(host["pid"], host["start"]):
            if time.monotonic() > deadline:
                raise BackendError(
                    f"TrainJob {name!r} still runs (its host, pid {host['pid']}): only a "
                    "stopped gang restarts"
                )
            time.sleep(0.05)

    def record_watcher(self, name: str) -> None:
        """Record this process as the job's watcher, in its folder."""
        job_dir = self._dir(name)
        if job_dir is not None:
            record_watcher(job_dir)

    def cancel(self, name: str, message: str) -> None:
        """Mark the job cancelled (no restart follows), then stop it."""
        job_dir = self._dir(name)
        if job_dir is not None:
            mark_cancelled(job_dir, message)
        super().cancel(name, message)

    def cancelled(self, name: str) -> str | None:
        """Why the job was cancelled, from its folder."""
        job_dir = self._dir(name)
        return None if job_dir is None else read_cancelled(job_dir)

    def delete(self, name: str) -> bool:
        """Stop the host and every node process, then remove the job's folder; also finish
        what an interrupted delete of the same name left."""
        if not _valid_name(name):
            return False
        tombstone = self.jobs_dir / (TOMBSTONE.format(name=name) + uuid.uuid4().hex[:8])
        with contextlib.suppress(FileNotFoundError):  # gone, or another delete claimed it
            (self.jobs_dir / name).rename(tombstone)
        claimed = list(self.jobs_dir.glob(TOMBSTONE.format(name=name) + "*"))
        for folder in claimed:
            self._tear_down(folder, name)
        return bool(claimed)

    def _tear_down(self, folder: Path, name: str) -> None:
        """Stop the host and the nodes of a job being deleted, then remove its folder."""
        host = read_host(folder)
        if host is not None and processes.is_alive(host["pid"], host["start"]):
            # The host stops its nodes on SIGTERM and exits once they are gone.
            processes.signal_process(host["pid"], signal.SIGTERM)
            deadline = time.monotonic() + self.settings.grace_period + 5
            while processes.is_alive(host["pid"], host["start"]):
                if time.monotonic() > deadline:
                    logger.warning("the host of %s ignored SIGTERM; killing it", folder)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(host["pid"], signal.SIGKILL)  # with its keepers and pip
                    break
                time.sleep(0.05)
        try:
            job_id = LocalJob.read(folder).job_id
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning(
                "no readable record in %s (%s): its processes are not searched", folder, exc
            )
        else:
            processes.kill_marked(job_id, self.settings.grace_period)
        keep_deleted_events(self.jobs_dir, folder, name)
        remove_tree(folder, "the folder of a deleted job")


def _valid_name(name: str) -> bool:
    return "/" not in name and name not in ("", ".", "..") and not name.startswith(".")
