"""The ``trainjob`` flow: one flow run per TrainJob, one ``node-<i>`` task run per node.

The flow is the plan: create the job unless it exists (a deployment or a task runner hands it a
spec alone; `TrainerClient.train()` has created it already), watch every node in its own task
forwarding its log, tear the gang down when a node fails, and clean up (``auto_remove``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import wait
from prefect.states import Cancelled, State
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import JobSpec
from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.blocks.base import TrainingBackendConfig
from prefect_kubeflow.errors import BackendError, JobFailedError
from prefect_kubeflow.flows.gang import finish, watch_node
from prefect_kubeflow.flows.logs import forward_lines
from prefect_kubeflow.flows.runs import label_flow_run

MAX_NODES = 256


@task(name="node", task_run_name="node-{node_index}")
def run_node(job_name: str, node_index: int, backend_config: TrainingBackendConfig) -> str | None:
    """Watch one node until it ends, forwarding its log; fail (and stop the job) on failure."""
    context = TaskRunContext.get()
    assert context is not None and context.task_run.flow_run_id is not None
    flow_run_id, task_run_id = context.task_run.flow_run_id, context.task_run.id
    node = f"{constants.NODE}-{node_index}"

    def forward(lines: Iterable[LogLine]) -> None:
        forward_lines(lines, flow_run_id, task_run_id, node)

    phase = watch_node(backend_config.get_backend(), job_name, node_index, forward)
    if phase == constants.STEP_FAILED:
        raise JobFailedError(job_name, f"{node} failed")
    return phase


@flow(name="trainjob", retries=0, persist_result=False)
def trainjob(job: JobSpec | str, backend_config: TrainingBackendConfig) -> dict[str, Any] | State:
    """Run the TrainJob `job` (a spec, or the name of a job already created) to its end; its
    nodes are ``node-<i>`` tasks.

    Returns the job's name and final status; raises `JobFailedError` when a node fails, and
    ends Cancelled when the job is deleted while it runs.
    """
    backend = backend_config.get_backend()
    name = job if isinstance(job, str) else job.name
    if isinstance(job, JobSpec):
        backend.ensure_created(job)
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    label_flow_run(context.flow_run.id, name)
    try:
        backend.record_flow_run(name, str(context.flow_run.id))
    except BackendError as exc:  # a link for people to follow; the job runs without it
        get_run_logger().warning("could not record the flow run on TrainJob %s: %s", name, exc)
    final = backend.describe(name)
    if final is None:
        return Cancelled(message=f"no TrainJob {name!r}: it was deleted, or never created")
    wait([run_node.submit(name, i, backend_config) for i in range(final.num_nodes)])
    # Still running here only if a node's task ended before its node (an engine error).
    final = finish(backend, name, backend_config.auto_remove)
    if final is None:
        return Cancelled(message=f"TrainJob {name!r} was deleted")
    if final.status != constants.TRAINJOB_COMPLETE:
        raise JobFailedError(name, final.message or f"status {final.status}")
    return {"name": name, "status": final.status}


def run_trainjob(
    job: JobSpec | str, backend_config: TrainingBackendConfig, return_state: bool = False
) -> Any:
    """Run `trainjob` as a flow run named after the job, tagged for the Prefect UI.

    Inside a user's own flow this is a subflow, blocking until the job ends.
    """
    name = job if isinstance(job, str) else job.name
    # Every node needs its own thread at once (each mostly waits); threads start on demand.
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=MAX_NODES)
    configured = trainjob.with_options(flow_run_name=name, task_runner=runner)  # type: ignore[arg-type]
    with tags(constants.FLOW_RUN_TAG):
        if return_state:
            return configured(job, backend_config, return_state=True)
        return configured(job, backend_config)
