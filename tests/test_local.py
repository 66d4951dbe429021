"""What only the local process backend has: its node host, keepers, detached jobs and the
current interpreter; everything shared is in the conformance suite."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import flow_run_of, local_job_id, supervisor_of, wait_for
from prefect.settings import PREFECT_API_URL
from training_functions import many_lines, print_env, sleep_forever, wait_for_file

from prefect_kubeflow import CustomTrainer, TrainerClient
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.local import read_host
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import JobFailedError
from prefect_kubeflow.flows import supervisor

TESTS_DIR = os.path.dirname(__file__)


def _python(code: str, env_extra: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env_extra or {})},
        cwd=TESTS_DIR,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_default_runtime_and_listing(client):
    runtimes = client.list_runtimes()
    assert [r.name for r in runtimes] == ["torch-distributed"]
    assert client.get_runtime("torch-distributed").trainer.framework == "torch"
    name = client.train(trainer=CustomTrainer(func=print_env))
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    job = client.get_job(name)
    assert (job.runtime.name, job.num_nodes) == ("torch-distributed", 1)
    assert [j.name for j in client.list_jobs()] == [name]
    assert [j.name for j in client.list_jobs(runtime=runtimes[0])] == [name]


def test_a_dead_node_host_fails_the_job_and_its_nodes_stop(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    job_id = local_job_id(jobs_dir, name)
    wait_for(lambda: len(processes.find_marked(job_id)) >= 6, 120, "2 keepers, agents, workers")
    host = read_host(jobs_dir / name)
    os.kill(host["pid"], signal.SIGKILL)
    with pytest.raises(
        JobFailedError, match=rf"the process hosting the job's nodes \(pid {host['pid']}\) died"
    ):
        client.wait_for_job_status(name, timeout=60, polling_interval=0.2)
    # The nodes do not outlive their host: they stop on their own.
    wait_for(lambda: processes.find_marked(job_id) == [], 60, "the orphaned nodes to stop")
    assert [s.status for s in client.get_job(name).steps] == [constants.STEP_FAILED] * 2
    assert flow_run_of(name, final=True).state.is_failed()


def test_a_killed_node_keeper_fails_the_job_without_hanging(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    job_id = local_job_id(jobs_dir, name)
    wait_for(lambda: len(processes.find_marked(job_id)) >= 6, 120, "2 keepers, agents, workers")
    log = str(jobs_dir / name / "node-1.log").encode()
    [keeper] = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and b"prefect_kubeflow.backends.node" in (cmdline := _cmdline(entry))
        and log in cmdline
    ]
    os.kill(keeper, signal.SIGKILL)
    with pytest.raises(JobFailedError, match="node-1 was killed by SIGKILL"):
        client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    wait_for(lambda: processes.find_marked(job_id) == [], 60, "the other node to stop")
    assert flow_run_of(name, final=True).state.is_failed()


def test_a_job_outlives_the_script_that_submitted_it(client, jobs_dir, tmp_path):
    release = tmp_path / "release"
    out = _python(
        f"""
        from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
        from training_functions import wait_for_file
        client = TrainerClient(LocalProcessBackendConfig(jobs_dir={str(jobs_dir)!r}))
        print(client.train(trainer=CustomTrainer(func=wait_for_file,
                                                  func_args={{"path": {str(release)!r}}})))
        """,
        {"PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    name = out.strip().splitlines()[-1]
    # The submitting interpreter has exited; its job still runs, then completes.
    wait_for(lambda: any("waiting" in line for line in client.get_job_logs(name)), 120, "a line")
    assert client.get_job(name).status == constants.TRAINJOB_RUNNING
    release.touch()
    job = client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE
    assert flow_run_of(name, final=True).state.is_completed()


def test_training_survives_an_unreachable_prefect_api(config, jobs_dir):
    """No Prefect API answers: the job still runs to Complete, with every line in its log."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    out = _python(
        f"""
        from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
        from training_functions import many_lines
        client = TrainerClient(LocalProcessBackendConfig(jobs_dir={str(jobs_dir)!r}))
        print(client.train(trainer=CustomTrainer(func=many_lines, func_args={{"count": 500}},
                                                  num_nodes=2)))
        """,
        {"PREFECT_API_URL": f"http://127.0.0.1:{dead_port}/api"},
    )
    name = out.strip().splitlines()[-1]
    client = TrainerClient(backend_config=config)
    job = client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE
    for node in (0, 1):
        # Exactly the function's lines: torch's own stderr (an exit-barrier traceback when one
        # agent leaves first) says "line N" too.
        logs = client.get_job_logs(name, node_index=node)
        lines = [line for line in logs if line.startswith("line ")]
        assert lines == [f"line {i}\n" for i in range(500)]
    log = supervisor.log_path(name)
    wait_for(lambda: "watching the nodes without Prefect" in log.read_text(), 300, "the supervisor")
    client.delete_job(name)
    assert not log.exists()


def test_leaving_a_follow_early_does_not_wait_for_the_job(client, tmp_path):
    release = tmp_path / "release"
    name = client.train(
        trainer=CustomTrainer(func=wait_for_file, func_args={"path": str(release)}, num_nodes=2)
    )
    stream = client.get_job_logs(name, follow=True)
    assert next(stream).startswith("[node-")
    stream.close()  # the job still runs: this must not block until it ends
    assert client.get_job(name).status in (constants.TRAINJOB_CREATED, constants.TRAINJOB_RUNNING)
    release.touch()
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)


def test_jobs_read_and_delete_with_the_prefect_api_down(client, jobs_dir):
    """A job's views never depend on Prefect: reads and delete work with no API answering."""
    from prefect.settings import temporary_settings

    name = client.train(trainer=CustomTrainer(func=many_lines, func_args={"count": 5}))
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    flow_run_of(name, final=True)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    with temporary_settings({PREFECT_API_URL: dead}):
        assert client.get_job(name).status == constants.TRAINJOB_COMPLETE
        assert [job.name for job in client.list_jobs()] == [name]
        assert len(list(client.get_job_logs(name))) >= 5
        client.delete_job(name)
    assert not (jobs_dir / name).exists()


def test_sigterm_to_the_flows_process_stops_every_node(client, jobs_dir):
    """A runner or worker cancelling a run sends SIGTERM to the flow's process only: the flow
    stops the nodes (in their own sessions) before it ends."""
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    wait_for(
        lambda: sum("started" in line for line in client.get_job_logs(name)) >= 2,
        120,
        "both ranks to start",
    )
    pid, start = supervisor_of(name)
    os.kill(pid, signal.SIGTERM)
    job = wait_for(
        lambda: (j := client.get_job(name)).status == constants.TRAINJOB_FAILED and j,
        60,
        "the job to stop",
    )
    assert job.message.startswith("stopped: the process running its flow was sent SIGTERM")
    wait_for(lambda: not processes.is_alive(pid, start), 60, "the flow's process to exit")
    assert not processes.find_marked(local_job_id(jobs_dir, name))
    assert flow_run_of(name, final=True).state.is_final()
    client.delete_job(name)
