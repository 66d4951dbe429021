"""A job's folder on this machine, shared by the backends whose nodes write to it (local
processes, containers): the shipped function, per-node logs and exit files, the ranks'
tracebacks, the failure message built from them, the job's event log, and its earlier
attempts (gang restarts)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect_kubeflow import constants
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.base import JobSpec
from prefect_kubeflow.backends.entrypoint import RESULT_FILE, STATUS_FILE
from prefect_kubeflow.backends.eventlog import EVENTS_FILE, NODE_KIND, append_event
from prefect_kubeflow.backends.logfile import STDERR, read_node_log
from prefect_kubeflow.backends.status import exit_header
from prefect_kubeflow.files import write_json_atomic
from prefect_kubeflow.progress import TrainerStatus
from prefect_kubeflow.types import Event, Restart


def write_function(job_dir: Path, spec: JobSpec) -> None:
    """Ship the training function: its source and its name and JSON arguments."""
    (job_dir / "function.py").write_text(spec.function_source)
    write_json_atomic(
        job_dir / "function.json", {"name": spec.function_name, "args": spec.func_args}
    )


def read_result(job_dir: Path) -> bytes | None:
    """Rank 0's pickled return value (written by the entrypoint); None without one."""
    try:
        return (job_dir / RESULT_FILE).read_bytes()
    except FileNotFoundError:
        return None


def node_log(job_dir: Path, node_index: int) -> Path:
    """The node's log file (written by its keeper)."""
    return job_dir / f"{constants.NODE}-{node_index}.log"


def node_exit_file(job_dir: Path, node_index: int) -> Path:
    """The node's exit file, written by its keeper once the log is complete."""
    return job_dir / f"{constants.NODE}-{node_index}.exit"


def read_exit(job_dir: Path, node_index: int) -> dict[str, Any] | None:
    """``{"code", "orphaned"}`` of an ended node, with ``"at"`` (when it ended, from the file's
    time); None while it runs."""
    path = node_exit_file(job_dir, node_index)
    try:
        ended = dict(json.loads(path.read_text()))
        ended["at"] = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return ended


def node_failure(job_dir: Path, node_index: int, code: int, nproc_per_node: int) -> str:
    """Why a node failed: how it ended, then a rank's traceback or the node's last stderr."""
    header = exit_header(node_index, code)
    first_rank = node_index * nproc_per_node
    for global_rank in range(first_rank, first_rank + nproc_per_node):
        error = job_dir / "errors" / f"rank-{global_rank}.txt"
        if error.exists():
            return f"{header}; rank {global_rank} raised:\n{error.read_text().rstrip()}"
    lines = list(read_node_log(node_log(job_dir, node_index), tail_lines=200))
    errors = [line.text for line in lines if line.stream == STDERR][-20:]
    return header + ("\n" + "\n".join(errors) if errors else "")


# -- events ------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)

# A deleted job's events stay this long (as a cluster keeps events), under the jobs folder.
DELETED_EVENTS_DIR = ".events"
DELETED_EVENTS_TTL = 3600.0


def job_event(node_dir: Path, name: str, reason: str, message: str) -> None:
    """Record an event of the job `name` in its event log (in the folder its nodes see)."""
    append_event(node_dir / EVENTS_FILE, "TrainJob", name, reason, message)


def created_message(spec: JobSpec) -> str:
    """The ``Created`` event's message."""
    what = f"image {spec.image}" if spec.custom_image else f"function {spec.function_name}"
    return (
        f"TrainJob {spec.name} created: {spec.num_nodes} node(s) of {what} on runtime "
        f"{spec.runtime_name}, up to {spec.max_restarts} restart(s)"
    )


def restarted_message(attempt: int, reason: str) -> str:
    """The ``Restarted`` event's message."""
    first_line = reason.splitlines()[0] if reason else "no reason recorded"
    return f"gang restart: attempt {attempt + 1} starts after {first_line}"


def keep_deleted_events(jobs_dir: Path, node_dir: Path, name: str) -> None:
    """Before a job's folder is removed: move its event log under ``jobs_dir/.events``, ending
    with ``Deleted``; drop deleted jobs' logs older than `DELETED_EVENTS_TTL` (checked at each
    delete). A failure is logged: events never stop a delete."""
    try:
        _keep_deleted_events(jobs_dir, node_dir, name)
    except OSError as exc:
        logger.warning("the events of deleted TrainJob %s are not kept: %s", name, exc)


