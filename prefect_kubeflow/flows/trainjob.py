"""The ``trainjob`` flow: one flow run per TrainJob, one ``node-<i>`` task run per node.

The flow is the plan: create the job unless it exists (a deployment or a task runner hands it a
spec alone; `TrainerClient.train()` has created it already), watch every node in its own task
forwarding its log, tear the gang down when a node fails, and clean up (``auto_remove``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from prefect import flow, get_client, get_run_logger, tags, task
from prefect.client.orchestration import SyncPrefectClient
from prefect.context import FlowRunContext, TagsContext, TaskRunContext
from prefect.exceptions import ObjectNotFound, TerminationSignal
from prefect.flow_engine import run_flow_sync
from prefect.futures import wait
from prefect.runtime import flow_run as flow_run_runtime
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Cancelled, Pending, State
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend, JobSpec
from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.backends.status import is_active, restart_pending
from prefect_kubeflow.blocks.base import TrainingBackendConfig
from prefect_kubeflow.errors import BackendError, JobFailedError, JobResultError
from prefect_kubeflow.flows.artifacts import publish_progress
from prefect_kubeflow.flows.cancellation import (
    CANCELLED_FROM_PREFECT,
    watch_for_cancellation,
)
from prefect_kubeflow.flows.gang import (
    cancel_job,
    finish,
    record_watcher,
    remove,
    restart_gang,
    watch_node,
    why_cancelled,
)
from prefect_kubeflow.flows.logs import forward_lines
from prefect_kubeflow.flows.runs import label_flow_run, node_task_run_name
from prefect_kubeflow.types import TrainJob

MAX_NODES = 256
PARENT_TASK_RUN_TIMEOUT = 60.0


@task(name="node", task_run_name="node-{node_index}")
def run_node(
    job_name: str, node_index: int, backend_config: TrainingBackendConfig
) -> str | State[Any] | None:
    """Watch one node until it ends, forwarding its log; fail (and stop the job) on failure,
    end Cancelled when the job was cancelled or deleted."""
    context = TaskRunContext.get()
    assert context is not None and context.task_run.flow_run_id is not None
    flow_run_id, task_run_id = context.task_run.flow_run_id, context.task_run.id
    node = f"{constants.NODE}-{node_index}"

    def forward(lines: Iterable[LogLine]) -> None:
        forward_lines(lines, flow_run_id, task_run_id, node)

    backend = backend_config.get_backend()
    phase = watch_node(backend, job_name, node_index, forward)
    if phase is None:
        return Cancelled(message=f"TrainJob {job_name!r} was deleted")
    if phase == constants.STEP_FAILED:
        cancelled = why_cancelled(backend, job_name)
        if cancelled is not None:
            return Cancelled(message=f"TrainJob {job_name!r}: {cancelled}")
        raise JobFailedError(job_name, f"{node} failed")
    return phase


def _node_task(node_index: int, attempt: int) -> Any:
    """The node task, named ``node-<i>`` on the first attempt and ``node-<i> (attempt n)``
    after gang restarts, so each attempt shows in the Prefect UI."""
    return run_node.with_options(task_run_name=node_task_run_name(node_index, attempt))


def _name_of(job: JobSpec | str | dict[str, Any]) -> str:
    """The name of `job`: a name, a spec, or a spec as a deployment's JSON parameter."""
    if isinstance(job, str):
        return job
    return str(job["name"]) if isinstance(job, dict) else job.name


def _job_name() -> str:
    """The flow run's name: its job's."""
    return _name_of(flow_run_runtime.parameters["job"])


# Every node needs its own thread at once (each mostly waits); threads start on demand.
@flow(
    name="trainjob",
    flow_run_name=_job_name,
    retries=0,
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_NODES),  # type: ignore[arg-type]
)
def trainjob(
    job: JobSpec | str, backend_config: TrainingBackendConfig, require_result: bool = False
) -> Any:
    """Run the TrainJob `job` (a spec, or the name of a job already created) to its end; its
    nodes are ``node-<i>`` tasks.

    When a node fails and the job has restarts left, the gang restarts: each attempt gets its
    own ``node-<i>`` task runs. Returns rank 0's return value (kept with Prefect's result
    storage where results persist); raises `JobFailedError` when a node fails (and no restart
    remains), and ends Cancelled when the job is deleted while it runs. A value that cannot be
    read here (a class this interpreter cannot import, over 4 KiB on Kubernetes) is logged and
    None returned, unless `require_result` (a task runner's future needs it): then the flow
    fails with `JobResultError`.
    """
    backend = backend_config.get_backend()
    name = _name_of(job)
    if isinstance(job, JobSpec):
        backend.ensure_created(job)
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    flow_run_id = context.flow_run.id
    _link_flow_run(backend, name, flow_run_id)
    final = backend.describe(name)
    if final is None:
        return Cancelled(message=f"no TrainJob {name!r}: it was deleted, or never created")
    record_watcher(backend, name)  # this process restarts the gang
    with (
        watch_for_cancellation(
            flow_run_id, lambda: cancel_job(backend, name, CANCELLED_FROM_PREFECT)
        ) as watch,
        publish_progress(backend, name, flow_run_id),
    ):
        try:
            _run_attempts(backend_config, name, final)
            # Still running here only if a node's task ended before its node (an engine error).
            final = finish(backend, name, auto_remove=False)
        except (TerminationSignal, KeyboardInterrupt) as exc:
            # A runner or worker cancelling the run signals this process only, never the nodes.
            cancel_job(backend, name, _why_interrupted(exc, watch.cancelled.is_set()))
            raise
    if final is None:
        return Cancelled(message=f"TrainJob {name!r} was deleted")
    try:
        if final.status != constants.TRAINJOB_COMPLETE:
            cancelled = why_cancelled(backend, name)
            if cancelled is not None:
                return Cancelled(message=f"TrainJob {name!r}: {cancelled}")
            raise JobFailedError(name, final.message or f"status {final.status}")
        try:
            return backend.job_result(name)
        except (JobResultError, BackendError) as exc:
            if require_result:
                raise JobResultError(f"TrainJob {name!r} completed: {exc}") from exc
            get_run_logger().warning("TrainJob %s completed; its result is lost: %s", name, exc)
            return None
    finally:  # the result is read first: removing the job removes it
        if backend_config.auto_remove:
            remove(backend, name)


