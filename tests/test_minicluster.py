"""The MiniCluster fixture itself, through the official kubernetes client and real Docker."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import docker
import kubernetes
import pytest
from kubernetes.client.rest import ApiException
from minicluster import TEST_IMAGE, MiniCluster
from minicluster.testing import Kube, condition, nanos, pod_patch, py, trainjob, wait_for

G, V, TJ, RT = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "clustertrainingruntimes"
USER = "system:serviceaccount:default:prefect"


def _engine_problem() -> str | None:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        return f"Docker is not reachable: {exc}"
    try:
        client.images.get(TEST_IMAGE)
    except Exception:
        return f"image {TEST_IMAGE} is not present"
    return None


_PROBLEM = _engine_problem()
_REQUIRED = bool(os.environ.get("PK_REQUIRE_ENGINES"))
pytestmark = pytest.mark.skipif(_PROBLEM is not None and not _REQUIRED, reason=_PROBLEM or "")


@pytest.fixture(autouse=True)
def _engines_present() -> None:
    """With PK_REQUIRE_ENGINES set, a missing Docker engine or image fails every test."""
    if _PROBLEM is not None:
        pytest.fail(f"PK_REQUIRE_ENGINES is set but {_PROBLEM}")


# -- helpers ------------------------------------------------------------------------------------
def api_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    return info.value.status, json.loads(info.value.body)


def finished(kube: Kube, name: str, kind: str = "Complete", timeout: float = 120) -> dict:
    return wait_for(
        lambda: condition(kube.get(name), kind) and kube.get(name), timeout, f"{name} to be {kind}"
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MiniCluster]:
    with MiniCluster(tmp_path / "cluster") as mini:
        mini.install_crds()
        mini.install_default_runtime(host_shared_dir=tmp_path / "shared")
        yield mini
        assert mini.operator_errors == []


@pytest.fixture
def kube(cluster: MiniCluster) -> Kube:
    return Kube(cluster)


# -- API server ---------------------------------------------------------------------------------
def test_kubeconfig_and_authentication(cluster: MiniCluster, kube: Kube) -> None:
    config = cluster.kubeconfig_dict
    assert config["current-context"] == "minicluster"
    server = config["clusters"][0]["cluster"]
    assert server["server"] == cluster.url and cluster.url.startswith("https://127.0.0.1:")
    assert server["certificate-authority-data"]
    assert config["users"][0]["user"]["token"]
    assert kube.core.read_namespace("default").status.phase == "Active"
    names = {n.metadata.name for n in kube.core.list_namespace().items}
    assert {"default", "kube-system"} <= names
    assert kubernetes.client.VersionApi(kube.client).get_code().major == "1"

    config["users"][0]["user"]["token"] = "wrong"
    bad = kubernetes.config.new_client_from_config_dict(config)
    status, body = api_error(kubernetes.client.CoreV1Api(bad).read_namespace, "default")
    assert status == 401 and body["reason"] == "Unauthorized" and body["kind"] == "Status"


def test_create_get_list_and_conflict(cluster: MiniCluster, kube: Kube) -> None:
    created = kube.create(trainjob("alpha", py("print(1)")))
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["uid"] and meta["resourceVersion"].isdigit()
    assert created["spec"]["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": G,
        "kind": "ClusterTrainingRuntime",
    }
    assert created["spec"]["suspend"] is False
    assert "status" not in created

    status, body = api_error(kube.create, trainjob("alpha", py("print(1)")))
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'trainjobs.trainer.kubeflow.org "alpha" already exists'
    assert body["details"] == {"name": "alpha", "group": G, "kind": "trainjobs"}

    listed = kube.custom.list_namespaced_custom_object(G, V, "default", TJ)
    assert listed["kind"] == "TrainJobList" and listed["apiVersion"] == f"{G}/{V}"
    assert listed["metadata"]["resourceVersion"]
    assert [(i["kind"], i["apiVersion"]) for i in listed["items"]] == [("TrainJob", f"{G}/{V}")]
    status, body = api_error(kube.get, "nope")
    assert status == 404
    assert body["message"] == 'trainjobs.trainer.kubeflow.org "nope" not found'
    assert body["details"] == {"name": "nope", "group": G, "kind": "trainjobs"}

    stale = kube.get("alpha")
    stale["metadata"]["name"] = "beta"
    status, body = api_error(kube.create, stale)
    assert status == 500 and body["message"] == (
        "Internal error occurred: resourceVersion should not be set on objects to be created"
    )

    named = kube.create({**trainjob("", py("print(1)")), "metadata": {"generateName": "gen-"}})
    assert re.fullmatch(r"gen-[a-z0-9]{5}", named["metadata"]["name"])


def test_schema_violations_are_422_and_nothing_is_stored(cluster: MiniCluster, kube: Kube) -> None:
    body = trainjob("bad", py("print(1)"))
    body["spec"]["trainer"]["numNodes"] = "string"
    status, error = api_error(kube.create, body)
    assert status == 422 and error["reason"] == "Invalid"
    expected = (
        'spec.trainer.numNodes: Invalid value: "string": spec.trainer.numNodes in body '
        'must be of type integer: "string"'
    )
    # As kube-apiserver: a type error blocks the CEL rules, which is reported as well.
    blocked = (
        '<nil>: Invalid value: "null": some validation rules were not checked because the '
        "object was invalid; correct the existing errors to complete validation"
    )
    assert error["message"] == (
        f'TrainJob.trainer.kubeflow.org "bad" is invalid: [{expected}, {blocked}]'
    )
    assert error["details"]["causes"][0] == {
        "reason": "FieldValueTypeInvalid",
        "field": "spec.trainer.numNodes",
        "message": expected.split(": ", 1)[1],
    }
    assert error["details"]["kind"] == "TrainJob" and error["details"]["group"] == G

    missing = trainjob("bad", py("print(1)"))
    del missing["spec"]["runtimeRef"]
    status, error = api_error(kube.create, missing)
    assert status == 422 and "spec.runtimeRef: Required value" in error["message"]
    assert cluster.objects("trainjobs") == []


def test_unknown_fields_are_pruned_with_a_warning(cluster: MiniCluster, kube: Kube) -> None:
    body = trainjob("extra", py("print(1)"), suspend=True)
    body["spec"]["trainer"]["bogus"] = 1
    body["spec"]["nonsense"] = {"a": 1}
    data, code, headers = kube.custom.create_namespaced_custom_object_with_http_info(
        G, V, "default", TJ, body
    )
    assert code == 201
    assert "bogus" not in data["spec"]["trainer"] and "nonsense" not in data["spec"]
    assert 'unknown field \\"spec.trainer.bogus\\"' in headers["Warning"]
    body["metadata"]["name"] = "strict"
    status, error = api_error(
        kube.custom.create_namespaced_custom_object,
        G,
        V,
        "default",
        TJ,
        body,
        field_validation="Strict",
    )
    assert status == 400 and error["message"].startswith("strict decoding error: unknown field")


def test_cel_rules(cluster: MiniCluster, kube: Kube) -> None:
    status, error = api_error(kube.create, trainjob("1abc", py("print(1)")))
    assert status == 422
    assert error["message"] == (
        'TrainJob.trainer.kubeflow.org "1abc" is invalid: <nil>: Invalid '
        'value: "object": metadata.name must match RFC 1035 DNS label '
        "format"
    )
    assert error["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "<nil>",
            "message": 'Invalid value: "object": metadata.name '
            "must match RFC 1035 DNS label format",
        }
    ]
    status, error = api_error(kube.create, trainjob("a" * 64, py("print(1)")))
    assert status == 422 and "must be no more than 63 characters" in error["message"]
    body = trainjob("nproc", py("print(1)"), trainer={"numProcPerNode": 0})
    status, error = api_error(kube.create, body)
    assert status == 422 and error["message"].endswith(
        'spec.trainer.numProcPerNode: Invalid value: "integer": numProcPerNode must be greater '
        "than or equal to 1"
    )
    assert cluster.objects("trainjobs") == []


def test_missing_crd_and_namespace(tmp_path: Path) -> None:
    with MiniCluster(tmp_path / "bare") as bare:
        kube = Kube(bare)
        status, error = api_error(kube.create, trainjob("x", py("print(1)")))
        assert status == 404 and error == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "the server could not find the requested resource",
            "reason": "NotFound",
            "details": {},
            "code": 404,
        }
        bare.install_crds()
        bare.install_default_runtime()
        status, error = api_error(kube.create, trainjob("x", py("print(1)")), namespace="nope")
        assert status == 404 and error["message"] == 'namespaces "nope" not found'
        assert error["details"] == {"name": "nope", "kind": "namespaces"}
        status, error = api_error(kube.get, "x", namespace="nope")
        assert status == 404 and error["message"] == 'trainjobs.trainer.kubeflow.org "x" not found'
        status, error = api_error(kube.core.read_namespace, "nope")
        assert status == 404 and error["message"] == 'namespaces "nope" not found'
        bare.create_namespace("team")
        assert kube.create(trainjob("x", py("print(1)"), suspend=True), namespace="team")


def test_missing_runtime_is_denied_by_the_webhook(cluster: MiniCluster, kube: Kube) -> None:
    body = trainjob("x", py("print(1)"))
    body["spec"]["runtimeRef"]["name"] = "absent"
    status, error = api_error(kube.create, body)
    assert status == 403 and error["reason"] == "Forbidden"
    assert error["message"].startswith(
        'admission webhook "validator.trainjob.trainer.kubeflow.org"'
        " denied the request: spec.RuntimeRef: Invalid value: "
    )
    assert error["message"].endswith(
        'ClusterTrainingRuntime.trainer.kubeflow.org "absent" not '
        "found: specified clusterTrainingRuntime must be created "
        "before the TrainJob is created"
    )
    body = trainjob("y", py("print(1)"), trainer={"env": [{"name": "PET_NNODES", "value": "3"}]})
    status, error = api_error(kube.create, body)
    assert (
        status == 403
        and "must not have reserved envs, invalid envs configured: [PET_NNODES]" in error["message"]
    )
    assert cluster.objects("trainjobs") == []


def test_rbac_forbidden(cluster: MiniCluster, kube: Kube) -> None:
    cluster.forbid("create", "trainjobs")
    status, error = api_error(kube.create, trainjob("x", py("print(1)")))
    assert status == 403 and error["reason"] == "Forbidden"
    assert error["message"] == (
        f'trainjobs.trainer.kubeflow.org is forbidden: User "{USER}" cannot create resource '
        '"trainjobs" in API group "trainer.kubeflow.org" in the namespace "default"'
    )
    assert cluster.objects("trainjobs") == []
    cluster.forbid("list", "pods")
    status, error = api_error(kube.core.list_namespaced_pod, "default")
    assert status == 403 and error["message"] == (
        f'pods is forbidden: User "{USER}" cannot list resource "pods" in API group "" in the '
        'namespace "default"'
    )
    cluster.forbid("get", "pods/log")
    status, error = api_error(kube.log, "p1")
    assert status == 403 and error["message"] == (
        f'pods "p1" is forbidden: User "{USER}" cannot get resource "pods/log" in API group "" '
        'in the namespace "default"'
    )
    cluster.forbid("list", "clustertrainingruntimes")
    status, error = api_error(kube.custom.list_cluster_custom_object, G, V, RT)
    assert status == 403 and error["message"].endswith(
        'in API group "trainer.kubeflow.org" at the cluster scope'
    )
    cluster.allow_all()
    assert kube.create(trainjob("x", py("print(1)"), suspend=True))


def test_label_and_field_selectors(cluster: MiniCluster, kube: Kube) -> None:
    for name, labels in (
        ("a1", {"team": "a", "tier": "gold"}),
        ("b1", {"team": "b"}),
        ("c1", {"tier": "silver"}),
    ):
        body = trainjob(name, py("print(1)"), suspend=True)
        body["metadata"]["labels"] = labels
        kube.create(body)

    def names(selector: str) -> list[str]:
        listed = kube.custom.list_namespaced_custom_object(
            G, V, "default", TJ, label_selector=selector
        )
        return [i["metadata"]["name"] for i in listed["items"]]

    assert names("team=a") == ["a1"]
    assert names("team==b") == ["b1"]
    assert names("team!=a") == ["b1", "c1"]
    assert names("team in (a, b)") == ["a1", "b1"]
    assert names("tier notin (gold)") == ["b1", "c1"]
    assert names("team") == ["a1", "b1"]
    assert names("!team") == ["c1"]
    assert names("team=a,tier=gold") == ["a1"]
    assert names("team in (a,b),!tier") == ["b1"]
    assert (
        "GET",
        f"/apis/{G}/{V}/namespaces/default/trainjobs",
        {"labelSelector": "team in (a,b),!tier"},
    ) in cluster.requests
    status, error = api_error(names, "team in (a")
    assert status == 400 and error["reason"] == "BadRequest"
    fields = kube.custom.list_namespaced_custom_object(
        G, V, "default", TJ, field_selector="metadata.name=b1"
    )
    assert [i["metadata"]["name"] for i in fields["items"]] == ["b1"]
    status, error = api_error(
        kube.custom.list_namespaced_custom_object,
        G,
        V,
        "default",
        TJ,
        field_selector="spec.suspend=true",
    )
    assert status == 400 and error["message"] == "field label not supported: spec.suspend"
    page = kube.custom.list_namespaced_custom_object(G, V, "default", TJ, limit=2)
    assert len(page["items"]) == 2 and page["metadata"]["remainingItemCount"] == 1
    rest = kube.custom.list_namespaced_custom_object(
        G, V, "default", TJ, limit=2, _continue=page["metadata"]["continue"]
    )
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c1"]


# -- operator -----------------------------------------------------------------------------------
RESOLVE = (
    "import os,socket; print(os.environ['PET_NODE_RANK'], "
    "socket.gethostbyname(os.environ['PET_MASTER_ADDR']))"
)


def test_two_node_job_runs_in_containers(cluster: MiniCluster, kube: Kube) -> None:
    kube.create(trainjob("duo", ["python3", "-c", RESOLVE], nodes=2))
    done = finished(kube, "duo")
    assert done["status"]["conditions"][-1]["reason"] == "AllJobsCompleted"
    assert done["status"]["jobsStatus"] == [
        {"name": "node", "ready": 0, "succeeded": 1, "failed": 0, "active": 0, "suspended": 0}
    ]
    pods = sorted(
        kube.pods("duo"),
        key=lambda p: p.metadata.labels["batch.kubernetes.io/job-completion-index"],
    )
    assert [p.status.phase for p in pods] == ["Succeeded", "Succeeded"]
    master_ip = pods[0].status.pod_ip
    for index, pod in enumerate(pods):
        assert re.fullmatch(rf"duo-node-0-{index}-[a-z0-9]{{5}}", pod.metadata.name)
        assert pod.spec.hostname == f"duo-node-0-{index}" and pod.spec.subdomain == "duo"
        labels = pod.metadata.labels
        assert labels["jobset.sigs.k8s.io/replicatedjob-name"] == "node"
        assert labels["jobset.sigs.k8s.io/job-index"] == "0"
        assert labels["batch.kubernetes.io/job-name"] == "duo-node-0"
        # The runtime puts this label on the Job template, which JobSet does not copy to pods.
        assert "trainer.kubeflow.org/trainjob-ancestor-step" not in labels
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(index)
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["PET_NNODES"] == "2" and env["PET_MASTER_ADDR"] == "duo-node-0-0.duo"
        assert env["PET_MASTER_PORT"] == "29500"
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.exit_code == 0 and terminated.reason == "Completed"
        assert kube.log(pod.metadata.name) == f"{index} {master_ip}\n"

    def roles() -> list[tuple[str, str]]:
        return sorted(
            (c.labels["minicluster.role"], c.status)
            for c in cluster.containers("duo", sandboxes=True)
        )

    # The sandboxes (and so the pods' DNS names) go a moment after the containers ended.
    wait_for(lambda: roles() == [("container", "exited")] * 2, 30, "the sandboxes to go")
    events = kube.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={pods[0].metadata.name}"
    ).items
    assert {"Scheduled", "Pulled", "Created", "Started"} <= {e.reason for e in events}
    job_events = kube.core.list_namespaced_event(
        "default", field_selector="involvedObject.kind=JobSet,involvedObject.name=duo"
    ).items
    assert [e.reason for e in job_events] == ["AllJobsCompleted"]


COUNTER = (
    "import sys,time\nfor i in range(6):\n    print('line', i, file=sys.stderr if i % 2 "
    "else sys.stdout, flush=True)\n    time.sleep(0.4)\n"
)


def test_logs_follow_tail_timestamps_and_since(cluster: MiniCluster, kube: Kube) -> None:
    kube.create(trainjob("talk", py(COUNTER)))
    pod = wait_for(
        lambda: [p for p in kube.pods("talk") if p.status.phase == "Running"], what="a running pod"
    )[0].metadata.name
    stream = kube.log(pod, follow=True, _preload_content=False)
    lines = b"".join(stream.stream(64)).decode().splitlines()
    assert lines == [f"line {i}" for i in range(6)]
    finished(kube, "talk")
    assert kube.log(pod, tail_lines=2) == "line 4\nline 5\n"
    stamped = kube.log(pod, timestamps=True).splitlines()
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line \d"
    assert all(re.fullmatch(pattern, line) for line in stamped)
    third = datetime.strptime(stamped[3].split(" ")[0][:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=timezone.utc
    ) + timedelta(seconds=1)
    since = third.strftime("%Y-%m-%dT%H:%M:%SZ")
    expected = [
        line.split(" ", 1)[1]
        for line in stamped
        if nanos(line.split(" ")[0]) >= int(third.timestamp()) * 10**9
    ]
    response = kube.raw_log(pod, sinceTime=since)
    response.read()
    assert response.data.decode().splitlines() == expected
    assert kube.log(pod, limit_bytes=8) == "line 0\nl"
    status, error = api_error(kube.log, pod, previous=True)
    assert status == 400
    assert error["message"] == f'previous terminated container "node" in pod "{pod}" not found'
    status, error = api_error(kube.log, "ghost")
    assert status == 404 and error["message"] == 'pods "ghost" not found'


def test_logs_of_a_container_waiting_to_start(
    cluster: MiniCluster, kube: Kube, tmp_path: Path
) -> None:
    body = trainjob("stuck", py("print(1)"))
    volume = {"name": "data", "hostPath": {"path": str(tmp_path / "absent"), "type": "Directory"}}
    mount = {"name": "data", "mountPath": "/data"}
    body["spec"]["runtimePatches"] = pod_patch(
        "test.io/volumes",
        {"volumes": [volume], "containers": [{"name": "node", "volumeMounts": [mount]}]},
    )
    kube.create(body)
    pod = wait_for(lambda: kube.pods("stuck"), what="the pod")[0].metadata.name
    wait_for(
        lambda: (
            kube.core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={pod},reason=FailedMount"
            ).items
        ),
        what="FailedMount",
    )
    status, error = api_error(kube.log, pod)
    assert status == 400 and error["reason"] == "BadRequest"
    assert (
        error["message"] == f'container "node" in pod "{pod}" is waiting to start: '
        "ContainerCreating"
    )
    assert kube.pods("stuck")[0].status.phase == "Pending"


def test_failing_node_fails_the_job_and_stops_the_others(tmp_path: Path) -> None:
    with MiniCluster(tmp_path / "c") as mini:
        mini.install_crds()
        mini.install_default_runtime(backoff_limit=0, restart_policy="Never")
        kube = Kube(mini)
        code = (
            "import os,sys,time\nif os.environ['PET_NODE_RANK'] == '1':\n"
            "    open('/dev/termination-log','w').write('boom')\n    sys.exit(3)\n"
            "time.sleep(600)\n"
        )
        body = trainjob("crash", py(code), nodes=2)
        body["spec"]["runtimePatches"] = pod_patch(
            "test.io/grace", {"terminationGracePeriodSeconds": 5}
        )
        kube.create(body)
        wait_for(
            lambda: any(p.status.phase == "Failed" for p in kube.pods("crash")),
            what="the failing pod",
        )
        started = time.monotonic()
        failed = finished(kube, "crash", "Failed", timeout=30)
        assert time.monotonic() - started < 12
        cond = condition(failed, "Failed")
        assert cond["reason"] == "FailedJobs"
        assert cond["message"] == (
            "jobset failed due to one or more job failures (first failed job: crash-node-0)"
        )
        pods = kube.pods("crash")
        assert len(pods) == 1 and pods[0].status.phase == "Failed"
        terminated = pods[0].status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason, terminated.message) == (3, "Error", "boom")
        assert len(mini.containers("crash")) == 1
        assert mini.operator_errors == []


def test_restart_on_failure_with_the_default_runtime(cluster: MiniCluster, kube: Kube) -> None:
    code = (
        "import os,sys\nif not os.path.exists('/shared/once'):\n"
        "    open('/shared/once','w').close()\n    print('first');sys.exit(1)\n"
        "print('second')\n"
    )
    kube.create(trainjob("again", py(code)))
    finished(kube, "again")
    pod = kube.pods("again")[0]
    status = pod.status.container_statuses[0]
    assert status.restart_count == 1 and pod.status.phase == "Succeeded"
    assert status.last_state.terminated.exit_code == 1
    assert kube.log(pod.metadata.name) == "second\n"
    assert kube.log(pod.metadata.name, previous=True) == "first\n"


def test_kill_pod_container(tmp_path: Path) -> None:
    with MiniCluster(tmp_path / "c") as mini:
        mini.install_crds()
        mini.install_default_runtime(backoff_limit=0, restart_policy="Never")
        kube = Kube(mini)
        kube.create(trainjob("victim", py("import time; time.sleep(600)")))
        pod = wait_for(
            lambda: [p for p in kube.pods("victim") if p.status.phase == "Running"], what="running"
        )[0].metadata.name
        mini.kill_pod_container(pod)
        failed = finished(kube, "victim", "Failed", timeout=30)
        assert condition(failed, "Failed")["reason"] == "FailedJobs"
        terminated = kube.pods("victim")[0].status.container_statuses[0].state.terminated
        assert terminated.exit_code == 137 and terminated.reason == "Error"


def test_foreground_delete_removes_everything(cluster: MiniCluster, kube: Kube) -> None:
    kube.create(
        trainjob(
            "bye",
            py("import time; time.sleep(600)"),
            nodes=2,
            runtimePatches=pod_patch("test.io/grace", {"terminationGracePeriodSeconds": 1}),
        )
    )
    wait_for(
        lambda: len([p for p in kube.pods("bye") if p.status.phase == "Running"]) == 2,
        what="two running pods",
    )
    kube.custom.delete_namespaced_custom_object(
        G,
        V,
        "default",
        TJ,
        "bye",
        body=kubernetes.client.V1DeleteOptions(propagation_policy="Foreground"),
    )
    lingering = kube.get("bye")
    assert lingering["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in lingering["metadata"]["finalizers"]
    wait_for(lambda: api_error_status(kube.get, "bye") == 404, 60, "the TrainJob to go")
    assert kube.pods("bye") == []
    assert cluster.containers("bye", sandboxes=True) == [] and cluster.networks("bye") == []


def api_error_status(call: Any, *args: Any) -> int:
    try:
        call(*args)
    except ApiException as exc:
        return exc.status
    return 200


def test_background_delete_and_suspend(cluster: MiniCluster, kube: Kube) -> None:
    patches = pod_patch("test.io/grace", {"terminationGracePeriodSeconds": 1})
    kube.create(trainjob("pause", py("import time; time.sleep(600)"), runtimePatches=patches))
    wait_for(lambda: [p for p in kube.pods("pause") if p.status.phase == "Running"], what="running")
    kube.custom.patch_namespaced_custom_object(
        G, V, "default", TJ, "pause", {"spec": {"suspend": True}}
    )
    wait_for(lambda: condition(kube.get("pause"), "Suspended"), what="Suspended")
    wait_for(
        lambda: kube.pods("pause") == [] and cluster.containers("pause") == [], what="pods to go"
    )
    kube.custom.patch_namespaced_custom_object(
        G, V, "default", TJ, "pause", {"spec": {"suspend": False}}
    )
    wait_for(lambda: [p for p in kube.pods("pause") if p.status.phase == "Running"], what="resumed")
    status, error = api_error(
        kube.custom.patch_namespaced_custom_object,
        G,
        V,
        "default",
        TJ,
        "pause",
        {"spec": {"trainer": {"numNodes": 3}}},
    )
    assert status == 422 and error["message"].endswith(
        'spec.trainer: Invalid value: "object": field is immutable'
    )
    result = kube.custom.delete_namespaced_custom_object(G, V, "default", TJ, "pause")
    assert result["status"] == "Success" and result["details"]["name"] == "pause"
    assert api_error_status(kube.get, "pause") == 404
    wait_for(
        lambda: kube.pods("pause") == [] and cluster.containers("pause", sandboxes=True) == [],
        60,
        "garbage collection",
    )
    wait_for(lambda: cluster.networks("pause") == [], 30, "the network to go")


def test_runtime_deleted_after_create_changes_nothing(cluster: MiniCluster, kube: Kube) -> None:
    kube.create(trainjob("keep", py("import time; time.sleep(1); print('ok')")))
    # Deleted once Trainer has built the job from it (before that, the job could not start).
    wait_for(lambda: cluster.objects("pods"), 120, "keep's pods")
    cluster.delete_object("clustertrainingruntimes", "torch-distributed")
    assert cluster.objects("clustertrainingruntimes") == []
    finished(kube, "keep")


def test_resources_and_scheduling(cluster: MiniCluster, kube: Kube) -> None:
    kube.create(
        trainjob(
            "sized",
            py("import os; print(os.environ['PET_NPROC_PER_NODE'])"),
            trainer={"resourcesPerNode": {"limits": {"cpu": "500m", "memory": "256Mi"}}},
        )
    )
    finished(kube, "sized")
    pod = kube.pods("sized")[0]
    assert kube.log(pod.metadata.name) == "1\n"
    assert pod.spec.containers[0].resources.requests == {"cpu": "500m", "memory": "256Mi"}
    assert pod.status.qos_class == "Guaranteed"
    host = cluster.containers("sized")
    config = next(c for c in host if c.labels.get("minicluster.role") == "container")
    assert config.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert config.attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
    kube.create(
        trainjob("huge", py("print(1)"), trainer={"resourcesPerNode": {"requests": {"cpu": "512"}}})
    )
    pod = wait_for(lambda: kube.pods("huge"), what="the pod")[0].metadata.name
    events = wait_for(
        lambda: (
            kube.core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={pod},reason=FailedScheduling"
            ).items
        ),
        what="FailedScheduling",
    )
    assert events[0].message.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    scheduled = kube.core.read_namespaced_pod(pod, "default").status.conditions[0]
    assert (scheduled.type, scheduled.status, scheduled.reason) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    kube.custom.delete_namespaced_custom_object(
        G, V, "default", TJ, "huge", propagation_policy="Foreground"
    )
    wait_for(lambda: api_error_status(kube.get, "huge") == 404, 30, "the pending job to go")
    assert kube.pods("huge") == []


def test_cut_log_streams_and_resume_with_since_time(cluster: MiniCluster, kube: Kube) -> None:
    code = (
        "import time\nfor i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\n"
    )
    kube.create(trainjob("cut", py(code)))
    pod = wait_for(
        lambda: [p for p in kube.pods("cut") if p.status.phase == "Running"], what="running"
    )[0].metadata.name
    cluster.cut_log_streams(3)
    stream = kube.log(pod, follow=True, timestamps=True, _preload_content=False)
    got = b""
    with pytest.raises(Exception):
        for chunk in stream.stream(64):
            got += chunk
    lines = got.decode().splitlines()
    assert len(lines) == 3
    cluster.cut_log_streams(None)
    last = lines[-1].split(" ")[0]
    response = kube.raw_log(pod, follow="true", timestamps="true", sinceTime=last[:19] + "Z")
    response.read()
    tail = [
        line
        for line in response.data.decode().splitlines()
        if nanos(line.split(" ")[0]) > nanos(last)
    ]
    assert [line.split(" ", 1)[1] for line in lines] + [line.split(" ", 1)[1] for line in tail] == [
        f"tick {i}" for i in range(8)
    ]


def test_stop_is_prompt_with_open_streams(tmp_path: Path) -> None:
    mini = MiniCluster(tmp_path / "c").start()
    mini.install_crds()
    mini.install_default_runtime()
    kube = Kube(mini)
    kube.create(
        trainjob(
            "long",
            py("import time\nwhile True:\n    print('x', flush=True)\n    time.sleep(0.5)\n"),
        )
    )
    pod = wait_for(
        lambda: [p for p in kube.pods("long") if p.status.phase == "Running"], what="running"
    )[0].metadata.name
    stream = kube.log(pod, follow=True, _preload_content=False)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in stream.stream(16):
                pass
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1)
    started = time.monotonic()
    mini.stop()
    assert time.monotonic() - started < 2
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert mini.containers(sandboxes=True) == [] and mini.networks() == []


def test_fallback_termination_message_and_active_deadline(cluster: MiniCluster, kube: Kube) -> None:
    runtime = cluster.objects("clustertrainingruntimes")[0]
    runtime["metadata"] = {"name": "strict"}
    job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    job["template"]["spec"]["backoffLimit"] = 0
    pod_spec = job["template"]["spec"]["template"]["spec"]
    pod_spec["restartPolicy"] = "Never"
    pod_spec["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    cluster.apply(runtime)
    body = trainjob("fallback", py("import sys; print('about to fail'); sys.exit(7)"))
    body["spec"]["runtimeRef"]["name"] = "strict"
    kube.create(body)
    finished(kube, "fallback", "Failed")
    terminated = kube.pods("fallback")[0].status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (7, "about to fail\n")

    body = trainjob("late", py("import time; time.sleep(600)"), activeDeadlineSeconds=2)
    body["spec"]["runtimeRef"]["name"] = "strict"
    kube.create(body)
    failed = finished(kube, "late", "Failed", timeout=60)
    cond = condition(failed, "Failed")
    assert (cond["reason"], cond["message"]) == (
        "DeadlineExceeded",
        "TrainJob exceeded its active deadline",
    )
