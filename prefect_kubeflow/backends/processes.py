"""Finding and stopping a job's processes by the marker in their environment.

Every process of a job carries ``PREFECT_KUBEFLOW_JOB_ID=<id>`` in its environment, including
torchrun workers that start their own sessions, so a job's whole tree is found from any process,
even after a parent died. Linux (/proc) only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

JOB_ID_ENV = "PREFECT_KUBEFLOW_JOB_ID"
# Niceness of processes that only keep books (supervisors, the embedded Prefect server):
# training comes first on a busy machine.
BOOKKEEPING_NICENESS = 19
logger = logging.getLogger(__name__)


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the command name, which may itself contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(pid: int, started: int | None) -> bool:
    """Whether the process `pid` that started at `started` still runs (not a reused pid)."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def find_marked(job_id: str) -> list[int]:
    """The pids of every live process whose environment carries this job's marker."""
    marker = f"{JOB_ID_ENV}={job_id}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ and start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def signal_process(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to `pid`; a process that is already gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        signal_process(pid, sig)


def kill_marked(job_id: str, grace_period: float) -> list[int]:
    """SIGTERM every process of the job, SIGKILL what is left after `grace_period`.

    Returns the pids that were found.
    """
    pids = find_marked(job_id)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_period
    while (alive := find_marked(job_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        logger.warning("processes %s of job %s ignored SIGTERM; killing", alive, job_id)
        _signal_all(alive, signal.SIGKILL)
        deadline = time.monotonic() + grace_period
        while find_marked(job_id) and time.monotonic() < deadline:
            time.sleep(0.05)
    return pids


def lower_priority(pid: int, whole_session: bool = False) -> None:
    """Let process `pid` yield the CPU to training: niceness `BOOKKEEPING_NICENESS`, and with
    `whole_session` the same for its session's autogroup. Linux ranks sessions against each
    other by their autogroup's nice value, so a niced process alone in its session (setsid)
    would otherwise still take an equal share of the CPU from the nodes."""
    os.setpriority(os.PRIO_PROCESS, pid, BOOKKEEPING_NICENESS)
    if whole_session:
        with contextlib.suppress(OSError):  # no autogroup support: niceness alone
            Path(f"/proc/{pid}/autogroup").write_text(str(BOOKKEEPING_NICENESS))
