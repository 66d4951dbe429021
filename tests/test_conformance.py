"""The backend conformance suite: what every backend must do, tested once, run on each.

Every test runs on local processes, Docker, Podman and Kubernetes (a cluster in miniature
whose pods run on Docker; see `harnesses.py`); a new backend
passes this module before it is done. Each test ends with nothing of its jobs left: no
process, container, network or folder, and no supervising process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    flow_run_of,
    read_task_run_logs,
    supervisor_of,
    task_run_states,
    wait_for,
)
from harnesses import HARNESSES
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Cancelling
from training_functions import (
    ddp_report,
    ddp_result,
    fail_on_rank,
    fails_first_attempt,
    paced_lines,
    paced_lines_of,
    print_env,
    reports_progress,
    returns_unpicklable,
    sleep_forever,
    wait_for_file,
)

from prefect_kubeflow import (
    CustomTrainer,
    CustomTrainerContainer,
    TrainerClient,
    TrainJobTaskRunner,
)
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.status import restart_pending
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import (
    InvalidInputError,
    JobFailedError,
    JobNotFoundError,
    JobResultError,
    NameConflictError,
    RuntimeNotFoundError,
    UnsupportedOptionError,
)
from prefect_kubeflow.flows import runs, supervisor
from prefect_kubeflow.flows.cancellation import CANCELLED_FROM_PREFECT
from prefect_kubeflow.flows.gang import restart_gang
from prefect_kubeflow.flows.trainjob import run_trainjob
from prefect_kubeflow.options import Annotations, Labels, Name, TrainerCommand

TESTS_DIR = os.path.dirname(__file__)


@pytest.fixture(params=list(HARNESSES))
def harness(request, tmp_path):
    backend = HARNESSES[request.param](tmp_path)
    yield backend
    getattr(backend, "close", lambda: None)()


@pytest.fixture
def client(harness):
    """A client of the backend; afterwards every job is deleted and nothing of it may be left,
    nor any process that ran a job's flow."""
    trainer_client = TrainerClient(backend_config=harness.config())
    yield trainer_client
    names = [job.name for job in trainer_client.list_jobs()]
    supervisors = {}
    for name in names:
        supervisor = runs.supervisor_of(flow_run_of(name, timeout=60))
        if supervisor is not None:
            supervisors[name] = supervisor[1:]
        trainer_client.delete_job(name)
    for name in names:
        assert harness.leftovers(name) == [], f"left of {name}"
    for name, (pid, start) in supervisors.items():
        wait_for(lambda p=pid, s=start: not processes.is_alive(p, s), 60, f"{name}'s supervisor")


def _api_lines(flow_run_id, node: str, containing: str) -> list[str]:
    """The node's lines holding `containing`, read back from the Prefect API once they came."""
    return wait_for(
        lambda: [
            log.message
            for log in read_task_run_logs(flow_run_id, node)
            if containing in log.message
        ],
        60,
        f"{node}'s lines in the API",
    )


def _in_a_second_interpreter(harness, body: str, *args: str) -> str:
    """Run `body` in another Python process, with ``config`` the harness's backend config read
    back from JSON and ``sys.argv[1:]`` = `args`; what it printed."""
    script = (
        "import json, os, sys\n"
        "from prefect_kubeflow.blocks import TrainingBackendConfig\n"
        "config = TrainingBackendConfig.model_validate(json.loads(os.environ['PK_CONFIG']))\n"
        + body
    )
    config = harness.config().model_dump(mode="json", context={"include_secrets": True})
    ran = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS_DIR,
        env={**os.environ, "PK_CONFIG": json.dumps(config)},
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def _ranks_started(client, name: str, count: int) -> None:
    wait_for(
        lambda: sum("started" in line for line in client.get_job_logs(name)) >= count,
        180,
        f"{count} ranks to start",
    )


