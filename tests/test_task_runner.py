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

    @flow(task_runner=TrainJobTaskRunner(backend_config=harness.config(), num_nodes=2))
    def training():
        future = takes_anything.submit({1, 2})
        future.wait()
        with pytest.raises(InvalidFuncArgsError, match="JSON"):
            future.result()
        with pytest.raises(InvalidInputError, match="'asynchronous' is async"):
            asynchronous.submit()

    training()
    assert TrainerClient(backend_config=harness.config()).list_jobs() == []
