"""Every class of bad input: a typed error naming the value, and nothing left behind."""

import functools
import math
import os
from pathlib import Path

import pytest
from training_functions import print_env, takes_two

from prefect_kubeflow import CustomTrainer, CustomTrainerContainer, Runtime, TrainerClient
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import (
    InvalidFuncArgsError,
    InvalidFunctionError,
    InvalidInputError,
    InvalidPackageSpecError,
    InvalidStatusError,
    RuntimeNotFoundError,
    StepNotFoundError,
)


def _closure():
    captured = 1

    def inner():
        return captured

    return inner


class Callable:
    def __call__(self):
        pass


@pytest.mark.parametrize(
    ("func", "words"),
    [
        (42, "42"),
        (len, "builtin"),
        (lambda: None, "lambda"),
        (Callable(), "Callable"),
        (functools.partial(print_env, name="X"), "partial"),
        (_closure(), "closes over captured"),
    ],
)
def test_functions_that_cannot_be_shipped(func, words):
    with pytest.raises(InvalidFunctionError, match=words) as error:
        CustomTrainer(func=func)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("func_args", "words"),
    [
        ({"a": object()}, "JSON-serialisable"),
        ({"a": math.nan}, "JSON-serialisable"),
        ({"a": {1, 2}}, "JSON-serialisable"),
        ({"a": (1, 2)}, "round trip"),
        ({}, r"missing a required argument: 'a'"),
        ({"a": 1, "c": 2}, "unexpected keyword argument 'c'"),
        ([1], "must be a dict"),
    ],
)
def test_func_args_that_do_not_fit(func_args, words):
    with pytest.raises(InvalidFuncArgsError, match=words):
        CustomTrainer(func=takes_two, func_args=func_args)


@pytest.mark.parametrize("num_nodes", [0, -1, 2.0, "2", True])
def test_num_nodes_must_be_a_positive_int(num_nodes):
    with pytest.raises(
        InvalidInputError, match=f"num_nodes must be an int >= 1, got {num_nodes!r}"
    ):
        CustomTrainer(func=print_env, num_nodes=num_nodes)


@pytest.mark.parametrize("spec", ["numpy>>1", "not a package!", "", "pkg[extra"])
def test_package_specs_pip_would_reject(spec):
    with pytest.raises(InvalidPackageSpecError, match="packages_to_install entry"):
        CustomTrainer(func=print_env, packages_to_install=[spec])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"env": {"1BAD": "x"}}, "env name '1BAD'"),
        ({"env": {"OK": 1}}, r"env\['OK'\] must be a str"),
        ({"resources_per_node": {"tpu": 1}}, "key 'tpu' is not supported"),
        ({"resources_per_node": {"cpu": "lots"}}, "must be a number"),
        ({"resources_per_node": {"cpu": -1}}, "must be >= 0"),
        ({"pip_index_urls": ["ftp://x"]}, "must be an http"),
        ({"pip_index_urls": []}, "non-empty list"),
    ],
)
def test_other_trainer_fields(kwargs, words):
    with pytest.raises(InvalidInputError, match=words):
        CustomTrainer(func=print_env, **kwargs)


def _assert_nothing_created(client, jobs_dir):
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []
    assert client.list_jobs() == []


def test_train_rejects_bad_trainers_and_runtimes(client, jobs_dir):
    with pytest.raises(InvalidInputError, match="trainer must be a CustomTrainer"):
        client.train(trainer=None)
    with pytest.raises(InvalidInputError, match="CustomTrainer"):
        client.train(trainer=CustomTrainerContainer(image="busybox"))
    with pytest.raises(RuntimeNotFoundError, match="'no-such-runtime' not found; known: torch"):
        client.train(runtime="no-such-runtime", trainer=CustomTrainer(func=print_env))
    with pytest.raises(RuntimeNotFoundError):
        client.get_runtime("no-such-runtime")
    with pytest.raises(InvalidInputError, match="runtime must be a name or a Runtime"):
        client.train(runtime=42, trainer=CustomTrainer(func=print_env))
    with pytest.raises(InvalidInputError, match="initializer"):
        client.train(initializer=object(), trainer=CustomTrainer(func=print_env))
    _assert_nothing_created(client, jobs_dir)


def test_a_trainer_changed_after_it_was_built_is_checked_again(client, jobs_dir):
    trainer = CustomTrainer(func=print_env)
    trainer.num_nodes = 0
    with pytest.raises(InvalidInputError, match="num_nodes must be an int >= 1, got 0"):
        client.train(trainer=trainer)
    _assert_nothing_created(client, jobs_dir)


def test_wait_and_logs_arguments(client, jobs_dir):
    name = client.train(trainer=CustomTrainer(func=print_env))
    with pytest.raises(InvalidStatusError, match=r"'Done'.*allowed: \['Complete', 'Created'"):
        client.wait_for_job_status(name, status={"Done"})
    with pytest.raises(InvalidStatusError):
        client.wait_for_job_status(name, status=set())
    with pytest.raises(InvalidInputError, match="timeout must be >= 0 seconds, got -1"):
        client.wait_for_job_status(name, timeout=-1)
    with pytest.raises(InvalidInputError, match="polling_interval must be > 0"):
        client.wait_for_job_status(name, polling_interval=0)
    with pytest.raises(StepNotFoundError, match="step 'node-5' not found; known: node-0"):
        client.get_job_logs(name, step="node-5")
    with pytest.raises(StepNotFoundError, match="'node-3'"):
        client.get_job_logs(name, node_index=3)
    with pytest.raises(InvalidInputError, match="not both"):
        client.get_job_logs(name, step="node-0", node_index=0)
    with pytest.raises(InvalidInputError, match="tail_lines must be an int >= 0, got -2"):
        client.get_job_logs(name, tail_lines=-2)
    assert client.wait_for_job_status(name, timeout=120, polling_interval=0.2).status == (
        constants.TRAINJOB_COMPLETE
    )


def test_wait_times_out_with_a_typed_error(client, tmp_path):
    from training_functions import wait_for_file

    release = tmp_path / "release"
    name = client.train(trainer=CustomTrainer(func=wait_for_file, func_args={"path": str(release)}))
    with pytest.raises(TimeoutError, match=f"TrainJob '{name}' is (Created|Running)"):
        client.wait_for_job_status(name, timeout=0.5, polling_interval=0.1)
    release.touch()
    client.wait_for_job_status(name, timeout=120, polling_interval=0.2)


def test_a_runtime_object_is_accepted(client):
    runtime = client.get_runtime("torch-distributed")
    assert isinstance(runtime, Runtime)
    name = client.train(runtime=runtime, trainer=CustomTrainer(func=print_env))
    job = client.wait_for_job_status(name, timeout=120, polling_interval=0.2)
    assert (job.runtime.name, job.runtime.trainer.image) == (runtime.name, runtime.trainer.image)
    assert (job.runtime.trainer.device, job.runtime.trainer.device_count) == ("cpu", "1")


def _children() -> set[str]:
    pid = os.getpid()
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_no_process_or_folder_outlives_a_rejected_train(client, jobs_dir):
    before = _children()
    for trainer in (None, CustomTrainerContainer(image="x")):
        with pytest.raises(InvalidInputError):
            client.train(trainer=trainer)
    with pytest.raises(RuntimeNotFoundError):
        client.train(runtime="missing", trainer=CustomTrainer(func=print_env))
    assert _children() == before
    _assert_nothing_created(client, jobs_dir)


def test_a_backend_config_must_be_a_backend_block():
    with pytest.raises(InvalidInputError, match="backend_config must be a backend configuration"):
        TrainerClient(backend_config=object())
