"""The embedded default: no PREFECT_API_URL, one local Prefect server started once and reused."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import flow_run_of, wait_for
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_kubeflow.backends import processes

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
    from training_functions import print_env

    client = TrainerClient(LocalProcessBackendConfig(jobs_dir=sys.argv[1]))
    names = []
    for _ in range(2):
        name = client.train(trainer=CustomTrainer(func=print_env))
        client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
        names.append(name)
    print(json.dumps(names))
    """
)


def test_jobs_without_an_api_url_share_one_local_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
    )
    jobs_dir = tmp_path / "jobs"
    state = tmp_path / "cache" / "prefect-kubeflow" / "server" / "server.json"
    tests_dir = os.path.dirname(__file__)
    server_pid = None
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(jobs_dir)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tests_dir,
        )
        assert result.returncode == 0, result.stderr
        names = json.loads(result.stdout.strip().splitlines()[-1])
        server = json.loads(wait_for(lambda: state.exists() and state.read_text(), 120, "server"))
        server_pid = server["pid"]
        assert server["url"].startswith("http://127.0.0.1:")
        # Both jobs' flow runs live on that one server: it was started once and reused.
        with temporary_settings({PREFECT_API_URL: server["url"]}):
            runs = [flow_run_of(name, final=True) for name in names]
        assert [run.name for run in runs] == names
        assert all(run.state.is_completed() for run in runs)
        assert json.loads(state.read_text())["pid"] == server_pid
    finally:
        stop = subprocess.run(
            [sys.executable, "-m", "prefect_kubeflow.flows.server", "stop"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert stop.stdout.strip() == "stopped"
    assert server_pid is not None and not processes.is_alive(server_pid, None)
    assert not state.exists()
