"""Prefect outages while a job trains: the server is down for 2 minutes from 4 s into a
job printing 100 lines over 15 s. Training goes on; once the server is back, forwarding
resumes: all 100 lines in the API, each once, in order, and the flow run in its true final
state. Once the embedded server (brought back by the next job, on the address it had), once a
`prefect server start` on a fixed address."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import flow_run_of, read_task_run_logs, task_run_states, wait_for
from prefect.settings import PREFECT_API_URL, temporary_settings
from training_functions import paced_lines_of

from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient
from prefect_kubeflow.constants import constants
from prefect_kubeflow.flows import server

TESTS_DIR = os.path.dirname(__file__)
DOWN_SECONDS = float(os.environ.get("PK_OUTAGE_SECONDS", "120"))
PREFECT_SERVER = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
TRAIN = """
import json, sys
from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
from training_functions import paced_lines
client = TrainerClient(LocalProcessBackendConfig(jobs_dir=sys.argv[1]))
trainer = CustomTrainer(func=paced_lines, func_args=json.loads(sys.argv[2]), num_nodes=1)
print(client.train(trainer=trainer))
"""


def _train(env: dict[str, str], jobs_dir: Path, **func_args) -> str:
    """Submit a 1-node job from another interpreter (as a user's script); its name."""
    ran = subprocess.run(
        [sys.executable, "-c", TRAIN, str(jobs_dir), json.dumps(func_args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=TESTS_DIR,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip().splitlines()[-1]


def _assert_delivered_once(url: str, name: str, count: int) -> None:
    with temporary_settings({PREFECT_API_URL: url}):
        run = flow_run_of(name, final=True, timeout=300)
        assert run.state.is_completed(), run.state
        assert task_run_states(run.id) == {"node-0": "COMPLETED"}
        lines = [log.message for log in read_task_run_logs(run.id, "node-0")]
    assert paced_lines_of(lines, 0) == [f"rank 0 line {i}" for i in range(count)]


def _outage(client: TrainerClient, name: str, stop, start) -> None:
    """Stop the server 4 s into the job; start it again `DOWN_SECONDS` later (the job has
    ended meanwhile)."""
    time.sleep(4)
    stop()
    stopped = time.monotonic()
    job = client.wait_for_job_status(name, timeout=120, polling_interval=0.5)
    assert job.status == constants.TRAINJOB_COMPLETE  # training went on
    time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped)))
    start()


@pytest.fixture
def env(tmp_path):
    """A user's environment with the embedded default: no PREFECT_API_URL, its own folders."""
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.update(
        XDG_CACHE_HOME=str(tmp_path / "cache"), PREFECT_HOME=str(tmp_path / "prefect-home")
    )
    return environment


def test_the_embedded_server_down_for_minutes_loses_no_line(env, tmp_path):
    state_dir = tmp_path / "cache" / "prefect-kubeflow" / "server"
    jobs_dir = tmp_path / "jobs"
    client = TrainerClient(LocalProcessBackendConfig(jobs_dir=str(jobs_dir)))
    try:
        name = _train(env, jobs_dir, count=100, seconds=15)
        state = state_dir / "server.json"
        # The job's supervisor starts the embedded server.
        url = json.loads(wait_for(lambda: state.exists() and state.read_text(), 120, "it"))["url"]

        def next_job() -> None:  # brings the server back, as any job does
            _train(env, jobs_dir, count=1, seconds=0)
            wait_for(state.exists, 120, "the server to be back")

        _outage(client, name, lambda: server.stop_server(state_dir), next_job)
        assert json.loads((state_dir / "server.json").read_text())["url"] == url
        _assert_delivered_once(url, name, 100)
    finally:
        server.stop_server(state_dir)
        for job in client.list_jobs():
            client.backend.delete(job.name)


def _prefect_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [*PREFECT_SERVER, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    wait_for(lambda: server._healthy(url), 120, "the Prefect server")
    return process


def test_a_fixed_address_server_down_for_minutes_loses_no_line(env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    env = {**env, "PREFECT_API_URL": url}
    jobs_dir = tmp_path / "jobs"
    client = TrainerClient(LocalProcessBackendConfig(jobs_dir=str(jobs_dir)))
    processes = [_prefect_server(port, env, tmp_path / "server.log")]
    try:
        name = _train(env, jobs_dir, count=100, seconds=15)

        def stop() -> None:
            os.killpg(processes[-1].pid, signal.SIGTERM)
            processes[-1].wait(60)

        def start() -> None:
            processes.append(_prefect_server(port, env, tmp_path / "server.log"))

        _outage(client, name, stop, start)
        _assert_delivered_once(url, name, 100)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
        for job in client.list_jobs():
            client.backend.delete(job.name)
