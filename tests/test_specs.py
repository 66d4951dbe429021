"""The pure builders: processes per node and the node command, without running anything."""

from pathlib import Path

import pytest

from prefect_kubeflow.backends.torchrun import ENTRYPOINT, resolve_nproc_per_node, torchrun_argv
from prefect_kubeflow.errors import InvalidInputError


@pytest.mark.parametrize(
    ("value", "resources", "visible", "expected"),
    [
        (4, {}, 0, (4, "cpu")),
        (2, {"gpu": 2}, 0, (2, "gpu")),
        ("auto", {}, 0, (1, "cpu")),
        ("auto", {}, 8, (8, "gpu")),
        ("auto", {"cpu": 2}, 0, (2, "cpu")),
        ("auto", {"cpu": "1500m"}, 0, (1, "cpu")),
        ("auto", {"cpu": "0.5"}, 0, (1, "cpu")),
        ("auto", {"cpu": 4, "nvidia.com/gpu": 2}, 8, (2, "gpu")),
        ("auto", {"cpu": 3}, 8, (3, "cpu")),
        ("cpu", {"gpu": 2, "cpu": 6}, 0, (6, "cpu")),
        ("gpu", {}, 4, (4, "gpu")),
        ("gpu", {}, 0, (1, "cpu")),
    ],
)
def test_processes_per_node(value, resources, visible, expected):
    assert resolve_nproc_per_node(value, resources, visible) == expected


def test_an_unknown_policy_is_refused():
    with pytest.raises(InvalidInputError, match="numProcPerNode 'many' is invalid"):
        resolve_nproc_per_node("many", {}, 0)


def test_the_node_command_is_an_argv_list():
    argv = torchrun_argv("/py", 3, 2, 4, "127.0.0.1", 29500, ENTRYPOINT, Path("/jobs/a b; rm"))
    assert argv == [
        "/py", "-m", "torch.distributed.run", "--nnodes", "3", "--node_rank", "2",
        "--nproc_per_node", "4", "--master_addr", "127.0.0.1", "--master_port", "29500",
        str(ENTRYPOINT), "/jobs/a b; rm",
    ]  # fmt: skip


def _job(**overrides):
    from prefect_kubeflow.backends.base import JobRecord, JobSpec

    spec = JobSpec(
        name="abc123",
        runtime_name="torch-distributed",
        framework="torch",
        image="img:1",
        num_nodes=2,
        num_proc_per_node=2,
        function_name="train",
        function_source="def train(): pass\n",
        **overrides,
    )
    record = JobRecord(
        name=spec.name,
        created="2026-01-01T00:00:00+00:00",
        runtime_name=spec.runtime_name,
        runtime_origin=None,
        framework="torch",
        image="img:1",
        runtime_num_nodes=1,
        num_nodes=2,
        nproc_per_node=2,
        device="cpu",
    )
    return spec, record