def test_ddp_trains_on_two_nodes_and_every_line_reaches_prefect(client, harness):
    name = client.train(
        trainer=CustomTrainer(func=ddp_report, num_nodes=2, resources_per_node={"cpu": 2})
    )
    followed = list(client.get_job_logs(name, follow=True))
    job = client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE, job.message
    assert [(s.name, s.status, s.device, s.device_count) for s in job.steps] == [
        ("node-0", constants.STEP_SUCCEEDED, "cpu", "2"),
        ("node-1", constants.STEP_SUCCEEDED, "cpu", "2"),
    ]
    # Ranks 0..3 (node-0 has 0 and 1) each saw 1+2+3+4 = 10; the follow interleaved nodes.
    assert sorted(line for line in followed if "world=" in line and "warning" not in line) == [
        "[node-0] rank=0 world=4 sum=10\n",
        "[node-0] rank=1 world=4 sum=10\n",
        "[node-1] rank=2 world=4 sum=10\n",
        "[node-1] rank=3 world=4 sum=10\n",
    ]
    node1 = [line.rstrip("\n") for line in client.get_job_logs(name, node_index=1)]
    assert sorted(line for line in node1 if "sum=" in line) == [
        "rank=2 world=4 sum=10",
        "rank=3 world=4 sum=10",
    ]
    assert list(client.get_job_logs(name, step="node-1", tail_lines=1)) == [node1[-1] + "\n"]
    assert list(client.get_job_logs(name, node_index=0, tail_lines=0)) == []
    node0 = [line.rstrip("\n") for line in client.get_job_logs(name, step="node-0")]
    assert "progress 100%" in node0 and not any("50%" in line for line in node0)

    # The job is a flow run named after it; each node a task run holding every line, in order,
    # stderr at WARNING.
    run = flow_run_of(name, final=True)
    assert run.state.is_completed() and constants.FLOW_RUN_TAG in run.tags
    for index, lines in ((0, node0), (1, node1)):
        logs = wait_for(
            lambda i=index, n=len(lines): (
                (got := read_task_run_logs(run.id, f"node-{i}")) and len(got) >= n and got
            ),
            60,
            f"node-{index}'s lines in the API",
        )
        assert [log.message for log in logs] == lines
        levels = {log.message: log.level for log in logs}
        warnings = [m for m in lines if m.startswith("warning from")]
        stderr_level = 30 if harness.stderr_is_warning else 20
        assert len(warnings) == 2 and all(levels[m] == stderr_level for m in warnings)
        assert all(levels[m] == 20 for m in lines if "sum=" in m)


def test_list_and_get_from_a_second_interpreter(client, harness):
    name = client.train(trainer=CustomTrainer(func=print_env, env={"PK_TEST_VAR": "x $(true)"}))
    client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    body = (
        "from prefect_kubeflow import TrainerClient\n"
        "client = TrainerClient(backend_config=config)\n"
        "job = client.get_job(sys.argv[1])\n"
        "print(json.dumps({'names': [j.name for j in client.list_jobs()], 'status': job.status,"
        " 'steps': [[s.name, s.status] for s in job.steps],"
        " 'lines': list(client.get_job_logs(sys.argv[1])),"
        " 'events': [[e.reason, e.involved_object_name]"
        " for e in client.get_job_events(sys.argv[1])]"
        "}))\n"
    )
    seen = json.loads(_in_a_second_interpreter(harness, body, name))
    assert seen["names"] == [name]
    assert seen["status"] == constants.TRAINJOB_COMPLETE
    assert seen["steps"] == [["node-0", constants.STEP_SUCCEEDED]]
    # env is merged onto the node's environment, never through a shell.
    assert "[node-0] PK_TEST_VAR=x $(true) PATH_SET=True\n" in seen["lines"]
    # Events are kept where the backend keeps the job: another process reads them.
    assert "Started" in [reason for reason, _ in seen["events"]]
    if harness.id != "kubernetes":  # a cluster's events are its own (tested there)
        assert ["Started", f"{name}-node-0"] in seen["events"]
        assert seen["events"][0] == ["Created", name]
        assert seen["events"][-1] == ["Completed", f"{name}-node-0"]
        client.delete_job(name)
        # A deleted job's events stay readable, ending with its deletion.
        assert [e.reason for e in client.get_job_events(name)][-1] == "Deleted"


def test_follow_streams_every_node_live(client, harness):
    host_dir, node_dir = harness.shared()
    release = host_dir / "release"
    name = client.train(
        trainer=CustomTrainer(
            func=wait_for_file,
            func_args={"path": f"{node_dir}/release", "text": "node is up"},
            num_nodes=2,
        )
    )
    seen: list[str] = []

    def consume():
        for line in client.get_job_logs(name, follow=True):
            seen.append(line)
            # Released only once both nodes' first lines came: the stream is live.
            if sum("node is up" in s for s in seen) == 2:
                release.touch()

    reader = threading.Thread(target=consume)
    reader.start()
    reader.join(timeout=300)
    assert not reader.is_alive() and release.exists()
    for node in (0, 1):
        assert f"[node-{node}] node is up\n" in seen
        assert f"[node-{node}] released\n" in seen
    assert client.wait_for_job_status(name, timeout=120).status == constants.TRAINJOB_COMPLETE


