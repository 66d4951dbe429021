"""Job records outlive the process that made them: any interpreter sees the same jobs."""

import json
import subprocess
import sys
import textwrap

from conftest import wait_for
from training_functions import ddp_all_reduce

from prefect_kubeflow import CustomTrainer
from prefect_kubeflow.backends import processes
from prefect_kubeflow.constants import constants

ROOT = __file__.rsplit("/tests/", 1)[0]


def _python(code: str, env_extra: dict | None = None) -> str:
    import os

    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=f"{ROOT}/tests",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_and_get_from_a_second_interpreter(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=ddp_all_reduce, num_nodes=2))
    client.wait_for_job_status(name, timeout=180, polling_interval=0.2)
    out = _python(
        f"""
        import json
        from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient
        client = TrainerClient(LocalProcessBackendConfig(jobs_dir={str(jobs_dir)!r}))
        job = client.get_job({name!r})
        print(json.dumps({{
            "names": [j.name for j in client.list_jobs()],
            "status": job.status,
            "steps": [[s.name, s.status] for s in job.steps],
            "lines": [l for l in client.get_job_logs({name!r}) if "sum=" in l],
        }}))
        """
    )
    seen = json.loads(out)
    assert seen["names"] == [name]
    assert seen["status"] == constants.TRAINJOB_COMPLETE
    assert seen["steps"] == [["node-0", "Succeeded"], ["node-1", "Succeeded"]]
    assert sorted(line.split("]")[0] for line in seen["lines"]) == ["[node-0", "[node-1"]


def test_a_job_outlives_the_script_that_submitted_it(client, jobs_dir, tmp_path):
    release = tmp_path / "release"
    from prefect.settings import PREFECT_API_URL

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
    wait_for(
        lambda: any("waiting" in line for line in client.get_job_logs(name)), 120, "first line"
    )
    assert client.get_job(name).status == constants.TRAINJOB_RUNNING
    release.touch()
    job = client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE


def test_training_survives_an_unreachable_prefect_api(config, jobs_dir, tmp_path):
    """No Prefect API answers: the job still runs to Complete, with every line in its log."""
    import socket

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
    from prefect_kubeflow import TrainerClient

    client = TrainerClient(backend_config=config)
    job = client.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE
    for node in (0, 1):
        lines = [line for line in client.get_job_logs(name, node_index=node) if "line " in line]
        assert lines == [f"line {i}\n" for i in range(500)]
    assert not (jobs_dir / name / "flow_run.json").exists()
    owner = json.loads((jobs_dir / name / "owner.json").read_text())
    wait_for(lambda: not processes.is_alive(owner["pid"], owner["start"]), 300, "supervisor exit")
    assert "watching the nodes without Prefect" in (jobs_dir / name / "supervisor.log").read_text()
    client.delete_job(name)
