"""Rank 0's return value as the job's result, beyond the conformance suite: cloudpickle in the
containers, Prefect's result storage, the Kubernetes termination message, the source a task
ships, and `get_job_result`'s errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import flow_run_of, wait_for
from harnesses import HARNESSES
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings
from test_kubernetes_specs import _bootstrap
from training_functions import ddp_result, returns_local_class, sleep_forever

from prefect_kubeflow import CustomTrainer, TrainerClient, TrainJobTaskRunner
from prefect_kubeflow.backends import entrypoint
from prefect_kubeflow.backends.kubernetes import bootstrap
from prefect_kubeflow.backends.kubernetes import trainjob as tj
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import BackendError, JobNotFoundError, JobResultError
from prefect_kubeflow.flows.trainjob import run_trainjob
from prefect_kubeflow.types import function_source

# Not Kubernetes: its image has no cloudpickle of ours (plain pickle there, see the README).
CLOUDPICKLE_BACKENDS = [name for name in HARNESSES if name != "kubernetes"]


@pytest.fixture(params=CLOUDPICKLE_BACKENDS)
def harness(request, tmp_path):
    backend = HARNESSES[request.param](tmp_path)
    yield backend
    getattr(backend, "close", lambda: None)()


def test_a_class_defined_in_the_function_comes_back_by_value(harness):
    # Only cloudpickle ships a class defined inside the function; in a container it is the
    # host's own copy, mounted, so the same version reads it back here.
    client = TrainerClient(backend_config=harness.config(auto_remove=True))
    spec = client.build_spec(CustomTrainer(func=returns_local_class, num_nodes=2))
    checkpoint = run_trainjob(spec, client.backend_config)
    assert type(checkpoint).__name__ == "Checkpoint"
    assert (checkpoint.label, checkpoint.rank) == ("best", 0)
    assert harness.leftovers(spec.name) == []


def test_the_flow_runs_result_is_persisted_when_results_persist(tmp_path):
    client = TrainerClient(backend_config=HARNESSES["local"](tmp_path).config())
    spec = client.build_spec(CustomTrainer(func=ddp_result, func_args={"scale": 3}, num_nodes=2))
    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
        run_trainjob(spec, client.backend_config)
    # Read back from Prefect's result storage, through the API's record of the flow run.
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(flow_run_of(spec.name, final=True).id).state
    stored = state.result()
    assert (stored["rank"], stored["sum"].tolist()) == (0, [9.0])
    client.delete_job(spec.name)


def test_get_job_result_of_a_job_that_has_no_result_yet(tmp_path):
    local = HARNESSES["local"](tmp_path)
    client = TrainerClient(backend_config=local.config())
    with pytest.raises(JobNotFoundError, match="nosuchjob"):
        client.get_job_result("nosuchjob")
    name = client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=1))
    wait_for(lambda: client.get_job(name).status == constants.TRAINJOB_RUNNING, 120, "running")
    with pytest.raises(JobResultError, match="is Running: only a Complete job has a result"):
        client.get_job_result(name)
    client.delete_job(name)
    assert local.leftovers(name) == []


def _node_only_module(tmp_path) -> str:
    """A folder holding a module that only the nodes put on their path."""
    folder = tmp_path / "node_only"
    folder.mkdir()
    (folder / "node_only_values.py").write_text("class Value:\n    pass\n")
    return str(folder)


@task
def node_only_value(folder: str):
    """A value whose class only the nodes can import."""
    import sys

    sys.path.insert(0, folder)
    import node_only_values

    return node_only_values.Value()


def test_a_result_that_cannot_be_unpickled_here(tmp_path):
    local = HARNESSES["local"](tmp_path)
    client = TrainerClient(backend_config=local.config())
    folder = _node_only_module(tmp_path)
    spec = client.build_spec(
        CustomTrainer(func=node_only_value.fn, func_args={"folder": folder}, num_nodes=1)
    )
    # The job completed: its flow run does too, its result lost (with a warning).
    state = run_trainjob(spec, client.backend_config, return_state=True)
    assert state.is_completed() and state.result() is None
    with pytest.raises(JobResultError, match="cannot be unpickled here") as raised:
        client.get_job_result(spec.name)
    assert "node_only_values" in str(raised.value.__cause__)

    # A task runner's future needs the value: its task run fails, saying why.
    @flow(task_runner=TrainJobTaskRunner(backend_config=local.config(), num_nodes=1))
    def needs_it():
        future = node_only_value.submit(folder)
        future.wait()
        with pytest.raises(JobResultError, match="completed: rank 0's return value"):
            future.result()

    needs_it()
    for job in client.list_jobs():
        client.delete_job(job.name)
        assert local.leftovers(job.name) == []


def test_on_kubernetes_rank_zeros_value_travels_in_the_termination_message(tmp_path):
    source = "def value():\n    import os\n    return {'rank': int(os.environ['RANK'])}\n"
    done = _bootstrap(tmp_path, source, "value")
    assert done.returncode == 0, done.stderr
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith(bootstrap.RESULT_MARK)
    assert bootstrap.RESULT_FILE == entrypoint.RESULT_FILE  # where the worker leaves it
    pod = _terminated_pod(message)
    assert pickle_loads(tj.result_of(pod)) == {"rank": 0}
    assert tj.result_of(_terminated_pod("")) is None


def test_on_kubernetes_a_result_over_4_kib_is_an_error_naming_its_size(tmp_path):
    source = "def big():\n    import os\n    return os.urandom(8000)\n"
    done = _bootstrap(tmp_path, source, "big")
    assert done.returncode == 0, done.stderr
    message = (tmp_path / "termination-log").read_text()
    with pytest.raises(BackendError, match="4096 bytes compressed") as raised:
        tj.result_of(_terminated_pod(message))
    assert "was 80" in str(raised.value)  # 8,000 bytes and pickle's framing
    with pytest.raises(BackendError, match="no readable result"):
        tj.result_of(_terminated_pod(bootstrap.RESULT_MARK + "not base64!"))


def _terminated_pod(message: str) -> dict:
    state = {"terminated": {"exitCode": 0, "message": message}}
    return {"status": {"containerStatuses": [{"name": constants.NODE, "state": state}]}}


def pickle_loads(data: bytes | None):
    import pickle

    assert data is not None
    return pickle.loads(data)


def test_a_tasks_source_is_shipped_without_prefects_decorators(tmp_path):
    module = tmp_path / "decorated.py"
    module.write_text(
        "import functools\nimport prefect\nfrom prefect import task\n\n\n"
        "def traced(f):\n    @functools.wraps(f)\n    def w(*a):\n        return f(*a)\n"
        "    return w\n\n\n"
        "@task\ndef plain():\n    return 1\n\n\n"
        "@prefect.task(\n    retries=2,\n    name='x',\n)\n@traced\n"
        "def kept(a):\n    # a comment\n    return a\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, json; sys.path.insert(0, sys.argv[1]); import decorated; "
            "from prefect_kubeflow.types import function_source as f; "
            "print(json.dumps([f(decorated.plain.fn), f(decorated.kept.fn)]))",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    import json

    plain, kept = json.loads(done.stdout)
    assert plain == "def plain():\n    return 1\n"
    assert kept == "@traced\ndef kept(a):\n    # a comment\n    return a\n"
    assert function_source(ddp_result).startswith("def ddp_result(")