def test_a_failing_rank_fails_the_job_and_stops_the_others(client, harness):
    name = client.train(
        trainer=CustomTrainer(
            func=fail_on_rank, func_args={"rank_to_fail": 1, "sleep_others": 600}, num_nodes=2
        )
    )
    # node-0 sleeps 600 s: only the gang's teardown ends the job within the timeout.
    with pytest.raises(JobFailedError) as failed:
        client.wait_for_job_status(name, timeout=240, polling_interval=0.2)
    assert isinstance(failed.value, RuntimeError)
    assert "node-1 exited with 1; rank 1 raised:" in str(failed.value)
    assert "ValueError: boom on rank 1" in str(failed.value)
    wait_for(lambda: harness.running(name) == [], 120, "node-0 to be stopped")
    job = client.get_job(name)
    assert [s.status for s in job.steps] == [constants.STEP_FAILED, constants.STEP_FAILED]
    run = flow_run_of(name, final=True)
    assert run.state.is_failed()
    assert "boom on rank 1" in run.state.message


def test_a_killed_node_fails_the_job_and_stops_the_others(client, harness):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    _ranks_started(client, name, 2)
    harness.kill_node(name, 1)
    with pytest.raises(JobFailedError, match="node-1 was killed by SIGKILL"):
        client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    wait_for(lambda: harness.running(name) == [], 120, "node-0 to be stopped")
    assert flow_run_of(name, final=True).state.is_failed()


@pytest.mark.parametrize("auto_remove", [False, True], ids=["kept", "auto_remove"])
def test_delete_mid_run_leaves_nothing_and_cancels_the_flow_run(harness, auto_remove):
    # With auto_remove, the flow's own clean-up races the client's delete: both must hold.
    client = TrainerClient(backend_config=harness.config(auto_remove=auto_remove))
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    _ranks_started(client, name, 2)
    pid, start = supervisor_of(name)
    client.delete_job(name)
    assert harness.leftovers(name) == []
    assert name not in [job.name for job in client.list_jobs()]
    assert flow_run_of(name, final=True).state.is_cancelled()
    wait_for(lambda: not processes.is_alive(pid, start), 60, "the supervisor to exit")
    # Deleting again: the client says the job is gone; the backend's delete is idempotent.
    with pytest.raises(JobNotFoundError):
        client.delete_job(name)
    assert client.backend.delete(name) is False


def test_delete_after_the_end_leaves_nothing(client, harness):
    name = client.train(trainer=CustomTrainer(func=print_env, num_nodes=2))
    client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert flow_run_of(name, final=True).state.is_completed()
    client.delete_job(name)
    assert harness.leftovers(name) == []
    assert flow_run_of(name).state.is_completed()  # its history stays as it ended


def _node_lines_in_the_api(flow_run_id, node: str) -> list[str]:
    if node not in task_run_states(flow_run_id):
        return []  # its task run is not recorded yet
    return [log.message for log in read_task_run_logs(flow_run_id, node)]


def test_a_dead_supervisors_job_is_settled_by_the_next_read(client, harness):
    """The process running the flow dies mid-job: the next get_job starts another, which
    forwards the rest of the lines (each once, in order) and ends the flow run as the job."""
    name = client.train(
        trainer=CustomTrainer(func=paced_lines, func_args={"count": 60, "seconds": 12}, num_nodes=2)
    )
    flow_run = flow_run_of(name)
    wait_for(lambda: len(_node_lines_in_the_api(flow_run.id, "node-0")) >= 5, 180, "lines")
    pid, _ = supervisor_of(name)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: runs.lost_flow_runs([name]) == [name], 60, "the flow run to be lost")
    assert client.get_job(name).status == constants.TRAINJOB_RUNNING  # starts a new supervisor
    wait_for(lambda: supervisor_of(name)[0] != pid, 60, "a new supervisor")
    client.wait_for_job_status(name, timeout=300, polling_interval=0.5)
    run = flow_run_of(name, final=True)
    assert run.state.is_completed(), run.state
    assert task_run_states(run.id) == {"node-0": "COMPLETED", "node-1": "COMPLETED"}
    for rank in (0, 1):
        expected = [f"rank {rank} line {i}" for i in range(60)]
        assert paced_lines_of(_node_lines_in_the_api(run.id, f"node-{rank}"), rank) == expected


