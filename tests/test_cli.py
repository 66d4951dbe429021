"""The ``prefect-kubeflow`` command, as a user runs it: every command on the local backend,
``--json`` on the read commands, and bad input answered in one line, exiting non-zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

TRAIN_FILE = textwrap.dedent(
    """
    def train(count: int = 2, fail: bool = False):
        import os

        from prefect_kubeflow import update_trainjob_status

        rank = os.environ["RANK"]
        for i in range(count):
            print(f"rank {rank} step {i}", flush=True)
        update_trainjob_status(100, 0, {"loss": 0.1})
        if fail and rank == "1":
            raise RuntimeError("rank 1 gave up")
    """
)


@pytest.fixture
def cli(tmp_path):
    """Run ``prefect-kubeflow`` with its jobs and caches under `tmp_path`; (code, out, err)."""
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }

    def run(*argv: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "prefect_kubeflow.cli", *argv],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout, done.stderr

    (tmp_path / "train.py").write_text(TRAIN_FILE)
    return run


def test_train_wait_read_and_delete_a_job(cli):
    code, out, _ = cli("train", "train.py:train", "--nodes", "2", "--arg", "count=3", "--json")
    assert code == 0
    name = json.loads(out)["name"]
    code, out, _ = cli("wait", name, "--json")
    assert code == 0 and json.loads(out)["status"] == "Complete"

    code, out, _ = cli("jobs")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["NAME", "STATUS", "NODES"]
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [[name, "Complete", "2"]]
    code, out, _ = cli("jobs", "--json")
    assert [job["name"] for job in json.loads(out)] == [name]

    code, out, _ = cli("get", name, "--json")
    job = json.loads(out)
    assert job["status"] == "Complete" and job["trainer_status"]["progress_percentage"] == 100
    assert job["trainer_status"]["metrics"] == {"loss": "0.1"}
    code, out, _ = cli("get", name)
    assert out.startswith(f"{name} Complete 100% [node-0=Succeeded node-1=Succeeded]")
    assert "metrics: loss=0.1" in out

    code, whole, _ = cli("logs", name, "--node", "1")
    assert code == 0 and [line for line in whole.splitlines() if "step" in line] == [
        f"rank 1 step {i}" for i in range(3)
    ]
    # The last line may be torch's own (an agent's shutdown error) rather than the function's.
    code, out, _ = cli("logs", name, "--node", "1", "--tail", "1")
    assert code == 0 and out == whole.splitlines(keepends=True)[-1]
    code, out, _ = cli("logs", name, "-f")
    assert [line for line in out.splitlines() if "step" in line] == [
        f"[node-{rank}] rank {rank} step {i}" for rank in (0, 1) for i in range(3)
    ]

    assert cli("delete", name) == (0, f"deleted {name}\n", "")
    code, _, err = cli("delete", name)
    assert code == 1 and err == f"error: TrainJob {name!r} not found\n"


def test_wait_exits_non_zero_when_the_job_failed(cli):
    _, out, _ = cli("train", "train.py:train", "--nodes", "2", "--arg", "fail=true")
    name = out.strip()
    code, out, err = cli("wait", name)
    assert code == 1
    assert out.startswith(f"{name} Failed")
    assert err.startswith(f"error: TrainJob {name!r} failed") and err.count("\n") == 1
    cli("delete", name)


def test_runtimes_and_the_embedded_server(cli):
    code, out, _ = cli("runtimes", "--json")
    assert code == 0 and "torch-distributed" in [r["name"] for r in json.loads(out)]
    code, out, _ = cli("runtimes")
    assert out.startswith("torch-distributed")
    code, out, _ = cli("server", "status", "--json")
    assert code == 0 and json.loads(out) == {"running": False, "url": None}
    assert cli("server", "stop") == (0, "no embedded server was running\n", "")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["train", "missing.py:train"], "error: no file 'missing.py' (from 'missing.py:train')"),
        (["train", "train.py"], "error: 'train.py' must be path/to/file.py:function"),
        (["train", "train.py:nothing"], "error: 'train.py' has no function 'nothing'"),
        (["train", "train.py:train", "--arg", "x"], "error: --arg 'x' must be key=value"),
        (["train", "train.py:train", "--nodes", "0"], "error: num_nodes must be"),
        (["train", "train.py:train", "--arg", "nope=1"], "error: "),
        (["train", "train.py:train", "--runtime", "nope"], "error: "),
        (["get", "nosuch"], "error: TrainJob 'nosuch' not found"),
        (["logs", "nosuch"], "error: TrainJob 'nosuch' not found"),
        (["jobs", "--backend", "mars"], "error: backend 'mars' is unknown"),
        (["frobnicate"], "error: No such command 'frobnicate'."),
        (["get"], "error: Missing parameter: job"),
    ],
    ids=lambda value: value if isinstance(value, str) else "-".join(value)[:40],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(cli, argv, error):
    code, out, err = cli(*argv)
    assert code in (1, 2) and out == ""
    assert err.startswith(error) and err.count("\n") == 1, err
    _, listed, _ = cli("jobs", "--json")
    assert json.loads(listed) == []  # nothing was created
