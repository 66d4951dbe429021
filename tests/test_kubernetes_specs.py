"""The Kubernetes backend's pure parts: every TrainJob body it would send validates against the
real Trainer CRD, pods read back as nodes, and the node bootstrap trains for real on this
machine (torchrun reading the ``PET_*`` environment as in a pod)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import JobRecord, JobSpec
from prefect_kubeflow.backends.kubernetes import trainjob as tj
from prefect_kubeflow.backends.kubernetes.podlogs import Position, parse_stamp
from prefect_kubeflow.blocks import KubernetesBackendConfig
from prefect_kubeflow.errors import InvalidInputError

CRD = Path(__file__).parent / "data" / "k8s" / "trainer.kubeflow.org_trainjobs.yaml"
SOURCE = "def train(a, b='x'):\n    import os\n    print('rank', os.environ['RANK'], a, b)\n"


def _schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _spec(**overrides) -> JobSpec:
    fields = {
        "name": "k1b2c3d4e5f",
        "runtime_name": "torch-distributed",
        "framework": "torch",
        "image": "pytorch/pytorch:2.13.0",
        "num_nodes": 2,
        "num_proc_per_node": 2,
        "function_name": "train",
        "function_source": SOURCE,
        "func_args": {"a": 1, "b": "$(rm -rf /); `x`"},
    }
    return JobSpec(**{**fields, **overrides})


def _record(spec: JobSpec) -> JobRecord:
    return JobRecord.for_spec(spec, spec.image, 2, "cpu")


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"resources_per_node": {"cpu": 2, "memory": "4Gi", "gpu": 1}},
        {"env": {"A": "1", "B": "x y"}, "packages_to_install": ["tinypkg==1.0"]},
        {"pip_index_urls": ["https://u:p@idx.example/simple", "http://extra.example/simple"],
         "packages_to_install": ["a", "b>=2"]},
    ],
)  # fmt: skip
def test_every_body_validates_against_the_real_crd(overrides):
    spec = _spec(**overrides)
    record = _record(spec)
    body = tj.build_trainjob(spec, record, rendezvous_timeout=120)
    jsonschema.validate(body, _schema())
    trainer = body["spec"]["trainer"]
    assert body["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 2
    # The command is the bootstrap and its payload: argv items, no shell anywhere.
    python, flag, program, payload = trainer["command"]
    assert (python, flag, program) == ("python3", "-c", tj.BOOTSTRAP)
    assert json.loads(payload)["args"] == spec.func_args
    assert "sh" not in trainer["command"] and "bash" not in trainer["command"]
    assert tj.record_of(body) == record
    pod_labels = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["metadata"]["labels"]
    assert constants.BACKEND_VERSION_LABEL in pod_labels == body["metadata"]["labels"]


def test_job_options_and_a_custom_image_shape_the_trainjob():
    patch = {"template": {"metadata": {"labels": {"from": "patch"}}}}
    spec = _spec(
        labels={"team": "nlp"},
        annotations={"note": "any: text"},
        runtime_patches=[{"manager": "me.example.com/tool", "trainingRuntimeSpec": patch}],
    )
    body = tj.build_trainjob(spec, _record(spec))
    jsonschema.validate(body, _schema())
    assert body["metadata"]["labels"]["team"] == "nlp"
    assert body["metadata"]["annotations"]["note"] == "any: text"
    assert constants.JOB_RECORD_KEY in body["metadata"]["annotations"]
    assert body["spec"]["runtimePatches"][1] == {
        "manager": "me.example.com/tool",
        "trainingRuntimeSpec": patch,
    }
    image = _spec(
        custom_image=True,
        image="me/train:1",
        function_name="",
        function_source="",
        func_args={},
        trainer_command=["torchrun"],
        trainer_args=["/app/train.py", "--epochs", "2"],
    )
    body = tj.build_trainjob(image, _record(image))
    jsonschema.validate(body, _schema())
    trainer = body["spec"]["trainer"]
    assert trainer["image"] == "me/train:1"
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"] == ["/app/train.py", "--epochs", "2"]
    # Without the options, the image's own command runs.
    plain = _spec(custom_image=True, image="me/train:1", function_name="", function_source="")
    assert "command" not in tj.build_trainjob(plain, _record(plain))["spec"]["trainer"]


def test_resources_env_and_pip_settings():
    spec = _spec(
        resources_per_node={"cpu": 2, "memory": "4Gi", "gpu": 1},
        env={"A": "1"},
        packages_to_install=["tinypkg"],
        pip_index_urls=["https://idx.example/simple", "http://extra.example/simple"],
    )
    trainer = tj.build_trainjob(spec, _record(spec))["spec"]["trainer"]
    wanted = {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert trainer["resourcesPerNode"] == {"requests": wanted, "limits": wanted}
    assert {e["name"]: e["value"] for e in trainer["env"]} == {
        "A": "1",
        "PIP_INDEX_URL": "https://idx.example/simple",
        "PIP_EXTRA_INDEX_URL": "http://extra.example/simple",
        "PIP_TRUSTED_HOST": "extra.example",
    }
    assert "idx.example" not in " ".join(trainer["command"])


def test_a_payload_over_the_crd_item_limit_is_refused():
    spec = _spec(func_args={"blob": "x" * (1024 * 1024)})
    with pytest.raises(InvalidInputError, match="holds at most 1048576"):
        tj.build_trainjob(spec, _record(spec))


def test_label_values_are_valid():
    assert tj.label_value("0.1.dev3+g1a2b.d20261130") == "0.1.dev3-g1a2b.d20261130"
    assert tj.label_value("+" + "a" * 80) == "a" * 62


def _pod(index, phase, **terminated):
    status = {"phase": phase, "containerStatuses": [{"name": "node", "state": {}}]}
    if terminated:
        status["containerStatuses"][0]["state"] = {"terminated": terminated}
    return {
        "metadata": {"name": f"j-node-0-{index}-x", "labels": {tj.INDEX_LABEL: str(index)}},
        "status": status,
    }


def test_pods_read_back_as_nodes_and_the_first_real_failure_is_named():
    stopped = _pod(0, "Failed", exitCode=143, finishedAt="2026-11-30T07:00:01Z")
    failed = _pod(
        1, "Failed", exitCode=1, finishedAt="2026-11-30T07:00:01Z", message="rank 3 raised:\nboom"
    )
    states = [tj.node_state(stopped), tj.node_state(failed)]
    assert [s.phase for s in states] == ["Failed", "Failed"]
    assert states[1].ended_at < states[0].ended_at  # SIGTERMed in the same second: the gang's stop
    assert tj.failure_message(1, failed) == "node-1 exited with 1; rank 3 raised:\nboom"
    oom = _pod(0, "Failed", exitCode=137, reason="OOMKilled", finishedAt="2026-11-30T07:00:01Z")
    assert tj.failure_message(0, oom, "last line") == (
        "node-0 was killed by SIGKILL (OOMKilled: out of memory; raise "
        "resources_per_node['memory'])\nlast line"
    )
    assert tj.node_state(None).phase == "Pending"
    # Once a node failed, the others being deleted (or gone) by the failure policy read Failed.
    stopping = _pod(0, "Running")
    stopping["metadata"]["deletionTimestamp"] = "2026-11-30T07:00:02Z"
    phases = [s.phase for s in tj.node_states({0: stopping, 1: failed}, 3, None)]
    assert phases == ["Failed", "Failed", "Failed"]
    assert [s.phase for s in tj.node_states({0: _pod(0, "Running")}, 2, None)] == [
        "Running",
        "Pending",
    ]
    assert tj.node_state(_pod(0, "Running")).phase == "Running"
    assert tj.pods_by_index([failed, stopped]).keys() == {0, 1}


def test_resume_positions_skip_exactly_what_was_delivered():
    a, _ = parse_stamp(b"2026-11-30T07:00:01.5Z")
    b, _ = parse_stamp(b"2026-11-30T07:00:01.500000001Z")
    early, _ = parse_stamp(b"2026-11-30T07:00:00.9Z")
    assert a < b and a == ((a[0], 500_000_000))
    position = Position()
    none = Counter()
    assert position.accept(a, none) and position.accept(a, none) and position.accept(b, none)
    # A line copied late (another stream of the node) is delivered, never dropped.
    assert position.accept(early, none)
    assert position.since_time() == "2026-11-30T07:00:00Z"
    # Resumed from the second before: the late line, the two at `a` and the one at `b` came.
    replayed = position.replay()
    again = [position.accept(stamp, replayed) for stamp in (early, a, a, b, b)]
    assert again == [False, False, False, False, True]


def test_the_block_keeps_its_kubeconfig_secret():
    config = KubernetesBackendConfig(kubeconfig="apiVersion: v1\nkind: Config\nusers: []\n")
    assert "users" not in repr(config) and "users" not in str(config.model_dump())
    assert config.backend_settings().kubeconfig["kind"] == "Config"
    assert "kubeconfig" not in repr(config.backend_settings())
    with pytest.raises(InvalidInputError, match="kubeconfig must be"):
        KubernetesBackendConfig(kubeconfig="just text").backend_settings()


def test_a_client_configuration_becomes_the_kubeconfig_secret(tmp_path):
    from kubernetes.client import Configuration

    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"CA")
    configuration = Configuration(
        host="https://10.0.0.1:6443", api_key={"authorization": "Bearer t0k"}
    )
    configuration.ssl_ca_cert = str(ca)
    config = KubernetesBackendConfig(client_configuration=configuration)
    kubeconfig = config.backend_settings().kubeconfig
    assert kubeconfig["clusters"][0]["cluster"] == {
        "server": "https://10.0.0.1:6443",
        "certificate-authority-data": "Q0E=",
    }
    assert kubeconfig["users"][0]["user"] == {"token": "t0k"}
    configuration.verify_ssl = False
    with pytest.raises(ValueError, match="TLS verification off"):
        KubernetesBackendConfig(client_configuration=configuration)


def _bootstrap(tmp_path, source, name, nproc=2):
    """Run a node's command on this machine as its pod would: one node, PET_* set."""
    spec = _spec(function_source=source, function_name=name, func_args={})
    command = tj.build_trainjob(spec, _record(spec), rendezvous_timeout=60)["spec"]["trainer"][
        "command"
    ]
    env = {
        **os.environ,
        "PET_NNODES": "1",
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": "0",
        "PK_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    command[0] = sys.executable
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def test_the_bootstrap_runs_the_function_under_torchrun(tmp_path):
    source = (
        "def hello():\n    import os\n"
        "    print('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n"
    )
    done = _bootstrap(tmp_path, source, "hello")
    assert done.returncode == 0, done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("rank")) == [
        "rank 0 of 2",
        "rank 1 of 2",
    ]
    assert not (tmp_path / "termination-log").exists()


def test_a_failing_rank_leaves_its_traceback_as_the_termination_message(tmp_path):
    source = (
        "def boom():\n    import os\n    if os.environ['RANK'] == '1':\n"
        "        raise ValueError('boom on rank 1')\n"
    )
    done = _bootstrap(tmp_path, source, "boom")
    assert done.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("rank 1 raised:\n") and "ValueError: boom on rank 1" in message
    assert len(message.encode()) <= 4096


@pytest.mark.parametrize(
    ("image_id", "digest"),
    [
        ("docker-pullable://pytorch/pytorch@sha256:abc", "sha256:abc"),
        ("registry.example/pytorch@sha256:abc", "sha256:abc"),
        ("docker://sha256:def", "sha256:def"),
        ("", None),
    ],
)
def test_the_image_digest_is_read_from_the_node_containers_image_id(image_id, digest):
    pod = {"status": {"containerStatuses": [{"name": "node", "imageID": image_id}]}}
    assert tj.image_digest({0: pod}) == digest
