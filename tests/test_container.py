"""The container backend against the real Docker Engine and the real Podman on this machine,
with the image `scripts/build-test-image.sh` builds. Every test ends by counting what is left
of its jobs by label: no container, no network, no folder."""

from __future__ import annotations

import socket
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest
from harnesses import TEST_IMAGE, engine_client
from package_index import package_index
from training_functions import import_package, print_env, sleep_forever

from prefect_kubeflow import (
    ContainerBackendConfig,
    CustomTrainer,
    CustomTrainerContainer,
    TrainerClient,
)
from prefect_kubeflow.backends.container.engine import connect
from prefect_kubeflow.backends.container.specs import JOB_LABEL
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import (
    BackendError,
    EngineUnavailableError,
    ImageUnavailableError,
    InvalidInputError,
    JobFailedError,
    NameConflictError,
)

ENGINES = ("docker", "podman")


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
    of them may be left: containers, networks, folders."""
    api = engine_client(engine)
    client = TrainerClient(backend_config=cconfig)
    yield client
    jobs_dir = tmp_path / "container-jobs"
    names = [path.name for path in jobs_dir.glob("*")]
    for name in names:
        client.backend.delete(name)
        assert leftovers(api, name) == ([], []), f"left of {name}"
        assert not (jobs_dir / name).exists()


def test_nodes_are_labelled_limited_and_rendezvous_on_node_0(engine, cclient):
    name = cclient.train(
        trainer=CustomTrainer(func=print_env, num_nodes=2, resources_per_node={"cpu": 2})
    )
    job = cclient.wait_for_job_status(name, timeout=300)
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
    assert command[command.index("--node_rank") + 1] == "1"


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
    assert connect(None, None).name == "docker"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert connect(None, None).name == "podman"


def test_missing_images_are_typed_errors_and_nothing_is_created(
    engine, cclient, cconfig, tmp_path, monkeypatch
):
    api = engine_client(engine)
    monkeypatch.setattr("prefect_kubeflow.jobspecs._job_name", lambda: "pknoimage1")
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
    monkeypatch.setattr("prefect_kubeflow.jobspecs._job_name", lambda: "pkconflict1")
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
    monkeypatch.setattr("prefect_kubeflow.jobspecs._job_name", lambda: "pknopython1")
    client = TrainerClient(
        backend_config=cconfig.model_copy(update={"image": "localhost/prefect-kubeflow-empty:1"})
    )
    with pytest.raises(BackendError, match=r"the image must provide python3 \(3\.10 or newer\)"):
        client.train(trainer=CustomTrainer(func=sleep_forever, num_nodes=2))
    assert leftovers(api, "pknopython1") == ([], [])
    assert not (tmp_path / "container-jobs" / "pknopython1").exists()


def test_an_unknown_container_runtime_is_an_input_error():
    with pytest.raises(InvalidInputError, match="container_runtime 'lxc' is not one of"):
        connect("lxc", None)


TRAINER_IMAGE = "localhost/prefect-kubeflow-trainer:test"
TRAINER_CONTEXT = Path(__file__).parent / "data" / "trainer-image"


def build_trainer_image(api: docker.DockerClient) -> str:
    """A user's training image, built on the test image with no registry: its own
    ``torchrun /app/train.py`` (entrypoint and command) and no function of ours."""
    api.images.build(
        path=str(TRAINER_CONTEXT),
        dockerfile="Containerfile",
        tag=TRAINER_IMAGE,
        buildargs={"BASE": TEST_IMAGE},
        pull=False,
        rm=True,
    )
    return TRAINER_IMAGE


def test_a_custom_trainer_container_runs_its_own_ddp_on_two_nodes(engine, cclient):
    image = build_trainer_image(engine_client(engine))
    name = cclient.train(
        trainer=CustomTrainerContainer(image=image, num_nodes=2, resources_per_node={"cpu": 2})
    )
    job = cclient.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE, job.message
    assert job.runtime.trainer.image == image
    # The digest of what ran: the registry digest the engine knows, else the image's id.
    built = engine_client(engine).images.get(image).attrs
    digests = built.get("RepoDigests") or []
    assert job.image_digest == (digests[0].rpartition("@")[2] if digests else built["Id"])
    lines = sorted(line for line in cclient.get_job_logs(name) if "image rank=" in line)
    assert lines == [
        f"[node-{rank // 2}] image rank={rank} world=4 sum=10 attempt=0\n" for rank in range(4)
    ]
    assert cclient.get_job_result(name) is None  # an image returns no value
