"""A job's folder on the host, shared by the backends whose nodes run on this machine:
the shipped function, the process that owns the job (``owner.json``: its supervisor, or the
calling process for a subflow), the flow-run file, per-node logs and exit files, the ranks'
tracebacks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect_kubeflow import constants
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.base import JobSpec, SupervisorCommand
from prefect_kubeflow.backends.logfile import STDERR, read_node_log
from prefect_kubeflow.files import write_json_atomic

FLOW_RUN_FILE = "flow_run.json"
OWNER_FILE = "owner.json"


def write_function(job_dir: Path, spec: JobSpec) -> None:
    """Ship the training function: its source and its name and JSON arguments."""
    (job_dir / "function.py").write_text(spec.function_source)
    write_json_atomic(
        job_dir / "function.json", {"name": spec.function_name, "args": spec.func_args}
    )


def start_owner(
    job_dir: Path, supervisor: SupervisorCommand | None, lower_priority: bool = False
) -> None:
    """Start `supervisor` detached (its output in ``supervisor.log``) as the job's owner, or
    record this process as the owner when there is none (a subflow runs the job).
    `lower_priority`: the supervisor yields the CPU at once (its nodes are not its children)."""
    owner: dict[str, Any] = {"pid": os.getpid(), "kind": "inline"}
    if supervisor is not None:
        with open(job_dir / "supervisor.log", "wb") as log:
            child = subprocess.Popen(
                supervisor.argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert child.stdin is not None
        with child.stdin:
            child.stdin.write(supervisor.stdin)
        if lower_priority:
            processes.lower_priority(child.pid, whole_session=True)
        owner = {"pid": child.pid, "kind": "supervisor"}
    write_json_atomic(job_dir / OWNER_FILE, {**owner, "start": processes.start_time(owner["pid"])})


def read_owner(job_dir: Path) -> dict[str, Any] | None:
    """``{"pid", "kind", "start"}`` of the job's owner, if recorded."""
    path = job_dir / OWNER_FILE
    try:
        owner = dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    # Without a start time a pid could name any process: never signal or trust it.
    return owner if isinstance(owner.get("pid"), int) and owner.get("start") else None


def owner_alive(job_dir: Path) -> bool:
    """Whether the process that owns the job still runs."""
    owner = read_owner(job_dir)
    return owner is not None and processes.is_alive(owner["pid"], owner["start"])


def stop_supervisor(
    job_dir: Path, running: bool, grace_period: float, stop_nodes: Callable[[], object]
) -> None:
    """Delete-time teardown. For a running job, ask its live supervisor to cancel (it stops
    the nodes and closes its flow run Cancelled) and wait for it; then `stop_nodes`; then kill a
    supervisor still there. The supervisor of an ended job only finishes uploading: let it."""
    owner = read_owner(job_dir) or {}
    pid: int = owner.get("pid") or 0
    start = owner.get("start")
    supervised = running and owner.get("kind") == "supervisor" and pid > 0
    if supervised and processes.is_alive(pid, start):
        _signal(pid, processes.CANCEL_SIGNAL)
        deadline = time.monotonic() + grace_period + 5
        while processes.is_alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.05)
    stop_nodes()
    if supervised and processes.is_alive(pid, start):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def read_flow_run(job_dir: Path) -> dict[str, Any] | None:
    """``{"id": ..., "closed": ...}`` of the job's flow run, once it has one."""
    path = job_dir / FLOW_RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_flow_run(job_dir: Path, flow_run_id: str, closed: bool) -> None:
    """Remember the job's flow run; `closed` once its run is over."""
    write_json_atomic(job_dir / FLOW_RUN_FILE, {"id": flow_run_id, "closed": closed})


def flow_run_id(job_dir: Path) -> str | None:
    """The id of the job's flow run, once it has one."""
    flow_run = read_flow_run(job_dir) if job_dir.is_dir() else None
    return str(flow_run["id"]) if flow_run else None


def lost_flow_run_id(job_dir: Path) -> str | None:
    """The flow run of a job whose owner died before closing it."""
    flow_run = read_flow_run(job_dir) if job_dir.is_dir() else None
    if flow_run is None or flow_run["closed"] or owner_alive(job_dir):
        return None
    return str(flow_run["id"])


def node_log(job_dir: Path, node_index: int) -> Path:
    """The node's log file (written by its keeper)."""
    return job_dir / f"{constants.NODE}-{node_index}.log"


def node_exit_file(job_dir: Path, node_index: int) -> Path:
    """The node's exit file, written by its keeper once the log is complete."""
    return job_dir / f"{constants.NODE}-{node_index}.exit"


def node_failure(job_dir: Path, node_index: int, code: int, nproc_per_node: int) -> str:
    """Why a node failed: how it ended, then a rank's traceback or the node's last stderr."""
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    header = f"{constants.NODE}-{node_index} {how}"
    first_rank = node_index * nproc_per_node
    for global_rank in range(first_rank, first_rank + nproc_per_node):
        error = job_dir / "errors" / f"rank-{global_rank}.txt"
        if error.exists():
            return f"{header}; rank {global_rank} raised:\n{error.read_text().rstrip()}"
    lines = list(read_node_log(node_log(job_dir, node_index), tail_lines=200))
    errors = [line.text for line in lines if line.stream == STDERR][-20:]
    return header + ("\n" + "\n".join(errors) if errors else "")
