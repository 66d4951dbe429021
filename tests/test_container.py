"""The container backend against the real Docker Engine and the real Podman on this machine,
with the image `scripts/build-test-image.sh` builds. Every test ends by counting what is left
of its jobs by label: no container, no network, no folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile

import docker
import pytest
from conftest import read_task_run_logs, wait_for
from package_index import package_index
from training_functions import ddp_all_reduce, fail_on_rank, import_package, sleep_forever

from prefect_kubeflow import ContainerBackendConfig, CustomTrainer, TrainerClient
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.container.backend import JOB_LABEL
from prefect_kubeflow.backends.container.engine import default_host
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import (
    BackendError,
    EngineUnavailableError,
    ImageUnavailableError,
    JobFailedError,
    NameConflictError,
)

TEST_IMAGE = os.environ.get("PK_TEST_IMAGE", "localhost/prefect-kubeflow-test:torch-2.13.0")
ENGINES = ("docker", "podman")


def engine_client(engine: str) -> docker.DockerClient:
    """A client of `engine`; CI requires both engines (PK_REQUIRE_ENGINES=1)."""
    try:
        client = docker.DockerClient(base_url=default_host(engine), timeout=60)
        client.ping()
        client.images.get(TEST_IMAGE)
    except docker.errors.DockerException as exc:
        if os.environ.get("PK_REQUIRE_ENGINES"):
            raise
        pytest.skip(f"{engine} or its test image is not available here: {exc}")
    return client


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def cconfig(engine, tmp_path) -> ContainerBackendConfig:
    return ContainerBackendConfig(
        container_runtime=engine,
        image=TEST_IMAGE,
        pull_policy="Never",
        jobs_dir=str(tmp_path / "container-jobs"),
        stop_grace_period_seconds=5,
    )


def leftovers(api: docker.DockerClient, name: str) -> tuple[list, list]:
    label = {"label": f"{JOB_LABEL}={name}"}
    return api.containers.list(all=True, filters=label), api.networks.list(filters=label)


@pytest.fixture
def cclient(engine, cconfig, tmp_path):
    """A client on the engine; afterwards every job of the test is deleted, and nothing of any
    of them may be left: containers, networks, folders, supervising processes."""
    api = engine_client(engine)
    client = TrainerClient(backend_config=cconfig)
    yield client
    jobs_dir = tmp_path / "container-jobs"
    names = [path.name for path in jobs_dir.glob("*")]
    owners = []
    for name in names:
        owner_file = jobs_dir / name / "owner.json"
        if owner_file.exists():
            owners.append(json.loads(owner_file.read_text()))
        if (jobs_dir / name).exists():
            client.delete_job(name)
    for name in names:
        assert leftovers(api, name) == ([], []), f"left of {name}"
        assert not (jobs_dir / name).exists()
    for owner in owners:
        if owner["pid"]:
            wait_for(lambda o=owner: not processes.is_alive(o["pid"], o["start"]), 60,
                     "the supervisor to exit")  # fmt: skip


def test_two_nodes_two_processes_train_with_gloo(engine, cclient, cconfig):
    name = cclient.train(
        trainer=CustomTrainer(func=ddp_all_reduce, num_nodes=2, resources_per_node={"cpu": 2})
    )
    followed = list(cclient.get_job_logs(name, follow=True))
    job = cclient.wait_for_job_status(name, timeout=300)
    assert job.status == constants.TRAINJOB_COMPLETE, job.message
    ranks = sorted(line.strip() for line in followed if "rank=" in line)
    assert ranks == [
        "[node-0] rank=0 world=4 sum=10",
        "[node-0] rank=1 world=4 sum=10",
        "[node-1] rank=2 world=4 sum=10",
        "[node-1] rank=3 world=4 sum=10",
    ]
    assert [(s.name, s.status, s.device_count) for s in job.steps] == [
        ("node-0", constants.STEP_SUCCEEDED, "2"),
        ("node-1", constants.STEP_SUCCEEDED, "2"),
    ]
    api = engine_client(engine)
    [network] = api.networks.list(filters={"label": f"{JOB_LABEL}={name}"})
    assert network.name == f"{name}-net"
    node1 = api.containers.get(f"{name}-node-1")
    assert node1.labels["trainer.kubeflow.org/step"] == "node-1"
    assert node1.attrs["HostConfig"]["NanoCpus"] == 2_000_000_000
    command = node1.attrs["Config"]["Cmd"]
    assert command[command.index("--rdzv_conf") + 1] == "timeout=120"
    assert command[command.index("--master_addr") + 1] == f"{name}-node-0"
    # Another process sees the job, read back from the engine's labels.
    script = (
        "import json, sys\n"
        "from prefect_kubeflow import ContainerBackendConfig, TrainerClient\n"
        "config = ContainerBackendConfig(**json.loads(sys.argv[1]))\n"
        "print(json.dumps([(j.name, j.status, j.num_nodes) for j in "
        "TrainerClient(backend_config=config).list_jobs()]))\n"
    )
    seen = subprocess.run(
        [sys.executable, "-c", script, cconfig.model_dump_json(include={
            "container_runtime", "jobs_dir", "image"})],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert [name, constants.TRAINJOB_COMPLETE, 2] in json.loads(seen.stdout)
    # Each node is a task run of the job's flow run, holding that node's lines.
    wait_for(lambda: cclient.backend.flow_run_id(name) is not None, 60, "the flow run")
    flow_run_id = cclient.backend.flow_run_id(name)
    wait_for(
        lambda: any("rank=3" in log.message for log in read_task_run_logs(flow_run_id, "node-1")),
        180,
        "node-1's lines in the API",
    )


def test_a_killed_node_fails_the_job_and_stops_the_others(engine, cclient):
    name = cclient.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    wait_for(
        lambda: sum("started" in line for line in cclient.get_job_logs(name)) == 2,
        180,
        "both nodes to start",
    )
    api = engine_client(engine)
    api.containers.get(f"{name}-node-1").kill()
    with pytest.raises(JobFailedError, match="node-1 was killed by SIGKILL"):
        cclient.wait_for_job_status(name, timeout=120)
    # The other node was stopped by the gang, not left sleeping.
    wait_for(lambda: api.containers.get(f"{name}-node-0").status == "exited", 60, "node-0 to stop")
    cclient.delete_job(name)
    assert leftovers(api, name) == ([], [])


def test_a_failing_rank_reports_its_traceback(cclient):
    name = cclient.train(
        trainer=CustomTrainer(func=fail_on_rank, func_args={"rank_to_fail": 1}, num_nodes=2)
    )
    with pytest.raises(JobFailedError, match=r"(?s)rank 1 raised:.*ValueError: boom on rank 1"):
        cclient.wait_for_job_status(name, timeout=180)


def test_delete_mid_run_leaves_nothing(engine, cclient, tmp_path):
    name = cclient.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    wait_for(lambda: cclient.get_job(name).status == constants.TRAINJOB_RUNNING, 120, "job to run")
    cclient.delete_job(name)
    assert leftovers(engine_client(engine), name) == ([], [])
    assert not (tmp_path / "container-jobs" / name).exists()
    assert name not in [job.name for job in cclient.list_jobs()]


def test_no_engine_is_a_clear_error_and_nothing_is_created(tmp_path):
    config = ContainerBackendConfig(
        container_runtime="podman",
        container_host=f"unix://{tmp_path}/no-engine.sock",
        jobs_dir=str(tmp_path / "jobs"),
    )
    client = TrainerClient(backend_config=config)
    with pytest.raises(EngineUnavailableError, match="podman system service") as raised:
        client.train(trainer=CustomTrainer(func=sleep_forever))
    assert "no-engine.sock" in str(raised.value)
    assert not (tmp_path / "jobs").exists()


def test_auto_detect_prefers_docker_then_podman(monkeypatch, tmp_path):
    engine_client("docker"), engine_client("podman")
    from prefect_kubeflow.backends.container.engine import connect

    assert connect(None, None).name == "docker"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert connect(None, None).name == "podman"


def test_missing_images_are_typed_errors_and_nothing_is_created(
    engine, cclient, cconfig, tmp_path, monkeypatch
):
    api = engine_client(engine)
    monkeypatch.setattr("prefect_kubeflow.client._job_name", lambda: "pknoimage1")
    for policy, reason in (("Never", "build or load it"), ("IfNotPresent", "could not be pulled")):
        client = TrainerClient(
            backend_config=cconfig.model_copy(
                update={"image": "localhost/prefect-kubeflow-missing:1", "pull_policy": policy}
            )
        )
        with pytest.raises(ImageUnavailableError, match=reason):
            client.train(trainer=CustomTrainer(func=sleep_forever))
        assert leftovers(api, "pknoimage1") == ([], [])
        assert not (tmp_path / "container-jobs" / "pknoimage1").exists()


def test_a_name_conflict_is_typed_and_leaves_the_other_object_alone(
    engine, cclient, monkeypatch, tmp_path
):
    api = engine_client(engine)
    monkeypatch.setattr("prefect_kubeflow.client._job_name", lambda: "pkconflict1")
    squatter = api.networks.create("pkconflict1-net")
    try:
        with pytest.raises(NameConflictError, match="pkconflict1-net"):
            cclient.train(trainer=CustomTrainer(func=sleep_forever))
        assert [n.name for n in api.networks.list(names=["pkconflict1-net"])] == ["pkconflict1-net"]
        assert leftovers(api, "pkconflict1") == ([], [])
    finally:
        squatter.remove()


@pytest.fixture(scope="module")
def host_index():
    """tinypkg's index on every address of this host, its URL on the address containers reach
    (their network's gateway routes to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: it picks the host's address
        host_ip = probe.getsockname()[0]
    with package_index(bind="0.0.0.0", advertise=host_ip) as (url, _):
        yield url


def test_packages_are_installed_in_each_node_before_training(cclient, host_index):
    name = cclient.train(
        trainer=CustomTrainer(
            func=import_package,
            packages_to_install=["tinypkg==1.0"],
            pip_index_urls=[host_index],
            num_nodes=2,
        )
    )
    job = cclient.wait_for_job_status(name, timeout=300)
    assert job.status == constants.TRAINJOB_COMPLETE, job.message
    # The index URL (it may carry credentials) is in the environment, not the command line.
    config = (
        engine_client(cclient.backend_config.container_runtime)
        .containers.get(f"{name}-node-0")
        .attrs["Config"]
    )
    assert host_index not in " ".join(config["Cmd"])
    assert f"PIP_INDEX_URL={host_index}" in config["Env"]
    for step in ("node-0", "node-1"):
        lines = list(cclient.get_job_logs(name, step=step))
        assert any("Successfully installed tinypkg-1.0" in line for line in lines), lines
        assert any(line.startswith("tinypkg 42 from /usr/") for line in lines), lines


def test_a_package_pip_cannot_find_fails_the_job_with_pips_words(cclient, host_index):
    name = cclient.train(
        trainer=CustomTrainer(
            func=import_package, packages_to_install=["tinypkg==9.9"], pip_index_urls=[host_index]
        )
    )
    with pytest.raises(JobFailedError, match=r"No matching distribution found for tinypkg==9\.9"):
        cclient.wait_for_job_status(name, timeout=300)


def test_auto_remove_leaves_nothing_once_the_job_has_ended(engine, cconfig, tmp_path):
    api = engine_client(engine)
    client = TrainerClient(backend_config=cconfig.model_copy(update={"auto_remove": True}))
    name = client.train(trainer=CustomTrainer(func=ddp_all_reduce, num_nodes=2))
    jobs_dir = tmp_path / "container-jobs"
    wait_for(lambda: not (jobs_dir / name).exists(), 300, "the ended job to be removed")
    assert leftovers(api, name) == ([], [])
    assert name not in [job.name for job in client.list_jobs()]


def test_an_image_without_python_is_a_clear_error_and_nothing_is_left(
    engine, cclient, cconfig, tmp_path, monkeypatch
):
    api = engine_client(engine)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    subprocess.run(
        [engine, "import", str(empty), "localhost/prefect-kubeflow-empty:1"],
        check=True,
        capture_output=True,
    )
    monkeypatch.setattr("prefect_kubeflow.client._job_name", lambda: "pknopython1")
    client = TrainerClient(
        backend_config=cconfig.model_copy(update={"image": "localhost/prefect-kubeflow-empty:1"})
    )
    with pytest.raises(BackendError, match=r"the image must provide python3 \(3\.10 or newer\)"):
        client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    assert leftovers(api, "pknopython1") == ([], [])
    assert not (tmp_path / "container-jobs" / "pknopython1").exists()
