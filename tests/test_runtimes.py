"""Runtimes in use: parsing details, and a runtime source driving real local TrainJobs
(nodes, processes per node, environment), with the trainer's overrides."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import wait_for
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from runtime_servers import runtime_doc, runtime_yaml
from training_functions import rank_env, wait_for_file

from prefect_kubeflow import (
    CustomTrainer,
    LocalProcessBackendConfig,
    Runtime,
    RuntimeTrainer,
    TrainerClient,
    TrainerType,
    TrainingRuntimeSource,
)
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import InvalidRuntimeError, RuntimeParseError
from prefect_kubeflow.runtimes import RuntimeSpec, parse_runtimes

# -- parsing --------------------------------------------------------------------------------------


def test_parse_reads_what_backends_use():
    doc = runtime_doc(
        "gpu-runtime",
        nproc="4",
        num_nodes=2,
        env={"A": "1"},
        resources={"nvidia.com/gpu": 2, "memory": "8Gi"},
        kind="TrainingRuntime",
    )
    doc["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"
    ][0]["env"].append({"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s"}}})
    [spec] = parse_runtimes(yaml.safe_dump(doc), "mem://gpu.yaml")
    assert spec.num_proc_per_node == 4  # an IntOrString written as a string
    assert spec.env == {"A": "1"}  # valueFrom resolves only in a cluster
    assert spec.resources == {"nvidia.com/gpu": 2, "memory": "8Gi"}
    trainer = spec.runtime.trainer
    assert (trainer.device, trainer.device_count, trainer.num_nodes) == ("gpu", "2", 2)
    assert trainer.trainer_type is TrainerType.CUSTOM_TRAINER
    assert RuntimeSpec.from_dict(spec.to_dict()) == spec


def test_parse_the_node_job_among_others_and_defaults():
    doc = runtime_doc("with-init", framework=None)
    jobs = doc["spec"]["template"]["spec"]["replicatedJobs"]
    init = {
        "name": "model-initializer",
        "template": {"spec": {"template": {"spec": {"containers": [{"name": "init"}]}}}},
    }
    jobs.insert(0, init)
    del doc["spec"]["mlPolicy"]["torch"]
    [spec] = parse_runtimes(yaml.safe_dump(doc), "mem://init.yaml")
    assert spec.runtime.trainer.image == "example.com/torch:1"  # the node's, not the init's
    assert spec.runtime.trainer.framework == constants.UNKNOWN
    assert spec.ml_policy is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100 + "]" * 100, "nested deeper than 64 levels"),
        (runtime_yaml("a") + "---\n" + runtime_yaml("b", nproc=0), "document 2: field"),
        (runtime_yaml("x").replace("trainer.kubeflow.org/v1alpha1", "v1"), "field apiVersion"),
        ("", "it is empty"),
        (runtime_yaml("float-nproc", nproc=4.0), "field spec.mlPolicy.torch.numProcPerNode"),
    ],
)
def test_parse_errors_name_the_document_and_field(text, reason):
    with pytest.raises(RuntimeParseError, match=re.escape(reason)) as raised:
        parse_runtimes(text, "mem://bad.yaml")
    assert raised.value.source == "mem://bad.yaml"


# -- a runtime source on the local backend ------------------------------------------------------


@pytest.fixture
def runtimes_dir(tmp_path) -> Path:
    folder = tmp_path / "team-runtimes"
    folder.mkdir()
    (folder / "ddp.yaml").write_text(
        runtime_yaml("team-ddp", num_nodes=2, nproc=2, env={"PK_TEST_VAR": "from-runtime"})
    )
    (folder / "others.yaml").write_text(
        runtime_yaml("team-mpi", framework="deepspeed", policy="mpi", nproc=1)
        + "---\n"
        + runtime_yaml("team-tune", command=["tune", "run", "full_finetune"])
    )
    return folder


@pytest.fixture
def config(tmp_path, jobs_dir, runtimes_dir) -> LocalProcessBackendConfig:
    return LocalProcessBackendConfig(
        jobs_dir=str(jobs_dir),
        venv_cache_dir=str(tmp_path / "venvs"),
        stop_grace_period_seconds=5,
        runtime_source=TrainingRuntimeSource(
            sources=[str(runtimes_dir)],
            cache_dir=str(tmp_path / "runtime-cache"),
            github_token="ghp_never_in_argv",
        ),
    )


def rank_lines(client, name, step=None) -> list[str]:
    lines = client.get_job_logs(name, step=step) if step else client.get_job_logs(name)
    return sorted(line.rstrip("\n") for line in lines if line.startswith("rank="))


def test_the_runtime_sets_nodes_processes_and_env(client, runtimes_dir):
    listed = {r.name: r for r in client.list_runtimes()}
    assert list(listed) == ["team-ddp", "team-mpi", "team-tune", "torch-distributed"]
    assert listed["team-ddp"].origin == str(runtimes_dir / "ddp.yaml")
    name = client.train(runtime="team-ddp", trainer=CustomTrainer(func=rank_env))
    job = client.wait_for_job_status(name, timeout=180)
    assert job.status == constants.TRAINJOB_COMPLETE
    assert job.num_nodes == 2 and job.runtime.origin == str(runtimes_dir / "ddp.yaml")
    assert [step.device_count for step in job.steps] == ["2", "2"]
    assert rank_lines(client, name, "node-0") + rank_lines(client, name, "node-1") == [
        f"rank={rank} local_world=2 PK_TEST_VAR=from-runtime" for rank in range(4)
    ]


def package_argvs() -> dict[int, bytes]:
    """The argv of every live process (but this one) that runs code of this package."""
    argvs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        if b"prefect_kubeflow" in argv:
            argvs[int(entry.name)] = argv
    return argvs


def test_the_token_never_reaches_an_argv_or_the_job_files(client, jobs_dir, tmp_path):
    release = tmp_path / "release"
    name = client.train(
        runtime="team-ddp",
        trainer=CustomTrainer(func=wait_for_file, func_args={"path": str(release)}),
    )
    try:
        # Read the argvs while the nodes wait for `release`: the job's processes are alive then.
        wait_for(
            lambda: any("waiting" in line for line in client.get_job_logs(name, step="node-0")),
            180,
            "node-0 to start training",
        )
        argvs = package_argvs()
    finally:
        release.touch()  # the job ends, whatever failed above
    assert client.wait_for_job_status(name, timeout=180).status == constants.TRAINJOB_COMPLETE
    assert argvs, "no process of this package was alive while the job ran"
    assert [pid for pid, argv in argvs.items() if b"ghp_never_in_argv" in argv] == []
    assert "ghp_never_in_argv" not in " ".join(
        path.read_text(errors="replace") for path in (jobs_dir / name).rglob("*") if path.is_file()
    )


def test_the_trainer_overrides_the_runtime(client):
    name = client.train(
        runtime=client.get_runtime("team-ddp"),
        trainer=CustomTrainer(
            func=rank_env,
            num_nodes=1,
            resources_per_node={"cpu": 1},
            env={"PK_TEST_VAR": "from-trainer"},
        ),
    )
    job = client.wait_for_job_status(name, timeout=180)
    assert job.num_nodes == 1 and [s.device_count for s in job.steps] == ["1"]
    assert rank_lines(client, name, "node-0") == ["rank=0 local_world=1 PK_TEST_VAR=from-trainer"]


def test_runtimes_this_backend_cannot_run_are_refused(client, jobs_dir):
    with pytest.raises(InvalidRuntimeError, match="'team-mpi' has ML policy 'mpi'"):
        client.train(runtime="team-mpi", trainer=CustomTrainer(func=rank_env))
    with pytest.raises(InvalidRuntimeError, match="'team-tune' runs a built-in trainer"):
        client.train(runtime="team-tune", trainer=CustomTrainer(func=rank_env))
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


def test_a_runtime_found_nowhere_gets_the_frameworks_default_image(client):
    adhoc = Runtime(
        name="adhoc",
        trainer=RuntimeTrainer(
            trainer_type=TrainerType.CUSTOM_TRAINER, framework="torch", image="", num_nodes=1
        ),
    )
    name = client.train(runtime=adhoc, trainer=CustomTrainer(func=rank_env))
    job = client.wait_for_job_status(name, timeout=180)
    assert job.runtime.name == "adhoc" and job.runtime.origin is None
    assert job.runtime.trainer.image == constants.DEFAULT_FRAMEWORK_IMAGES["torch"]


def test_the_nested_source_block_saves_and_loads(config, runtimes_dir):
    config.save("team-local-with-runtimes", overwrite=True)
    loaded = LocalProcessBackendConfig.load("team-local-with-runtimes")
    assert loaded.runtime_source is not None
    assert loaded.runtime_source.sources == [str(runtimes_dir)]
    assert loaded.runtime_source.github_token is not None
    assert loaded.runtime_source.github_token.get_secret_value() == "ghp_never_in_argv"
    listed = TrainerClient(backend_config=loaded).list_runtimes()
    assert listed[0].name == "team-ddp"


def test_a_subflow_with_a_token_bearing_source_keeps_the_token_out_of_the_api(config):
    @flow(name="team-training")
    def team_training() -> str:
        client = TrainerClient(backend_config=config)
        return client.train(runtime="team-ddp", trainer=CustomTrainer(func=rank_env))

    name = team_training()
    with get_client(sync_client=True) as api:
        [run] = api.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [name]}))
        assert run.state is not None and run.state.is_completed()
        assert "ghp_never_in_argv" not in json.dumps(run.parameters, default=str)


def test_a_runtime_object_keeps_its_own_fields(client):
    runtime = client.get_runtime("team-ddp")
    runtime.trainer.num_nodes = 1  # as a user may change it before train()
    name = client.train(runtime=runtime, trainer=CustomTrainer(func=rank_env))
    job = client.wait_for_job_status(name, timeout=180)
    assert job.num_nodes == 1
    # The document's numProcPerNode and env still apply.
    assert rank_lines(client, name, "node-0") == [
        f"rank={rank} local_world=2 PK_TEST_VAR=from-runtime" for rank in range(2)
    ]


def test_a_null_num_proc_per_node_means_unset():
    [spec] = parse_runtimes(runtime_yaml("null-nproc", nproc=None), "mem://null.yaml")
    assert spec.num_proc_per_node == "auto"
