"""Helpers for tests that drive a `MiniCluster` through the official kubernetes client."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, cast

import kubernetes

from .cluster import MiniCluster

GROUP, VERSION, TRAINJOBS = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


class Kube:
    """The official client's APIs, built from the cluster's kubeconfig."""

    def __init__(self, cluster: MiniCluster) -> None:
        self.client = kubernetes.config.new_client_from_config(
            config_file=str(cluster.kubeconfig_path)
        )
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)

    def create(self, body: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        """Create a TrainJob."""
        created = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, TRAINJOBS, body
        )
        return cast(dict[str, Any], created)

    def get(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """Read a TrainJob."""
        found = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, TRAINJOBS, name)
        return cast(dict[str, Any], found)

    def pods(self, job: str, **kwargs: Any) -> list[Any]:
        """The pods of a TrainJob, found by JobSet's label as users do."""
        selector = f"jobset.sigs.k8s.io/jobset-name={job}"
        return self.core.list_namespaced_pod("default", label_selector=selector, **kwargs).items

    def log(self, pod: str, **kwargs: Any) -> str:
        """`read_namespaced_pod_log` in the default namespace."""
        return self.core.read_namespaced_pod_log(pod, "default", **kwargs)

    def raw_log(self, pod: str, **query: str) -> Any:
        """A log request with query parameters the generated client lacks (`sinceTime`)."""
        request = self.client.param_serialize(
            "GET",
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            path_params={"namespace": "default", "name": pod},
            query_params=list(query.items()),
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*request)
        assert response.status == 200
        return response


def wait_for(predicate: Any, timeout: float = 90.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trainjob(
    name: str, command: list[str] | None = None, nodes: int = 1, **spec: Any
) -> dict[str, Any]:
    """A TrainJob on the `torch-distributed` runtime (`trainer=` adds trainer fields)."""
    trainer: dict[str, Any] = {"numNodes": nodes}
    if command is not None:
        trainer["command"] = command
    trainer.update(spec.pop("trainer", {}))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": trainer, **spec},
    }


def pod_patch(manager: str, pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """`spec.runtimePatches` patching the node pod template's spec."""
    job = {"name": "node", "template": {"spec": {"template": {"spec": pod_spec}}}}
    return [
        {
            "manager": manager,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}},
        }
    ]


def py(code: str) -> list[str]:
    """A command running Python code unbuffered."""
    return ["python3", "-u", "-c", code]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition of that type if its status is True."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind and cond["status"] == "True":
            return cond
    return None


def nanos(stamp: str) -> int:
    """Nanoseconds since the epoch of a `2026-11-30T07:00:00.123456789Z` timestamp."""
    whole = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(whole.timestamp()) * 10**9 + int(stamp[20:29].ljust(9, "0"))
