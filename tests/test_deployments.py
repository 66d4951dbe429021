"""The project on a real `prefect server start`, as a Prefect user drives it: the block types in
its catalog, and the deployments of `deployments/prefect.yaml` registered with `prefect deploy`,
run by a `process` work pool's worker on schedule and on demand (local backend)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient
from prefect_kubeflow.constants import constants
from prefect_kubeflow.flows.server import ensure_server, stop_server

REPO = Path(__file__).resolve().parents[1]
BLOCK_TYPES = {
    "kubeflow-local-process-backend",
    "kubeflow-container-backend",
    "kubeflow-kubernetes-backend",
    "kubeflow-training-runtime-source",
}
POOL = "kubeflow-training"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `prefect server start` on 127.0.0.1 with its own database, started after the package
    was installed (as a user's would be), its scheduler looking every 2 s."""
    root = tmp_path_factory.mktemp("server")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_HOME", str(root / "home"))
        env.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "2")
        url = ensure_server(state_dir=root / "state")
    yield url
    stop_server(state_dir=root / "state")


def _env(url: str, root: Path) -> dict[str, str]:
    """A CLI's environment: the server, and local jobs kept under `root` (XDG folders)."""
    return {
        **os.environ,
        "PREFECT_API_URL": url,
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }


def _prefect(url: str, root: Path, *argv: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *argv],
        cwd=REPO,
        env=_env(url, root),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"prefect {' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _api(url: str, call):
    """Run `call(client)` against the server (an async client, run to completion)."""

    async def run():
        async with PrefectClient(url) as client:
            return await call(client)

    return run_coro_as_sync(run())


def test_a_server_started_after_install_lists_every_block_type(server):
    slugs = {block_type.slug for block_type in _api(server, lambda c: c.read_block_types())}
    assert slugs >= BLOCK_TYPES


def test_block_register_adds_them_to_a_running_server(server, tmp_path):
    async def delete_ours(client):
        for block_type in await client.read_block_types():
            if block_type.slug in BLOCK_TYPES:
                await client.delete_block_type(block_type.id)

    _api(server, delete_ours)
    remaining = {block_type.slug for block_type in _api(server, lambda c: c.read_block_types())}
    assert not remaining & BLOCK_TYPES
    output = _prefect(server, tmp_path, "block", "register", "-m", "prefect_kubeflow")
    assert "Successfully registered" in output
    slugs = {block_type.slug for block_type in _api(server, lambda c: c.read_block_types())}
    assert slugs >= BLOCK_TYPES


def _children(url: str, flow_run_id) -> list:
    return _api(
        url,
        lambda c: c.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        ),
    )


def _assert_trained_in_a_trainjob(url: str, run, jobs: TrainerClient) -> None:
    """The run completed with rank 0's value, its TrainJob its child flow run, Complete."""
    [child] = _children(url, run.id)
    assert child.state.is_completed() and child.name in [job.name for job in jobs.list_jobs()]
    job = jobs.get_job(child.name)
    assert job.status == constants.TRAINJOB_COMPLETE and job.num_nodes == 2
    result = jobs.get_job_result(child.name)
    assert result["world_size"] == 2 and result["loss"] < 1


def _runs_of(url: str, deployment_id) -> list:
    return _api(
        url,
        lambda c: c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        ),
    )


