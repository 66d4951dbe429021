"""Gang semantics, deletion and dead supervisors: nothing may be left behind."""

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import job_record, owner_pid, wait_for, wait_supervisor_exit
from prefect.client.orchestration import get_client
from training_functions import fail_on_rank, sleep_forever

from prefect_kubeflow import CustomTrainer
from prefect_kubeflow.backends import processes
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import JobFailedError


def _flow_run_state(jobs_dir, name):
    flow_run_id = json.loads((jobs_dir / name / "flow_run.json").read_text())["id"]
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(flow_run_id).state


def _started_pids(client, job_id, count):
    """Wait until every rank printed its line; the pids of the job's processes then."""
    return wait_for(
        lambda: (pids := processes.find_marked(job_id)) and len(pids) >= count and pids,
        120,
        f"{count} processes",
    )


def test_a_failing_rank_fails_the_job_and_stops_the_others(client, jobs_dir):
    name = client.train(
        trainer=CustomTrainer(
            func=fail_on_rank, func_args={"rank_to_fail": 1, "sleep_others": 600}, num_nodes=2
        )
    )
    with pytest.raises(JobFailedError) as failed:
        # The other node sleeps 600 s: only gang teardown ends the job within the timeout.
        client.wait_for_job_status(name, timeout=180, polling_interval=0.2)
    assert isinstance(failed.value, RuntimeError)
    assert "node-1 exited with 1" in str(failed.value)
    assert "rank 1 raised" in str(failed.value)
    assert "ValueError: boom on rank 1" in str(failed.value)
    assert client.get_job(name).status == constants.TRAINJOB_FAILED
    # node-0 would sleep 600 s: it ends only because the job tore it down.
    wait_for(
        lambda: (
            [s.status for s in client.get_job(name).steps]
            == [constants.STEP_FAILED, constants.STEP_FAILED]
        ),
        120,
        "node-0 to be stopped",
    )
    wait_supervisor_exit(jobs_dir, name)
    assert processes.find_marked(job_record(jobs_dir, name)["job_id"]) == []
    state = _flow_run_state(jobs_dir, name)
    assert state.is_failed()
    assert "boom on rank 1" in (state.message or "") or "node-1" in (state.message or "")


def test_killing_one_node_fails_the_job_and_leaves_no_process(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    job_id = job_record(jobs_dir, name)["job_id"]
    wait_for(
        lambda: all(
            any("started" in line for line in client.get_job_logs(name, node_index=i))
            for i in (0, 1)
        ),
        120,
        "both ranks to start",
    )
    pids = processes.find_marked(job_id)
    # node-1's torchrun agent: the marked process whose argv says --node_rank 1.
    cmdlines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids}
    agent = next(
        pid
        for pid, cmdline in cmdlines.items()
        if b"torch.distributed.run" in cmdline and b"--node_rank\x001\x00" in cmdline
    )
    os.kill(agent, signal.SIGKILL)
    with pytest.raises(JobFailedError, match="node-1 was killed by SIGKILL"):
        client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    wait_supervisor_exit(jobs_dir, name)
    assert all(not processes.is_alive(pid, None) for pid in pids)
    assert _flow_run_state(jobs_dir, name).is_failed()


def test_delete_mid_run_leaves_nothing_and_cancels_the_flow_run(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    job_id = job_record(jobs_dir, name)["job_id"]
    wait_for(lambda: (jobs_dir / name / "flow_run.json").exists(), 120, "the flow run")
    pids = _started_pids(client, job_id, 4)  # 2 agents + 2 workers
    supervisor, start = owner_pid(jobs_dir, name)
    flow_run_id = json.loads((jobs_dir / name / "flow_run.json").read_text())["id"]
    client.delete_job(name)
    assert not (jobs_dir / name).exists()
    assert processes.find_marked(job_id) == []
    assert all(not processes.is_alive(pid, None) for pid in pids)
    assert not processes.is_alive(supervisor, start)
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(flow_run_id).state
    assert state is not None and state.is_cancelled()
    assert client.list_jobs() == []


def test_a_dead_supervisor_reads_as_failed(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=sleep_forever))
    job_id = job_record(jobs_dir, name)["job_id"]
    _started_pids(client, job_id, 2)
    wait_for(lambda: (jobs_dir / name / "flow_run.json").exists(), 120, "the flow run")
    supervisor, _ = owner_pid(jobs_dir, name)
    os.kill(supervisor, signal.SIGKILL)
    job = wait_for(
        lambda: (j := client.get_job(name)).status == constants.TRAINJOB_FAILED and j, 60, "Failed"
    )
    assert f"the process supervising the job (pid {supervisor}) died" in job.message
    with pytest.raises(JobFailedError, match="died"):
        client.wait_for_job_status(name, timeout=10)
    # The nodes do not outlive their supervisor: they stop on their own.
    wait_for(lambda: processes.find_marked(job_id) == [], 60, "the orphaned nodes to stop")
    wait_for(
        lambda: all(s.status == constants.STEP_FAILED for s in client.get_job(name).steps),
        60,
        "every node to read as Failed",
    )
    assert f"(pid {supervisor}) died" in client.get_job(name).message
    # Its flow run could not close itself: reading the job closed it, Crashed, once.
    state = _flow_run_state(jobs_dir, name)
    assert state.is_crashed() and "died" in state.message
    assert json.loads((jobs_dir / name / "flow_run.json").read_text())["closed"] is True


def test_a_killed_node_keeper_fails_the_job_without_hanging(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    job_id = job_record(jobs_dir, name)["job_id"]
    _started_pids(client, job_id, 4)
    log = str(jobs_dir / name / "node-1.log").encode()
    keeper = next(
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and b"prefect_kubeflow.backends.node" in (cmdline := _cmdline(entry))
        and log in cmdline
    )
    os.kill(keeper, signal.SIGKILL)
    with pytest.raises(JobFailedError, match="node-1 was killed by SIGKILL"):
        client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    wait_supervisor_exit(jobs_dir, name)
    assert processes.find_marked(job_id) == []
    assert _flow_run_state(jobs_dir, name).is_failed()


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