def _link_flow_run(backend: Backend, name: str, flow_run_id: UUID) -> None:
    """Label the flow run with its job and this process, and the job with its flow run."""
    label_flow_run(flow_run_id, name)
    try:
        backend.record_flow_run(name, str(flow_run_id))
    except BackendError as exc:  # a link for people to follow; the job runs without it
        get_run_logger().warning("could not record the flow run on TrainJob %s: %s", name, exc)


def _run_attempts(backend_config: TrainingBackendConfig, name: str, job: TrainJob) -> None:
    """Watch every node of each attempt in its own ``node-<i>`` task run, restarting the gang
    while a restart is due."""
    backend = backend_config.get_backend()
    current: TrainJob | None = job
    while current is not None:
        wait(
            [
                _node_task(i, current.attempt).submit(name, i, backend_config)
                for i in range(current.num_nodes)
            ]
        )
        current = backend.describe(name)
        if current is None or not restart_pending(current):
            return
        current = restart_gang(backend, name)  # the next attempt: new node-<i> task runs
        if current is None or not is_active(current.status):  # it could not restart
            return


def _why_interrupted(exc: BaseException, seen_cancel: bool) -> str:
    """Why the flow's process was told to stop, known at once (the nodes stop before the
    runner's grace period ends): a cancel from Prefect (seen by this flow, or the intent a
    runner sends before its SIGTERM), else the signal or Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt):
        return "stopped: the process running its flow was interrupted"
    if seen_cancel or _runner_intent() == "cancel":
        return CANCELLED_FROM_PREFECT
    return "stopped: the process running its flow was sent SIGTERM"


def _runner_intent() -> str | None:
    """What the runner said its SIGTERM means (Prefect's control channel), if it said."""
    try:
        from prefect._internal import control_listener

        return control_listener.get_intent()
    except (ImportError, AttributeError):  # an internal API: absent is "unknown"
        return None


def run_trainjob(
    job: JobSpec | str,
    backend_config: TrainingBackendConfig,
    *,
    parent_task_run_id: UUID | None = None,
    return_state: bool = False,
) -> Any:
    """Run `trainjob` as a flow run named after the job, tagged for the Prefect UI.

    Inside a user's own flow this is a subflow, blocking until the job ends; with
    `parent_task_run_id` (a task run of `TrainJobTaskRunner`) it is that task run's child,
    and it fails when rank 0's value cannot be read.
    """
    name = _name_of(job)
    settings: dict[Any, Any] = {}
    if FlowRunContext.get() is not None:
        # Nested in a flow run whose process beats. Prefect joins a run's heartbeat thread at
        # its end (polling each second), which would hold up every job's end; a child whose
        # process died is closed Crashed by the next read of its job (its supervisor label).
        settings[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    with tags(constants.FLOW_RUN_TAG), temporary_settings(settings):
        if parent_task_run_id is None:
            if return_state:
                return trainjob(job, backend_config, return_state=True)
            return trainjob(job, backend_config)
        parameters: dict[str, Any] = {
            "job": job,
            "backend_config": backend_config,
            "require_result": True,
        }
        with get_client(sync_client=True) as client:
            _await_task_run(client, parent_task_run_id)
            flow_run = client.create_flow_run(
                flow=trainjob,
                name=name,
                parameters=trainjob.serialize_parameters(parameters),
                parent_task_run_id=parent_task_run_id,
                tags=TagsContext.get().current_tags,
                state=Pending(),
            )
        return run_flow_sync(
            trainjob,
            flow_run=flow_run,
            parameters=parameters,
            return_type="state" if return_state else "result",
        )


def _await_task_run(client: SyncPrefectClient, task_run_id: UUID) -> None:
    """Wait until the server has recorded the task run (task runs reach it as events, a
    moment after they start): a flow run's parent must exist."""
    deadline = time.monotonic() + PARENT_TASK_RUN_TIMEOUT
    while True:
        try:
            client.read_task_run(task_run_id)
            return
        except ObjectNotFound as exc:
            if time.monotonic() > deadline:
                raise BackendError(
                    f"the Prefect server has not recorded task run {task_run_id} after "
                    f"{PARENT_TASK_RUN_TIMEOUT:.0f} s, so its TrainJob's flow run cannot be its "
                    "child; is the server overloaded?"
                ) from exc
            time.sleep(0.05)
