"""The ``trainjob`` flow: one flow run per TrainJob, one ``node-<i>`` task run per node.

The flow is the plan: record the flow run on the job, start the nodes (unless the supervisor
already did, before Prefect was even imported), watch every node in its own task, fail the job
when any node fails and tear the others down at once (gang semantics).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_client, tags, task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import wait
from prefect.states import Cancelled, State
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_kubeflow import constants
from prefect_kubeflow.backends import backend_for
from prefect_kubeflow.blocks import BackendConfig
from prefect_kubeflow.errors import JobFailedError
from prefect_kubeflow.flows.gang import cancel_requested, watch_node
from prefect_kubeflow.flows.logs import forward_lines

MAX_NODES = 256


def backend_settings(config: BackendConfig) -> dict[str, Any]:
    """A configuration block's fields as the plain mapping backends take.

    Without the runtime source: the client resolves runtimes before a job exists, so backends
    never need it (and it may hold a token that must not reach a process's argv).
    """
    return config.model_dump(include=set(type(config).model_fields) - {"runtime_source"})


@task(name="node", task_run_name="node-{node_index}")
def run_node(job_name: str, node_index: int, backend_config: BackendConfig) -> int:
    """Watch one node until it ends, forwarding its log; fail (and stop the job) on failure."""
    backend = backend_for(type(backend_config).__name__, backend_settings(backend_config))
    context = TaskRunContext.get()
    assert context is not None and context.task_run.flow_run_id is not None
    lines = backend.node_logs(job_name, node_index, follow=True, tail_lines=None)
    forward_lines(lines, context.task_run.flow_run_id, context.task_run.id, f"node-{node_index}")
    code = watch_node(backend, job_name, node_index)
    if code != 0:
        raise JobFailedError(job_name, f"node-{node_index} exited with code {code}")
    return code


@flow(name="trainjob", retries=0, persist_result=False)
def trainjob(job_name: str, backend_config: BackendConfig) -> dict[str, Any] | State:
    """Run the recorded TrainJob `job_name` to its end; its nodes are ``node-<i>`` tasks.

    Returns the job's name and final status; raises `JobFailedError` when a node fails.
    """
    backend = backend_for(type(backend_config).__name__, backend_settings(backend_config))
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    flow_run_id = str(context.flow_run.id)
    backend.set_flow_run(job_name, flow_run_id)
    try:
        backend.start_job(job_name)
        num_nodes = backend.get_job(job_name).num_nodes
        futures = [run_node.submit(job_name, i, backend_config) for i in range(num_nodes)]
        wait(futures)
        job = backend.get_job(job_name)
    finally:
        # Whatever happens next, this process closes the run: it is not lost.
        backend.set_flow_run(job_name, flow_run_id, closed=True)
    if cancel_requested.is_set():
        return Cancelled(message=f"TrainJob {job_name!r} was deleted")
    if job.status != constants.TRAINJOB_COMPLETE:
        raise JobFailedError(job_name, job.message or f"status {job.status}")
    return {"name": job_name, "status": job.status}


def run_trainjob(job_name: str, backend_config: BackendConfig, return_state: bool = False) -> Any:
    """Run `trainjob` as a flow run named after the job, tagged for the Prefect UI.

    Inside a user's own flow this is a subflow, blocking until the job ends.
    """
    # Every node needs its own thread at once (each mostly waits); threads start on demand.
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=MAX_NODES)
    configured = trainjob.with_options(flow_run_name=job_name, task_runner=runner)  # type: ignore[arg-type]
    with tags(constants.FLOW_RUN_TAG):
        if return_state:
            return configured(job_name, backend_config, return_state=True)
        return configured(job_name, backend_config)


def close_flow_run(flow_run_id: str, state: State) -> None:
    """Set the flow run's final `state` (Cancelled, Crashed) unless it already ended."""
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        if flow_run.state is None or not flow_run.state.is_final():
            client.set_flow_run_state(UUID(flow_run_id), state, force=True)