def test_train_inside_a_flow_is_a_blocking_subflow(harness):
    config = harness.config()

    @flow(name="nightly-training")
    def nightly() -> str:
        return TrainerClient(backend_config=config).train(
            trainer=CustomTrainer(func=ddp_report, num_nodes=2)
        )

    state = nightly(return_state=True)
    assert state.is_completed()
    name = state.result()
    client = TrainerClient(backend_config=config)
    assert client.get_job(name).status == constants.TRAINJOB_COMPLETE  # done when train returned
    child = flow_run_of(name, final=True)
    assert child.state.is_completed()
    with get_client(sync_client=True) as prefect:
        parent_task = prefect.read_task_run(child.parent_task_run_id)
    assert parent_task.flow_run_id == state.state_details.flow_run_id
    assert _api_lines(child.id, "node-1", "sum=") == ["rank=1 world=2 sum=3"]
    client.delete_job(name)
    assert harness.leftovers(name) == []


def test_the_flow_runs_a_job_from_a_spec_alone_and_auto_removes_it(client, harness):
    # What a deployment or a task runner does: hand the flow a spec, nothing created before.
    spec = client.build_spec(CustomTrainer(func=ddp_report, num_nodes=2))
    config = harness.config(auto_remove=True)
    state = run_trainjob(spec, config, return_state=True)
    assert state.is_completed(), state.message
    assert state.result() is None  # what rank 0 returned
    run = flow_run_of(spec.name, final=True)
    assert _api_lines(run.id, "node-0", "sum=") == ["rank=0 world=2 sum=3"]
    # auto_remove: ended and forwarded, nothing of it is kept.
    assert harness.leftovers(spec.name) == []
    assert spec.name not in [job.name for job in client.list_jobs()]


def test_auto_remove_leaves_nothing_of_a_detached_job(harness):
    client = TrainerClient(backend_config=harness.config(auto_remove=True))
    name = client.train(trainer=CustomTrainer(func=print_env, num_nodes=2))
    wait_for(lambda: flow_run_of(name, final=True), 300, "the job's flow to end")
    pid, start = supervisor_of(name)
    wait_for(lambda: not processes.is_alive(pid, start), 120, "the supervisor to exit")
    assert flow_run_of(name).state.is_completed()
    assert harness.leftovers(name) == []
    assert not supervisor.log_path(name).exists()
    assert client.list_jobs() == []


def test_unknown_names_and_rejected_trains_leave_nothing(client, harness):
    for call in (
        lambda: client.get_job("nope"),
        lambda: client.get_job_logs("nope"),
        lambda: client.wait_for_job_status("nope", timeout=1),
        lambda: client.delete_job("nope"),
        lambda: client.get_job("../etc"),
    ):
        with pytest.raises(JobNotFoundError, match=r"TrainJob '(nope|\.\./etc)' not found"):
            call()
    with pytest.raises(InvalidInputError, match="trainer must be a CustomTrainer"):
        client.train(trainer=None)
    with pytest.raises(RuntimeNotFoundError, match="'no-such-runtime' not found"):
        client.train(runtime="no-such-runtime", trainer=CustomTrainer(func=print_env))
    trainer = CustomTrainer(func=print_env)
    trainer.num_nodes = 0  # changed after it was built: checked again
    with pytest.raises(InvalidInputError, match="num_nodes must be an int >= 1, got 0"):
        client.train(trainer=trainer)
    assert client.list_jobs() == []
    assert not list(harness.root.glob("*jobs/*"))


def test_rank_zero_return_value_is_the_jobs_result(client, harness):
    name = client.train(trainer=CustomTrainer(func=ddp_result, func_args={"scale": 2}, num_nodes=2))
    client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    result = client.get_job_result(name)
    assert (result["rank"], result["world"], result["sum"].tolist()) == (0, 2, [6.0])
    # The job's flow run returned it too (its supervisor ran the flow, results not persisted).
    assert flow_run_of(name, final=True).state.is_completed()


