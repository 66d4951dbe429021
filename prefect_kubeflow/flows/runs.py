"""The link between a TrainJob and its Prefect flow run, found from Prefect itself.

A job's flow run is named after the job, tagged ``prefect-kubeflow`` and labelled with the job
and with the process running it (``host:pid:start``). A flow run whose process died cannot
close itself: reading the job starts a new process that settles it, on every backend.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, State

from prefect_kubeflow import constants
from prefect_kubeflow.backends import processes
from prefect_kubeflow.flows import server

JOB_LABEL = "prefect-kubeflow.io/trainjob"
SUPERVISOR_LABEL = "prefect-kubeflow.io/supervisor"
_PAGE = 100
logger = logging.getLogger(__name__)


def _pid_namespace() -> str:
    """This process's PID namespace: a pid means the same process only within one."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "?"


def this_process() -> str:
    """This process as a flow run's label names it: ``host:pid:start:pid-namespace``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{processes.start_time(pid)}:{_pid_namespace()}"


def process_died(identity: str) -> bool:
    """Whether the process a label names is known to be gone: only one of this host and PID
    namespace can be judged (a container sharing the host's name has its own pids)."""
    parts = identity.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or parts[3] != _pid_namespace():
        return False
    pid, start = parts[1], parts[2]
    if not pid.isdigit() or not start.isdigit():
        return False
    return not processes.is_alive(int(pid), int(start))


def node_task_run_name(node_index: int, attempt: int) -> str:
    """A node's task run: ``node-<i>`` on the first attempt, ``node-<i> (attempt n)`` after
    gang restarts, so each attempt shows in the Prefect UI."""
    name = f"{constants.NODE}-{node_index}"
    return name + (f" (attempt {attempt + 1})" if attempt else "")


def label_flow_run(flow_run_id: UUID, job_name: str) -> None:
    """Mark the flow run as job `job_name`'s, run by this process."""
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(
            flow_run_id, {JOB_LABEL: job_name, SUPERVISOR_LABEL: this_process()}
        )


def api_url() -> str | None:
    """The Prefect API at hand: the configured one, else the embedded server if it runs
    (nothing is started to answer a read)."""
    return PREFECT_API_URL.value() or server.running_server_url()


@contextmanager
def _prefect_api(strict: bool = False) -> Iterator[SyncPrefectClient | None]:
    """A client of the Prefect API at hand (None when there is none). An API that does not
    answer ends the block with a warning, not an error (a job's views never depend on
    Prefect), unless `strict`."""
    url = api_url()
    if not url:
        yield None
        return
    try:
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            yield client
    except httpx.HTTPError as exc:
        if strict:
            raise
        logger.warning("the Prefect API at %s did not answer: %s", url, exc)


def supervisor_of(run: FlowRun) -> tuple[str, int, int] | None:
    """(label, pid, start time) of the process running the flow run, from its label."""
    identity = str((run.labels or {}).get(SUPERVISOR_LABEL) or "")
    parts = identity.split(":")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return identity, int(parts[1]), int(parts[2])


def find_flow_runs(names: Iterable[str], strict: bool = False) -> dict[str, FlowRun]:
    """The newest flow run of each job in `names` that has one; {} with no API at hand (or
    answering: `strict` raises then)."""
    names = list(names)
    runs: list[FlowRun] = []
    with _prefect_api(strict) as client:
        if client is None or not names:
            return {}
        fetched: list[FlowRun] = []
        for start in range(0, len(names), _PAGE):  # the API caps one answer's length
            fetched += client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=names[start : start + _PAGE]),
                    tags=FlowRunFilterTags(all_=[constants.FLOW_RUN_TAG]),
                ),
                limit=_PAGE,
            )
        runs = fetched
    return {run.name: run for run in sorted(runs, key=lambda r: r.created or 0)}


def lost_flow_runs(names: Iterable[str]) -> list[str]:
    """The jobs among `names` whose flow run has not ended although the process running it
    died: a new supervisor must settle it."""
    lost = []
    for name, run in find_flow_runs(names).items():
        supervisor = supervisor_of(run)
        if run.state is None or run.state.is_final() or supervisor is None:
            continue
        if process_died(supervisor[0]):
            lost.append(name)
    return lost


def close_flow_run(flow_run_id: UUID, state: State) -> None:
    """Give the flow run its final `state` unless it already has one."""
    with _prefect_api() as client:
        if client is None:
            return
        run = client.read_flow_run(flow_run_id)
        if run.state is None or not run.state.is_final():
            client.set_flow_run_state(flow_run_id, state, force=True)


def await_final(run: FlowRun, timeout: float) -> FlowRun:
    """The flow run once it has ended, or as it is after `timeout` seconds (at once when the
    process running it is gone)."""
    supervisor = supervisor_of(run)
    if supervisor is not None and process_died(supervisor[0]):
        return run
    deadline = time.monotonic() + timeout
    with _prefect_api() as client:
        while client is not None and run.state is not None and not run.state.is_final():
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            run = client.read_flow_run(run.id)
    return run


def await_deleted(run: FlowRun, timeout: float) -> None:
    """After its job was deleted, let the flow run close itself Cancelled (its nodes' tasks
    see the job gone); close it so if it has not within `timeout` seconds."""
    run = await_final(run, timeout)
    if run.state is not None and not run.state.is_final():
        close_flow_run(run.id, Cancelled(message=f"TrainJob {run.name!r} was deleted"))
