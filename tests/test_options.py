"""Job options: what each backend honours, and every bad option refused with what is allowed,
before anything is created."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from training_functions import print_env

from prefect_kubeflow import CustomTrainer, CustomTrainerContainer, TrainerClient
from prefect_kubeflow.errors import InvalidInputError, UnsupportedOptionError
from prefect_kubeflow.options import (
    COMMON,
    KUBERNETES_ONLY,
    Annotations,
    Labels,
    Name,
    RuntimePatch,
    TrainerArgs,
    TrainerCommand,
    resolve_options,
)

ALL = COMMON | KUBERNETES_ONLY


def test_options_fold_into_one():
    folded = resolve_options(
        [
            Name("my-job-1"),
            Labels({"team": "nlp"}),
            Labels({"example.com/tier": "gold", "empty": ""}),
            Annotations({"note": "anything at all: {json}"}),
            RuntimePatch({"template": {}}),
            TrainerCommand(["torchrun"]),
            TrainerArgs(["train.py"]),
        ],
        ALL,
        "KubernetesBackend",
    )
    assert folded.name == "my-job-1"
    assert folded.labels == {"team": "nlp", "example.com/tier": "gold", "empty": ""}
    assert folded.annotations == {"note": "anything at all: {json}"}
    assert folded.runtime_patches == [
        {"manager": "trainer.kubeflow.org/kubeflow-sdk", "trainingRuntimeSpec": {"template": {}}}
    ]
    assert (folded.trainer_command, folded.trainer_args) == (["torchrun"], ["train.py"])
    assert resolve_options(None, COMMON, "x").name is None


def test_the_kubeflow_sdks_own_option_objects_are_read_by_name():
    @dataclass
    class Labels:  # as kubeflow.trainer.options defines it
        labels: dict

    assert resolve_options([Labels({"a": "b"})], COMMON, "x").labels == {"a": "b"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ("not a list", "options must be a list"),
        ([{"name": "x"}], r"is not a job option; allowed: Annotations, Labels, Name"),
        ([Name("UPPER")], "job name 'UPPER' is invalid"),
        ([Name("1abc")], "starting with a letter"),
        ([Name("a" * 54)], "at most 53 characters"),
        ([Name("ok"), Name("again")], "option Name is given twice"),
        ([Labels({"bad key!": "v"})], "Labels key 'bad key!' is invalid"),
        ([Labels({"k": "has space"})], "label value 'has space' of 'k' is invalid"),
        ([Labels({"k": 1})], r"Labels\['k'\] must be a str"),
        ([Labels(["k"])], "Labels must be a dict"),
        ([Labels({"prefect-kubeflow.io/job": "x"})], "is reserved"),
        ([Annotations({"trainer.kubeflow.org/x": "y"})], "is reserved"),
        ([TrainerCommand("torchrun x")], "TrainerCommand must be a list of str"),
        ([RuntimePatch(["x"])], "training_runtime_spec must be a dict"),
        ([RuntimePatch({}), RuntimePatch({"a": 1})], "two RuntimePatch options share the manager"),
        ([RuntimePatch({}, manager="prefect-kubeflow.io/backend")], "the Kubernetes backend's own"),
    ],
)
def test_bad_options_name_the_value_and_what_is_allowed(options, match):
    with pytest.raises(InvalidInputError, match=match):
        resolve_options(options, ALL, "KubernetesBackend")


@pytest.mark.parametrize("option", [RuntimePatch({}), TrainerCommand([]), TrainerArgs([])])
def test_kubernetes_only_options_are_refused_elsewhere_naming_both(option):
    kind = type(option).__name__
    with pytest.raises(UnsupportedOptionError, match=f"option {kind} is not supported by the "):
        resolve_options([option], COMMON, "ContainerBackend")


def test_the_local_backend_refuses_images_restarts_are_checked_and_nothing_is_made(client):
    with pytest.raises(UnsupportedOptionError, match="LocalProcessBackend runs no images"):
        client.train(trainer=CustomTrainerContainer(image="me/train:1"))
    with pytest.raises(UnsupportedOptionError, match="option RuntimePatch is not supported by"):
        client.train(trainer=CustomTrainer(func=print_env), options=[RuntimePatch({})])
    with pytest.raises(InvalidInputError, match="max_restarts must be an int >= 0, got -1"):
        CustomTrainer(func=print_env, max_restarts=-1)
    with pytest.raises(InvalidInputError, match="max_restarts must be an int >= 0, got True"):
        CustomTrainerContainer(image="x", max_restarts=True)
    with pytest.raises(UnsupportedOptionError, match="initializer is not supported"):
        client.train(trainer=CustomTrainer(func=print_env), initializer=object())
    with pytest.raises(InvalidInputError, match="labels must be a dict"):
        client.list_jobs(labels=["team"])
    assert client.list_jobs() == []


def test_trainer_command_needs_an_image_trainer(tmp_path):
    from prefect_kubeflow.jobspecs import build_spec

    client = TrainerClient()

    class Everything:  # a backend that honours every option
        supported_options = ALL
        runs_images = True
        gang_restarts = True

    with pytest.raises(InvalidInputError, match="TrainerCommand and TrainerArgs need a Custom"):
        build_spec(
            Everything(),  # type: ignore[arg-type]
            client.runtimes,
            CustomTrainer(func=print_env),
            None,
            [TrainerCommand(["x"])],
        )