def test_an_unpicklable_return_value_fails_rank_zero_naming_its_type(client, harness):
    name = client.train(trainer=CustomTrainer(func=returns_unpicklable, num_nodes=2))
    with pytest.raises(JobFailedError) as failed:
        client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert "rank 0 returned a builtins.generator, which cannot be pickled" in str(failed.value)
    assert "move tensors to the CPU first" in str(failed.value)
    with pytest.raises(JobResultError, match="is Failed: only a Complete job has a result"):
        client.get_job_result(name)


@task
def ddp_step(scale: int = 1) -> dict:
    """A task: under TrainJobTaskRunner it runs on every rank of a 2-node job."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    print(f"rank={rank} total={total.item():.0f}")
    dist.destroy_process_group()
    return {"rank": rank, "total": total.item() * scale}


def _trainjob_runs_of(task_run_ids) -> dict:
    """The TrainJob flow runs whose parents are these task runs, by parent."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId

    with get_client(sync_client=True) as prefect:
        runs_found = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=list(task_run_ids))
            )
        )
    return {run.parent_task_run_id: run for run in runs_found}


def test_a_task_runner_runs_each_task_as_a_trainjob(harness):
    client = TrainerClient(backend_config=harness.config())
    failing = task(fail_on_rank)

    @flow(task_runner=TrainJobTaskRunner(backend_config=harness.config(), num_nodes=2))
    def training():
        single = ddp_step.submit(10)
        mapped = ddp_step.map([1, 2])
        broken = failing.submit(rank_to_fail=1, sleep_others=600)
        values = [future.result() for future in (single, *mapped)]
        # The failing rank fails its task run with its traceback; result() raises.
        broken.wait()
        with pytest.raises(JobFailedError, match="boom on rank 1"):
            broken.result()
        ids = [future.task_run_id for future in (single, *mapped, broken)]
        return values, ids, broken.state.is_failed(), broken.state.message

    values, ids, broken_failed, broken_message = training()
    # Each future is rank 0's value, of its own 2-node gang.
    assert values == [
        {"rank": 0, "total": 30.0},
        {"rank": 0, "total": 3.0},
        {"rank": 0, "total": 6.0},
    ]
    assert broken_failed and "ValueError: boom on rank 1" in broken_message
    # Every task run's child is its TrainJob's flow run, with the nodes' task runs and logs.
    children = _trainjob_runs_of(ids)
    assert set(children) == set(ids)
    job = client.get_job(children[ids[0]].name)
    assert job.status == constants.TRAINJOB_COMPLETE and job.num_nodes == 2
    assert _api_lines(children[ids[0]].id, "node-1", "total=") == ["rank=1 total=3"]
    assert client.get_job(children[ids[-1]].name).status == constants.TRAINJOB_FAILED
    for child in children.values():
        client.delete_job(child.name)
        assert harness.leftovers(child.name) == []


def test_a_failed_attempt_restarts_the_whole_gang(client, harness):
    trainer = CustomTrainer(func=fails_first_attempt, num_nodes=2, max_restarts=2)
    if harness.id == "kubernetes":
        with pytest.raises(UnsupportedOptionError, match=r"max_restarts=2 .* KubernetesBackend"):
            client.train(trainer=trainer)
        assert client.list_jobs() == []
        return
    name = client.train(trainer=trainer)
    job = client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE, job.message
    assert job.attempt == 1 and [r.attempt for r in job.restarts] == [0]
    assert "node-1 exited with 1" in job.restarts[0].reason
    assert "first attempt fails on rank 1" in job.restarts[0].reason
    # Rank 0 of the second attempt read TORCHELASTIC_RESTART_COUNT=1; its logs are the
    # second attempt's.
    assert client.get_job_result(name) == 1
    assert "[node-0] attempt 1 rank 0 started\n" in list(client.get_job_logs(name))
    # Both attempts are in Prefect: the first's node tasks failed, the second's completed.
    run = flow_run_of(name, final=True)
    assert run.state.is_completed()
    assert task_run_states(run.id) == {
        "node-0": "FAILED",
        "node-1": "FAILED",
        "node-0 (attempt 2)": "COMPLETED",
        "node-1 (attempt 2)": "COMPLETED",
    }
    assert _api_lines(run.id, "node-1 (attempt 2)", "attempt 1 rank 1 started")
    assert _api_lines(run.id, "node-1", "first attempt fails on rank 1")
    reasons = [(e.reason, e.involved_object_name) for e in client.get_job_events(name)]
    assert reasons[0] == ("Created", name)
    for expected in [
        ("Failed", f"{name}-node-1"),
        ("GangTeardown", name),
        ("Restarted", name),
        ("Completed", f"{name}-node-0"),
    ]:
        assert expected in reasons, reasons
    assert reasons.index(("Restarted", name)) > reasons.index(("Failed", f"{name}-node-1"))
    assert [r for r, _ in reasons].count("Started") == 4