@contextlib.contextmanager
def _running(url: str, root: Path, argv: list[str], log: str, **env: str):
    """A Prefect worker or served flow, in its own session, for the block; then it is stopped
    and every local job it ran deleted. Yields a client of those jobs."""
    with open(root / log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env={**_env(url, root), **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    jobs = TrainerClient(
        backend_config=LocalProcessBackendConfig(jobs_dir=str(root / "data/prefect-kubeflow/jobs"))
    )
    try:
        yield jobs
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for job in jobs.list_jobs():
            jobs.delete_job(job.name)


def test_the_deployments_run_on_schedule_and_on_demand(server, tmp_path):
    _prefect(server, tmp_path, "work-pool", "create", POOL, "--type", "process")
    output = _prefect(
        server,
        tmp_path,
        "--no-prompt",
        "deploy",
        "--all",
        "--prefect-file",
        "deployments/prefect.yaml",
    )
    assert "nightly" in output and "on-demand" in output
    deployments = {
        d.name: d for d in _api(server, lambda c: c.read_deployments()) if d.work_pool_name == POOL
    }
    assert set(deployments) == {"nightly", "on-demand"}
    nightly = deployments["nightly"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]

    # The nightly deployment, rescheduled every 20 s so that the test sees two runs.
    async def reschedule(client):
        for schedule in nightly.schedules:
            await client.delete_deployment_schedule(nightly.id, schedule.id)
        await client.create_deployment_schedules(
            nightly.id, [(IntervalSchedule(interval=20), True)]
        )

    _api(server, reschedule)
    worker = ["-m", "prefect", "worker", "start", "--pool", POOL]
    try:
        with _running(server, tmp_path, worker, "worker.log") as jobs:

            def two_completed():
                runs = _runs_of(server, nightly.id)
                done = [run for run in runs if run.state and run.state.is_completed()]
                failed = [run for run in runs if run.state and run.state.is_failed()]
                assert not failed, [run.state.message for run in failed]
                return done if len(done) >= 2 else None

            scheduled = wait_for(two_completed, 420, "two scheduled runs to complete")
            for run in scheduled:
                assert run.parameters["func_args"] == {"steps": 20}
                _assert_trained_in_a_trainjob(server, run, jobs)

            output = _prefect(
                server,
                tmp_path,
                "deployment",
                "run",
                "train-model/on-demand",
                "--watch",
                "--watch-timeout",
                "300",
                timeout=360,
            )
            [on_demand] = _runs_of(server, deployments["on-demand"].id)
            assert on_demand.state.is_completed(), output
            _assert_trained_in_a_trainjob(server, on_demand, jobs)
    finally:
        _api(server, lambda c: c.pause_deployment(nightly.id))
    assert jobs.list_jobs() == []


def test_the_flow_serves_without_a_work_pool(server, tmp_path):
    served = ["deployments/training.py"]
    with _running(server, tmp_path, served, "serve.log", PREFECT_RUNNER_POLL_FREQUENCY="2") as jobs:
        deployment = wait_for(
            lambda: [
                d
                for d in _api(server, lambda c: c.read_deployments())
                if d.name == "served-every-6-hours"
            ],
            180,
            "the served deployment",
        )[0]
        assert [s.schedule.interval.total_seconds() for s in deployment.schedules] == [21600]
        output = _prefect(
            server,
            tmp_path,
            "deployment",
            "run",
            "train-model/served-every-6-hours",
            "--param",
            "num_nodes=1",
            "--watch",
            "--watch-timeout",
            "300",
            timeout=360,
        )
        [run] = [
            r
            for r in _runs_of(server, deployment.id)
            if r.parameters.get("num_nodes") == 1  # not a run of the 6-hour schedule
        ]
        assert run.state.is_completed(), output
        [child] = _children(server, run.id)
        assert jobs.get_job(child.name).num_nodes == 1
        assert jobs.get_job_result(child.name)["world_size"] == 1


@contextlib.contextmanager
def served_sleeping_trainjob(url: str, root: Path):
    """The served deployment (a runner, no work pool) running a 2-node TrainJob that sleeps,
    both its nodes started; yields (a client of its jobs, the job's name, the deployment's
    run)."""
    served = ["deployments/training.py"]
    with _running(url, root, served, "serve.log", PREFECT_RUNNER_POLL_FREQUENCY="2") as jobs:
        [deployment] = wait_for(
            lambda: [
                d
                for d in _api(url, lambda c: c.read_deployments())
                if d.name == "served-every-6-hours"
            ],
            180,
            "the served deployment",
        )
        _prefect(
            url,
            root,
            "deployment",
            "run",
            "train-model/served-every-6-hours",
            "--param",
            "function=tests.training_functions:sleep_forever",
        )
        name = wait_for(lambda: [job.name for job in jobs.list_jobs()], 180, "the TrainJob")[0]
        wait_for(
            lambda: sum("started" in line for line in jobs.get_job_logs(name)) >= 2,
            180,
            "both nodes to start",
        )
        [run] = [r for r in _runs_of(url, deployment.id) if r.state.is_running()]
        yield jobs, name, run


def _ended(url: str, flow_run_id):
    run = _api(url, lambda c: c.read_flow_run(flow_run_id))
    return run if run.state.is_final() else None


def test_cancelling_a_served_run_stops_its_trainjobs_nodes(server, tmp_path):
    """The UI's Cancel on a deployment's run: the runner signals the flow's process (SIGTERM),
    whose TrainJob subflow stops every node before the process ends."""
    with served_sleeping_trainjob(server, tmp_path) as (jobs, name, parent):
        _prefect(server, tmp_path, "flow-run", "cancel", str(parent.id))
        job = wait_for(
            lambda: (j := jobs.get_job(name)).status == constants.TRAINJOB_FAILED and j,
            60,
            "the job to stop",
        )
        assert job.message.startswith("cancelled from Prefect"), job.message
        run = wait_for(lambda: _ended(server, parent.id), 120, "the deployment's run to end")
        assert run.state.is_cancelled(), run.state
        [child] = _children(server, parent.id)
        assert child.name == name and _ended(server, child.id).state.is_cancelled()
        jobs.delete_job(name)
    assert jobs.list_jobs() == []