def test_container_node_specs_are_built_without_an_engine():
    from prefect_kubeflow.backends.base import JobRecord
    from prefect_kubeflow.backends.container.specs import (
        RECORD_LABEL,
        ContainerSettings,
        build_node_specs,
    )

    spec, record = _job(
        env={"A": "1; rm -rf /"},
        resources_per_node={"cpu": "1500m", "memory": "2Gi", "gpu": 1},
        packages_to_install=["tinypkg==1.0"],
        pip_index_urls=["https://user:secret@index.example/simple"],
    )
    settings = ContainerSettings(
        env={"A": "block", "B": "2"}, volumes=("/data:/data:ro",), shm_size="1g"
    )
    nodes = build_node_specs(spec, record, settings, "docker", Path("/jobs/abc123"), {}, [])
    assert [n.name for n in nodes] == ["abc123-node-0", "abc123-node-1"]
    node1 = nodes[1]
    assert node1.network == "abc123-net" and node1.image == "img:1"
    assert node1.labels["trainer.kubeflow.org/trainjob-name"] == "abc123"
    assert node1.labels["trainer.kubeflow.org/step"] == "node-1"
    assert JobRecord.from_json(node1.labels[RECORD_LABEL]) == record
    # The trainer's env wins over the block's; pip's index (credentials) is in the env only.
    assert node1.env["A"] == "1; rm -rf /" and node1.env["B"] == "2"
    assert node1.env["PIP_INDEX_URL"] == "https://user:secret@index.example/simple"
    assert not any("secret" in part for part in node1.command)
    command = node1.command
    assert command[command.index("--node_rank") + 1] == "1"
    assert command[command.index("--master_addr") + 1] == "abc123-node-0"
    assert command[command.index("--nproc_per_node") + 1] == "2"
    assert '["python3", "-m", "pip", "install", "--no-input", "tinypkg==1.0"]' in command
    assert (node1.nano_cpus, node1.mem_limit, node1.shm_size) == (1_500_000_000, 2 * 1024**3, "1g")
    assert (node1.gpu_driver, node1.gpu_ids) == ("nvidia", ["1"])  # each node its own GPU
    assert node1.binds[0] == "/jobs/abc123/nodes:/pk-job:rw"
    assert node1.binds[-1] == "/data:/data:ro"
    podman = build_node_specs(spec, record, settings, "podman", Path("/jobs/abc123"), {}, [])
    assert (podman[0].gpu_driver, podman[0].gpu_ids) == ("cdi", ["nvidia.com/gpu=0"])


@pytest.mark.parametrize(
    ("phases", "status"),
    [
        (["Pending", "Pending"], "Created"),
        (["Running", "Pending"], "Running"),
        (["Succeeded", "Running"], "Running"),
        (["Succeeded", "Succeeded"], "Complete"),
        (["Succeeded", "Failed"], "Failed"),
        (["Running", "Failed"], "Failed"),
    ],
)
def test_node_phases_roll_up_to_one_job_status(phases, status):
    from prefect_kubeflow.backends.status import roll_up

    assert roll_up(phases) == status


def test_the_failure_message_is_the_first_failed_node_s():
    from prefect_kubeflow.backends.status import NodeState, to_trainjob

    _, record = _job()
    job = to_trainjob(
        record,
        [NodeState("Failed", ended_at=20.0), NodeState("Failed", ended_at=10.0)],
        lambda index: f"node-{index} broke",
    )
    assert (job.status, job.message) == ("Failed", "node-1 broke")
    assert [s.pod_name for s in job.steps] == ["abc123-node-0", "abc123-node-1"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@index.example/simple", "https://***@index.example/simple"),
        ("http://tok@127.0.0.1:8080/simple", "http://***@127.0.0.1:8080/simple"),
        ("https://pypi.org/simple", "https://pypi.org/simple"),
    ],
)
def test_index_urls_are_shown_without_credentials(url, shown):
    from prefect_kubeflow.backends.torchrun import redact_url

    assert redact_url(url) == shown


def test_a_custom_image_node_runs_the_images_command_with_the_rendezvous_env():
    from prefect_kubeflow.backends.container.specs import ContainerSettings, build_node_specs

    spec, record = _job(custom_image=True)
    settings = ContainerSettings()
    nodes = build_node_specs(
        spec, record, settings, "podman", Path("/jobs/abc123"), {}, ["torchrun", "/app/t.py"]
    )
    node1 = nodes[1]
    assert node1.command[-3:] == ["--", "torchrun", "/app/t.py"]
    assert node1.command[:3] == ["python3", "-m", "prefect_kubeflow.backends.node"]
    assert {k: v for k, v in node1.env.items() if k.startswith("PET_")} == {
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "abc123-node-0",
        "PET_MASTER_PORT": "29500",
    }
    with pytest.raises(InvalidInputError, match="image 'img:1' has no command"):
        build_node_specs(spec, record, settings, "podman", Path("/jobs/abc123"), {}, [])
