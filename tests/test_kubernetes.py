"""What only the Kubernetes backend does, against a cluster in miniature (`minicluster`): its
typed errors, runtimes read from the cluster, events, label-selected reads, a runtime deleted
under its job, packages, and log forwarding that resumes after the API drops the stream."""

from __future__ import annotations

import socket

import pytest
import yaml
from conftest import flow_run_of, read_task_run_logs, wait_for
from harnesses import TEST_IMAGE, KubernetesHarness, engine_client
from package_index import package_index
from training_functions import import_package, many_lines, print_env

from prefect_kubeflow import (
    CustomTrainer,
    CustomTrainerContainer,
    KubernetesBackendConfig,
    TrainerClient,
)
from prefect_kubeflow.backends.kubernetes.trainjob import FLOW_RUN_KEY
from prefect_kubeflow.constants import constants
from prefect_kubeflow.errors import (
    ClusterPermissionError,
    ClusterUnavailableError,
    JobFailedError,
    NameConflictError,
    NamespaceNotFoundError,
    RuntimeNotFoundError,
    TrainerNotInstalledError,
)
from prefect_kubeflow.options import Annotations, Labels


@pytest.fixture
def kube(tmp_path):
    harness = KubernetesHarness(tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def kclient(kube):
    client = TrainerClient(backend_config=kube.config())
    yield client
    for job in client.list_jobs():
        client.delete_job(job.name)
        assert kube.leftovers(job.name) == []


def _nothing_created(kube) -> None:
    assert kube.cluster.objects("trainjobs") == []
    assert kube.cluster.containers() == []


def test_a_cluster_without_the_trainer_crds_says_to_install_them(tmp_path):
    from minicluster import MiniCluster

    with MiniCluster(tmp_path / "bare", image=TEST_IMAGE) as cluster:
        config = KubernetesBackendConfig(config_file=str(cluster.kubeconfig_path))
        client = TrainerClient(backend_config=config)
        with pytest.raises(TrainerNotInstalledError, match="install Kubeflow Trainer"):
            client.list_jobs()
        spec = client.build_spec(CustomTrainer(func=print_env))  # built-in runtime: no cluster
        with pytest.raises(TrainerNotInstalledError, match="clustertrainingruntimes"):
            client.backend.create(spec)


def test_rbac_refusals_name_the_verb_and_resource_and_store_nothing(kube, kclient):
    kube.cluster.forbid("create", "trainjobs")
    with pytest.raises(ClusterPermissionError, match="RBAC forbids 'create' on 'trainjobs'"):
        kclient.train(trainer=CustomTrainer(func=print_env))
    _nothing_created(kube)
    kube.cluster.allow_all()
    kube.cluster.forbid("list", "trainjobs")
    with pytest.raises(PermissionError, match="'list' on 'trainjobs' in namespace 'default'"):
        kclient.list_jobs()
    kube.cluster.forbid("list", "clustertrainingruntimes")
    with pytest.warns(UserWarning, match="'list' on 'clustertrainingruntimes' cluster-wide"):
        assert "torch-distributed" in [r.name for r in kclient.list_runtimes()]  # built-in
    kube.cluster.allow_all()


def test_a_missing_namespace_is_named(kube):
    client = TrainerClient(backend_config=kube.config(namespace="nope"))
    with pytest.raises(NamespaceNotFoundError, match="namespace 'nope' does not exist"):
        client.train(trainer=CustomTrainer(func=print_env))
    # A list there is merely empty on the API; an empty list checks the namespace.
    with pytest.raises(NamespaceNotFoundError, match="kubectl create namespace nope"):
        client.list_jobs()


def test_an_unreachable_api_and_an_untrusted_certificate_are_typed(kube, tmp_path):
    kubeconfig = yaml.safe_load(kube.cluster.kubeconfig_path.read_text())
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    closed = yaml.safe_load(yaml.safe_dump(kubeconfig))
    closed["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    client = TrainerClient(
        backend_config=KubernetesBackendConfig(
            kubeconfig=yaml.safe_dump(closed), connect_timeout_seconds=2
        )
    )
    with pytest.raises(
        ClusterUnavailableError, match=f"cannot reach the Kubernetes API at .*{port}"
    ):
        client.list_jobs()
    # Another CA: the server's certificate is not trusted, and verification stays on.
    from minicluster import MiniCluster

    with MiniCluster(tmp_path / "other", image=TEST_IMAGE) as other:
        untrusted = yaml.safe_load(other.kubeconfig_path.read_text())
        untrusted["clusters"][0]["cluster"]["server"] = kubeconfig["clusters"][0]["cluster"][
            "server"
        ]
        client = TrainerClient(
            backend_config=KubernetesBackendConfig(kubeconfig=yaml.safe_dump(untrusted))
        )
        with pytest.raises(ClusterUnavailableError, match="certificate that is not trusted"):
            client.list_jobs()
    with pytest.raises(ClusterUnavailableError, match="cannot load a cluster configuration"):
        KubernetesBackendConfig(config_file=str(tmp_path / "missing")).get_backend().list_jobs()


def test_a_name_conflict_and_a_runtime_the_cluster_lacks_are_typed(kube, kclient):
    spec = kclient.build_spec(CustomTrainer(func=print_env))
    kclient.backend.create(spec)
    with pytest.raises(NameConflictError, match="already exists"):
        kclient.backend.create(spec)
    kube.cluster.delete_object("clustertrainingruntimes", "torch-distributed")
    # The built-in runtime of that name still lists, but the cluster cannot run it.
    other = kclient.build_spec(CustomTrainer(func=print_env))
    with pytest.raises(RuntimeNotFoundError, match="'torch-distributed' not found on the cluster"):
        kclient.backend.create(other)
    assert [job["metadata"]["name"] for job in kube.cluster.objects("trainjobs")] == [spec.name]


def test_runtimes_come_from_the_cluster_first(kube, kclient):
    runtime = kclient.get_runtime("torch-distributed")
    assert runtime.origin.startswith("cluster:") and runtime.trainer.image == TEST_IMAGE
    names = [r.name for r in kclient.list_runtimes()]
    assert names[0] == "torch-distributed" and names.count("torch-distributed") == 1


def test_a_job_reads_back_after_its_runtime_is_deleted_and_carries_its_flow_run(kube, kclient):
    name = kclient.train(trainer=CustomTrainer(func=print_env, num_nodes=2))
    job = kclient.wait_for_job_status(name, timeout=300)
    kube.cluster.delete_object("clustertrainingruntimes", "torch-distributed")
    for read in (kclient.get_job(name), *kclient.list_jobs()):
        assert read.status == constants.TRAINJOB_COMPLETE
        assert read.runtime.name == "torch-distributed"
        assert read.runtime.trainer.image == TEST_IMAGE
    assert [s.pod_name for s in job.steps] == [
        pod["metadata"]["name"]
        for pod in sorted(
            kube.cluster.objects("pods"),
            key=lambda p: int(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]),
        )
    ]
    run = flow_run_of(name)
    # The flow records its run on the TrainJob as it starts, which may be after so short a job
    # has ended: the job runs in the cluster, not in the flow.
    recorded = wait_for(
        lambda: kube.cluster.objects("trainjobs")[0]["metadata"]["annotations"].get(FLOW_RUN_KEY),
        60,
        "the flow run on the TrainJob",
    )
    assert recorded == str(run.id)
    # Every read was label-selected: no call listed the namespace's pods unfiltered.
    pod_lists = [q for method, path, q in kube.cluster.requests if path.endswith("/pods")]
    assert pod_lists and all(q.get("labelSelector") for q in pod_lists)