def test_job_options_name_label_and_annotate_jobs(client, harness):
    labels = {"team": "nlp", "example.com/tier": "gold"}
    name = client.train(
        trainer=CustomTrainer(func=print_env),
        options=[Name("pk-options-job"), Labels(labels), Annotations({"note": "any: text"})],
    )
    other = client.train(trainer=CustomTrainer(func=print_env), options=[Labels({"team": "cv"})])
    assert name == "pk-options-job"
    job = client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.labels == labels and job.annotations == {"note": "any: text"}
    assert [j.name for j in client.list_jobs(labels={"team": "nlp"})] == [name]
    assert [j.name for j in client.list_jobs(labels={"team": "cv"})] == [other]
    assert client.list_jobs(labels={"team": "nlp", "example.com/tier": "silver"}) == []
    assert sorted(j.name for j in client.list_jobs()) == sorted([name, other])
    if harness.id in ("docker", "podman"):  # labels are the containers' own
        assert all(c.labels["team"] == "nlp" for c in harness._containers(name))
    # A name in use conflicts, and leaves the job that has it as it was.
    with pytest.raises(NameConflictError):
        client.train(trainer=CustomTrainer(func=print_env), options=[Name(name)])
    # A flow handed a spec of that name (a deployment's) does not adopt the other job either.
    spec = client.build_spec(CustomTrainer(func=print_env), options=[Name(name)])
    with pytest.raises(NameConflictError, match="made from another spec"):
        client.backend.ensure_created(spec)
    assert client.get_job(name).status == constants.TRAINJOB_COMPLETE
    assert sorted(j.name for j in client.list_jobs()) == sorted([name, other])
    if harness.id != "kubernetes":  # only a TrainJob object takes a trainer command
        with pytest.raises(UnsupportedOptionError, match="option TrainerCommand is not supported"):
            client.train(
                trainer=CustomTrainerContainer(image="img"), options=[TrainerCommand(["x"])]
            )


@pytest.mark.parametrize("how", ["delete", "cancel", "lost watcher"])
def test_delete_cancel_or_a_lost_watcher_stop_a_job_between_attempts(client, harness, how):
    trainer = CustomTrainer(func=fail_on_rank, num_nodes=2, max_restarts=3)
    if harness.id == "kubernetes":  # no job with restarts exists there: nothing to stop
        with pytest.raises(UnsupportedOptionError, match=r"failurePolicy\.maxRestarts"):
            client.build_spec(trainer)
        return
    # Created with no flow watching it: its failed attempt waits for a restart nobody makes.
    spec = client.build_spec(trainer)
    client.backend.create(spec)
    name = spec.name
    wait_for(
        lambda: client.get_job(name).steps[1].status == constants.STEP_FAILED,
        300,
        "node-1 to fail",
    )
    client.backend.stop(name)  # the gang teardown its watcher would do
    job = wait_for(
        lambda: (j := client.get_job(name)) and restart_pending(j) and j,
        300,
        "the first attempt to fail",
    )
    assert job.status == constants.TRAINJOB_RUNNING and "attempt 2 of 4 comes next" in job.message
    if how == "delete":
        client.backend.delete(name)
        assert harness.leftovers(name) == []
        assert restart_gang(client.backend, name) is None  # nothing to restart
        assert [e.reason for e in client.get_job_events(name)][-1] == "Deleted"
        return
    if how == "cancel":
        client.backend.cancel(name, "asked to stop")
        assert "Cancelled" in [e.reason for e in client.get_job_events(name)]
        assert client.backend.cancelled(name) == "asked to stop"
        why = "asked to stop; node-1 exited with 1"
    else:  # its watcher (a flow's process) records itself, then dies before restarting it
        pid = _in_a_second_interpreter(
            harness, "config.get_backend().record_watcher(sys.argv[1])\nprint(os.getpid())\n", name
        ).strip()
        why = f"not restarted: the process watching it (pid {pid}) ended before restarting it"
        why += "; node-1 exited with 1"
    job = client.get_job(name)
    assert job.status == constants.TRAINJOB_FAILED and job.attempt == 0
    assert job.message.startswith(why), job.message
    assert restart_gang(client.backend, name) == job  # no restart follows
    client.backend.delete(name)  # no flow run to end: removed here
    assert harness.leftovers(name) == []


