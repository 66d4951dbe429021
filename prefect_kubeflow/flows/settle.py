"""Settling a TrainJob's flow run when the process running its flow could not: after a Prefect
outage outlasted the flow engine's retries, or when that process died.

Settling delivers every node line the API lacks (following nodes still running), watches the
gang to its end, then gives the node task runs and the flow run the job's true final state.
It is what a supervisor does after its flow, and what a new supervisor does for a job whose
supervisor died (`runs.adopt_lost_flow_runs` starts one).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.states import Cancelled, Completed, Failed, State

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend
from prefect_kubeflow.backends.status import is_active
from prefect_kubeflow.flows.cancellation import (
    CANCELLED_FROM_PREFECT,
    is_cancelling,
    watch_for_cancellation,
)
from prefect_kubeflow.flows.gang import cancel_job, finish, why_cancelled
from prefect_kubeflow.flows.logs import forward_lines
from prefect_kubeflow.flows.runs import find_flow_runs, node_task_run_name
from prefect_kubeflow.types import TrainJob

RETRY_SECONDS = 5.0
_PAGE = 200
EVENTS_GRACE_SECONDS = 15.0
SETTLE_TIMEOUT = 24 * 3600.0  # how long a supervisor waits for an API that is down
logger = logging.getLogger(__name__)


def _node_task_runs(flow_run_id: UUID) -> dict[str, TaskRun]:
    """The flow run's task runs by name, every page of them."""
    task_runs: list[TaskRun] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=_PAGE,
                offset=len(task_runs),
            )
            task_runs += page
            if len(page) < _PAGE:
                return {run.name: run for run in task_runs}


def _is_settled(flow_run: FlowRun, task_runs: dict[str, TaskRun]) -> bool:
    states = [flow_run.state, *(run.state for run in task_runs.values())]
    return all(state is not None and state.is_final() for state in states)


def _forward_all(backend: Backend, name: str, flow_run_id: UUID, job: TrainJob) -> None:
    """Deliver what the API lacks of each node of the current attempt, every node at once,
    following those still running."""
    task_runs = _node_task_runs(flow_run_id)
    threads = []
    for index in range(job.num_nodes):
        task_run = task_runs.get(node_task_run_name(index, job.attempt))
        if task_run is None:  # the flow died before it ran this node's task
            logger.warning("TrainJob %s has no task run for node %s", name, index)
            continue
        node = f"{constants.NODE}-{index}"
        lines = backend.node_logs(name, index, follow=True)
        thread = threading.Thread(
            target=contextvars.copy_context().run,  # this process's Prefect settings
            args=(forward_lines, lines, flow_run_id, task_run.id, node),
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()


def _final_states(backend: Backend, name: str, job: TrainJob | None) -> tuple[State, State]:
    """The true final state of the job's flow run, and of a node's task run that did not
    end by itself."""
    if job is None:
        gone: State = Cancelled(message=f"TrainJob {name!r} was deleted")
        return gone, gone
    if job.status == constants.TRAINJOB_COMPLETE:
        return Completed(), Completed()
    cancelled = why_cancelled(backend, name)
    if cancelled is not None:
        state: State = Cancelled(message=f"TrainJob {name!r}: {cancelled}")
        return state, state
    why = job.message or "no reason recorded"
    failed: State = Failed(message=f"TrainJob {name!r} failed: {why}")
    return failed, failed


def settle(backend: Backend, name: str, flow_run: FlowRun, auto_remove: bool = False) -> None:
    """Finish the job's flow run as its flow would have: every line delivered, the gang
    watched to its end, the node task runs and the flow run in the job's final state."""
    task_runs = _node_task_runs(flow_run.id)
    if flow_run.state is not None and flow_run.state.is_final():
        # Its task runs' last states reach the server as events, a moment after the flow's.
        deadline = time.monotonic() + EVENTS_GRACE_SECONDS
        while not _is_settled(flow_run, task_runs) and time.monotonic() < deadline:
            time.sleep(0.5)
            task_runs = _node_task_runs(flow_run.id)
    if _is_settled(flow_run, task_runs):
        return
    job = backend.describe(name)
    if job is not None:
        # Cancelled from Prefect before, or while, this process settles it: stop the nodes.
        if is_cancelling(flow_run) and is_active(job.status):
            cancel_job(backend, name, CANCELLED_FROM_PREFECT)
        stop = lambda: cancel_job(backend, name, CANCELLED_FROM_PREFECT)  # noqa: E731
        with watch_for_cancellation(flow_run.id, stop):
            _forward_all(backend, name, flow_run.id, job)
            job = finish(backend, name, auto_remove=False)
    run_state, node_state = _final_states(backend, name, job)
    with get_client(sync_client=True) as client:
        for task_run in _node_task_runs(flow_run.id).values():
            if task_run.state is None or not task_run.state.is_final():
                state = _node_final_state(job, task_run, node_state)
                client.set_task_run_state(task_run.id, state, force=True)
        current = client.read_flow_run(flow_run.id)
        if current.state is None or not current.state.is_final():
            client.set_flow_run_state(flow_run.id, run_state, force=True)
    if job is not None and auto_remove:
        backend.delete(name)


def _node_final_state(job: TrainJob | None, task_run: TaskRun, fallback: State) -> State:
    """A node task run's final state: its node's phase when the job shows it."""
    if job is None or fallback.is_cancelled():
        return fallback
    for index, step in enumerate(job.steps):
        if task_run.name == node_task_run_name(index, job.attempt):
            if step.status == constants.STEP_SUCCEEDED:
                return Completed()
            if step.status == constants.STEP_FAILED:
                return Failed(message=f"{step.name} failed")
    return fallback


def settle_when_reachable(backend: Backend, name: str, auto_remove: bool = False) -> None:
    """`settle` the job's flow run, waiting for the Prefect API while it is down, for up to
    `SETTLE_TIMEOUT` seconds, or until the job is deleted (its deleter closes the run)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            flow_run = find_flow_runs([name], strict=True).get(name)
            if flow_run is not None:
                settle(backend, name, flow_run, auto_remove)
            return
        except Exception as exc:  # the API is down: training went on; try again later
            logger.warning("settling TrainJob %s's flow run failed (%s); retrying", name, exc)
            if time.monotonic() > deadline or backend.describe(name) is None:
                logger.error("TrainJob %s's flow run stays unsettled", name)
                if auto_remove:
                    backend.delete(name)
                return
            time.sleep(RETRY_SECONDS)