def test_events_tell_what_happened_to_the_job_and_its_pods(kclient):
    name = kclient.train(trainer=CustomTrainer(func=print_env, num_nodes=2))
    kclient.wait_for_job_status(name, timeout=300)
    events = kclient.get_job_events(name)
    kinds = {(e.involved_object_kind, e.reason) for e in events}
    assert {("Pod", "Started"), ("Job", "SuccessfulCreate"), ("Job", "Completed")} <= kinds
    assert ("JobSet", "AllJobsCompleted") in kinds
    assert [e.event_time for e in events] == sorted(e.event_time for e in events)


def test_forwarding_resumes_after_the_api_drops_the_stream_without_loss_or_repeats(kube, kclient):
    kube.cluster.cut_log_streams(after_lines=7)
    name = kclient.train(trainer=CustomTrainer(func=many_lines, func_args={"count": 60}))
    followed = [line for line in kclient.get_job_logs(name, follow=True) if "line " in line]
    assert followed == [f"[node-0] line {i}\n" for i in range(60)]
    kclient.wait_for_job_status(name, timeout=300)
    run = flow_run_of(name, final=True)
    lines = wait_for(
        lambda: (
            (got := [log.message for log in read_task_run_logs(run.id, "node-0")])
            and sum("line " in m for m in got) >= 60
            and got
        ),
        60,
        "every line in the API",
    )
    assert [m for m in lines if m.startswith("line ")] == [f"line {i}" for i in range(60)]


@pytest.fixture(scope="module")
def host_index():
    """tinypkg's index on every address of this host, as the pods' network reaches it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))
        host_ip = probe.getsockname()[0]
    with package_index(bind="0.0.0.0", advertise=host_ip) as (url, _):
        yield url


def test_packages_are_installed_before_training_and_pip_failures_say_why(kclient, host_index):
    name = kclient.train(
        trainer=CustomTrainer(
            func=import_package, packages_to_install=["tinypkg==1.0"], pip_index_urls=[host_index]
        )
    )
    assert kclient.wait_for_job_status(name, timeout=300).status == constants.TRAINJOB_COMPLETE
    lines = list(kclient.get_job_logs(name))
    assert any("tinypkg 42 from" in line for line in lines), lines
    failing = kclient.train(
        trainer=CustomTrainer(
            func=import_package, packages_to_install=["tinypkg==9.9"], pip_index_urls=[host_index]
        )
    )
    with pytest.raises(JobFailedError, match=r"No matching distribution found for tinypkg==9\.9"):
        kclient.wait_for_job_status(failing, timeout=300)


def test_a_custom_trainer_container_runs_its_image_as_the_trainer(kclient):
    from test_container import build_trainer_image

    image = build_trainer_image(engine_client("docker"))
    name = kclient.train(
        trainer=CustomTrainerContainer(image=image, num_nodes=2),
        options=[Labels({"team": "nlp"}), Annotations({"note": "any: text"})],
    )
    job = kclient.wait_for_job_status(name, timeout=300, polling_interval=0.2)
    assert job.status == constants.TRAINJOB_COMPLETE, job.message
    assert (job.labels, job.annotations) == ({"team": "nlp"}, {"note": "any: text"})
    assert job.runtime.trainer.image == image
    assert job.image_digest == engine_client("docker").images.get(image).id  # what the pods ran
    assert [j.name for j in kclient.list_jobs(labels={"team": "nlp"})] == [name]
    # The operator's torch plugin set PET_*: the image's own torchrun found its peer.
    lines = sorted(line for line in kclient.get_job_logs(name) if "image rank=" in line)
    assert [line.split(" attempt=")[0] for line in lines] == [
        "[node-0] image rank=0 world=2 sum=3",
        "[node-1] image rank=1 world=2 sum=3",
    ]