def _keep_deleted_events(jobs_dir: Path, node_dir: Path, name: str) -> None:
    kept = jobs_dir / DELETED_EVENTS_DIR
    kept.mkdir(parents=True, exist_ok=True)
    target = kept / f"{name}.jsonl"
    with contextlib.suppress(FileNotFoundError):
        (node_dir / EVENTS_FILE).rename(target)
    append_event(target, "TrainJob", name, "Deleted", f"TrainJob {name} was deleted")
    now = time.time()
    for log in kept.glob("*.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            if now - log.stat().st_mtime > DELETED_EVENTS_TTL:
                log.unlink()


def forget_deleted_events(jobs_dir: Path, name: str) -> None:
    """A new job of `name` starts with no events of the deleted one."""
    (jobs_dir / DELETED_EVENTS_DIR / f"{name}.jsonl").unlink(missing_ok=True)


def events_of(jobs_dir: Path, node_dir: Path | None, name: str) -> list[Event] | None:
    """The events of the job `name` (its folder's log, or once deleted the kept one); None
    when there is no trace of such a job."""
    if node_dir is not None:
        return read_events(node_dir / EVENTS_FILE, name)
    kept = jobs_dir / DELETED_EVENTS_DIR / f"{name}.jsonl"
    return read_events(kept, name) if kept.exists() else None


def read_events(events_file: Path, job: str) -> list[Event]:
    """The events of `events_file`, oldest first; a node's object name ``node-<i>`` (its
    keeper knows no job name) becomes the node's pod-like name ``<job>-node-<i>``."""
    events = []
    try:
        text = events_file.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:  # a line being written
            continue
        obj, kind = str(data["object"]), str(data["kind"])
        events.append(
            Event(
                involved_object_kind=kind,
                involved_object_name=f"{job}-{obj}" if kind == NODE_KIND else obj,
                message=str(data["message"]),
                reason=str(data["reason"]),
                event_time=datetime.fromisoformat(data["time"]),
            )
        )
    return sorted(events, key=lambda event: event.event_time)


CANCELLED_FILE = "cancelled"


def mark_cancelled(node_dir: Path, message: str) -> None:
    """Record that the job was cancelled (why): no gang restart follows. The first reason
    stays (a cancel from Prefect, then the SIGTERM that follows it, say the same)."""
    with contextlib.suppress(FileExistsError), open(node_dir / CANCELLED_FILE, "x") as file:
        file.write(message)


def read_cancelled(node_dir: Path) -> str | None:
    """Why the job was cancelled; None if it was not."""
    try:
        return (node_dir / CANCELLED_FILE).read_text()
    except FileNotFoundError:
        return None


def read_trainer_status(node_dir: Path) -> TrainerStatus | None:
    """What rank 0 last reported with `update_trainjob_status`; None before any report."""
    try:
        data = json.loads((node_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return TrainerStatus.from_api(data)


WATCHER_FILE = "watcher.json"


def record_watcher(node_dir: Path) -> None:
    """Record this process as the job's watcher: the one that restarts its gang."""
    pid = os.getpid()
    write_json_atomic(node_dir / WATCHER_FILE, {"pid": pid, "start": processes.start_time(pid)})


def no_restart_reason(node_dir: Path) -> str | None:
    """Why a failed attempt is not restarted although restarts remain: the process watching
    it is gone (nobody would restart it). None: it will be (a cancel is `read_cancelled`'s)."""
    try:
        watcher = json.loads((node_dir / WATCHER_FILE).read_text())
    except (OSError, ValueError):
        return None  # no watcher yet: its flow is starting
    if processes.is_alive(int(watcher["pid"]), watcher.get("start")):
        return None
    return f"the process watching it (pid {watcher['pid']}) ended before restarting it"


# -- attempts ----------------------------------------------------------------------------------

ATTEMPTS_FILE = "attempts.json"


def read_restarts(node_dir: Path) -> list[Restart]:
    """The job's earlier attempts, each with why it ended; empty before any restart."""
    try:
        data = json.loads((node_dir / ATTEMPTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [
        Restart(attempt=i, reason=str(item["reason"]), time=datetime.fromisoformat(item["at"]))
        for i, item in enumerate(data)
    ]


def archive_attempt(
    node_dir: Path, num_nodes: int, reason: str, extra: tuple[str, ...] = ()
) -> int:
    """Move the ended attempt's node logs, exit files, tracebacks and result (and the
    `extra` files) into ``attempt-<n>/`` and record why it ended; the next attempt's number.
    Creating ``attempt-<n>/`` claims the restart: of two callers, the second gets
    `FileExistsError` and must leave the job alone."""
    restarts = read_restarts(node_dir)
    attempt = len(restarts)
    archive = node_dir / f"attempt-{attempt}"
    archive.mkdir()
    moved = [RESULT_FILE, "errors", *extra]
    for index in range(num_nodes):
        moved += [node_log(node_dir, index).name, node_exit_file(node_dir, index).name]
    for name in moved:
        with contextlib.suppress(FileNotFoundError):
            (node_dir / name).rename(archive / name)
    entries = [{"reason": r.reason, "at": r.time.isoformat()} for r in restarts]
    entries.append({"reason": reason, "at": datetime.now(timezone.utc).isoformat()})
    write_json_atomic(node_dir / ATTEMPTS_FILE, entries)
    return attempt + 1
