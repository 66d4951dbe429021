"""`TrainJobTaskRunner` beyond the conformance suite (which runs it on every backend): retries,
leaving a flow on an error, its configuration, and bad input. Local processes, a real Prefect
API."""

from __future__ import annotations

import pickle

import pytest
from conftest import wait_for
from harnesses import LocalHarness
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId
from training_functions import sleep_forever

from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient, TrainJobTaskRunner
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import InvalidFuncArgsError, InvalidInputError


@pytest.fixture
def harness(tmp_path):
    """Local processes; afterwards every job is deleted and nothing of any may be left."""
    local = LocalHarness(tmp_path)
    yield local
    client = TrainerClient(backend_config=local.config())
    for job in client.list_jobs():
        client.delete_job(job.name)
        assert local.leftovers(job.name) == []


@task(retries=1)
def fails_on_first_attempt(marker: str) -> str:
    """Rank 1 fails the first attempt (leaving `marker`); the retry's gang succeeds."""
    import os
    import time

    if os.environ["RANK"] == "1" and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    time.sleep(1)
    return f"rank {os.environ['RANK']} of attempt with marker={os.path.exists(marker)}"


def _children(task_run_id) -> list:
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[task_run_id])
            )
        )


def test_a_retry_runs_a_whole_new_gang(harness, tmp_path):
    @flow(task_runner=TrainJobTaskRunner(backend_config=harness.config(), num_nodes=2))
    def training(marker: str):
        future = fails_on_first_attempt.submit(marker)
        return future.result(), future.task_run_id

    value, task_run_id = training(str(tmp_path / "marker"))
    assert value == "rank 0 of attempt with marker=True"
    # Two TrainJobs, both children of the one task run: the failed gang, then the new one.
    runs = sorted(_children(task_run_id), key=lambda run: run.created)
    assert [run.state.type.value for run in runs] == ["FAILED", "COMPLETED"]
    client = TrainerClient(backend_config=harness.config())
    first, second = (client.get_job(run.name) for run in runs)
    assert first.status == constants.TRAINJOB_FAILED and "first attempt fails" in first.message
    assert [step.status for step in second.steps] == [constants.STEP_SUCCEEDED] * 2


@task
def total_of(step: dict, extra: int) -> float:
    """Runs on every rank: what an upstream job returned, plus `extra`."""
    return step["total"] + extra


@task
def ddp_total(scale: int = 1) -> dict:
    """Rank 0's all-reduced sum of (rank + 1) over a 2-node gang, times `scale`."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    dist.destroy_process_group()
    return {"total": total.item() * scale}


def test_futures_and_wait_for_are_resolved_before_the_job_starts(harness):
    @flow(task_runner=TrainJobTaskRunner(backend_config=harness.config(), num_nodes=2))
    def pipeline():
        first = ddp_total.submit(2)
        second = total_of.submit(first, 1)  # a future as a parameter: its value goes in
        third = ddp_total.submit(10, wait_for=[second])
        return second.result(), third.result(), [f.task_run_id for f in (first, second, third)]

    second, third, ids = pipeline()
    assert (second, third) == (7.0, {"total": 30.0})
    jobs = {run.parent_task_run_id: run for task_run in ids for run in _children(task_run)}
    with get_client(sync_client=True) as prefect:
        first_run, second_run, third_run = (prefect.read_flow_run(jobs[i].id) for i in ids)
    # Each job began only once what it waited on had ended.
    assert second_run.start_time >= first_run.end_time
    assert third_run.start_time >= second_run.end_time


def test_leaving_the_flow_on_an_error_stops_its_running_jobs(harness):
    client = TrainerClient(backend_config=harness.config())
    sleeper = task(sleep_forever)

    @flow(task_runner=TrainJobTaskRunner(backend_config=harness.config(), num_nodes=2))
    def breaks_while_training():
        sleeper.submit(600)
        wait_for(
            lambda: [job for job in client.list_jobs() if job.status == "Running"],
            180,
            "the job to run",
        )
        raise RuntimeError("the flow broke")

    state = breaks_while_training(return_state=True)
    assert state.is_failed() and "the flow broke" in state.message
    [job] = client.list_jobs()
    assert job.status == constants.TRAINJOB_FAILED  # stopped, not left training for 600 s
    assert harness.running(job.name) == []


def test_the_runner_is_configuration_prefect_can_copy_and_pickle(tmp_path):
    config = LocalProcessBackendConfig(jobs_dir=str(tmp_path / "jobs"))
    runner = TrainJobTaskRunner(
        backend_config=config, num_nodes=3, env={"A": "1"}, max_concurrent_jobs=4
    )
    assert runner.duplicate() == runner and runner.duplicate() is not runner
    assert pickle.loads(pickle.dumps(runner)) == runner
    with runner.duplicate() as used:  # started and stopped, as by a flow run
        pass
    copied = pickle.loads(pickle.dumps(used))
    assert copied == runner and copied.duplicate() == runner
    assert runner.duplicate() != TrainJobTaskRunner(backend_config=config, num_nodes=2)
    assert runner.name == "trainjob"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_nodes": 0}, "num_nodes"),
        ({"resources_per_node": {"cpu": "lots"}}, "lots"),
        ({"packages_to_install": ["not a requirement!"]}, "not a requirement!"),
        ({"env": {"A": 1}}, "env"),
        ({"backend_config": "local"}, "backend_config must be a backend configuration block"),
        ({"max_concurrent_jobs": 0}, "max_concurrent_jobs must be an int >= 1"),
        ({"runtime": 3}, "runtime must be a name or a Runtime, got 3"),
    ],
)
def test_bad_runner_configuration_is_refused_before_any_flow_runs(options, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
        TrainJobTaskRunner(**options)


def test_bad_task_input_fails_the_task_run_and_creates_no_job(harness):
    @task
    def takes_anything(value) -> None:
        print(value)

    @task
    async def asynchronous() -> None:
        return None

    @task
    def generator():
        yield 1

    @flow(task_runner=TrainJobTaskRunner(backend_config=harness.config(), num_nodes=2))
    def training():
        future = takes_anything.submit({1, 2})
        future.wait()
        with pytest.raises(InvalidFuncArgsError, match="JSON"):
            future.result()
        with pytest.raises(InvalidInputError, match="'asynchronous' is async"):
            asynchronous.submit()
        with pytest.raises(InvalidInputError, match="'generator' is a generator"):
            generator.submit()

    training()
    assert TrainerClient(backend_config=harness.config()).list_jobs() == []