def _cancel_from_prefect(flow_run_id) -> float:
    """Ask for the flow run to stop as the Prefect UI's Cancel button does; when (monotonic)."""
    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(flow_run_id, Cancelling(message="from the UI"))
    return time.monotonic()


def _assert_cancelled_from_prefect(client, harness, name: str, asked: float) -> None:
    """Every node stopped (and how soon is printed), the job Failed "cancelled from Prefect",
    its flow run and node task runs Cancelled."""
    wait_for(lambda: harness.running(name) == [], 60, "every node to stop")
    print(f"{harness.id}: nodes gone {time.monotonic() - asked:.1f} s after the cancel")
    job = client.get_job(name)
    assert job.status == constants.TRAINJOB_FAILED, job
    assert job.message.startswith(CANCELLED_FROM_PREFECT), job.message
    run = flow_run_of(name, final=True)
    assert run.state.is_cancelled(), run.state
    assert task_run_states(run.id) == {"node-0": "CANCELLED", "node-1": "CANCELLED"}
    assert "Cancelled" in [event.reason for event in client.get_job_events(name)]


def test_cancel_from_prefect_stops_every_node(client, harness):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    _ranks_started(client, name, 2)
    pid, start = supervisor_of(name)
    asked = _cancel_from_prefect(flow_run_of(name).id)
    _assert_cancelled_from_prefect(client, harness, name, asked)
    wait_for(lambda: not processes.is_alive(pid, start), 60, "the supervisor to exit")


@pytest.mark.parametrize("cancelled", ["parent", "own"])
def test_cancel_from_prefect_stops_a_subflows_job(harness, cancelled):
    config = harness.config()
    client = TrainerClient(backend_config=config)

    @flow(name="nightly-training")
    def nightly() -> str:
        return client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))

    states = []
    parent = threading.Thread(target=lambda: states.append(nightly(return_state=True)))
    parent.start()
    name = wait_for(lambda: [job.name for job in client.list_jobs()], 120, "the job")[0]
    _ranks_started(client, name, 2)
    child = flow_run_of(name)
    with get_client(sync_client=True) as prefect:
        parent_run_id = prefect.read_task_run(child.parent_task_run_id).flow_run_id
    asked = _cancel_from_prefect(parent_run_id if cancelled == "parent" else child.id)
    _assert_cancelled_from_prefect(client, harness, name, asked)
    parent.join(120)
    assert not parent.is_alive() and not states[0].is_completed()
    client.delete_job(name)
    assert harness.leftovers(name) == []


def test_update_trainjob_status_reports_progress_to_get_job_and_prefect(client, harness):
    if harness.id == "kubernetes":
        pytest.skip("pods have no prefect-kubeflow; there the Trainer's status server gets it")
    name = client.train(trainer=CustomTrainer(func=reports_progress, num_nodes=2))
    client.wait_for_job_status(name, timeout=300, polling_interval=0.5)
    lines = sorted(line for line in client.get_job_logs(name) if "reported" in line)
    assert lines == [
        "[node-0] rank 0 reported True False True\n",
        "[node-1] rank 1 reported False False False\n",
    ]
    status = client.get_job(name).trainer_status
    assert status is not None and status.progress_percentage == 100
    assert status.estimated_remaining_seconds == 0
    assert status.metrics == {"loss": "0.25", "step": "10"}
    run = flow_run_of(name, final=True)
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    [progress] = [a for a in artifacts if a.type == "progress"]
    assert progress.data == 100.0
    newest = max((a for a in artifacts if a.type == "table"), key=lambda a: a.created)
    assert json.loads(newest.data) == [
        {"metric": "loss", "value": "0.25"},
        {"metric": "step", "value": "10"},
    ]
