"""The one boundary to the Kubernetes client: connecting, the calls the backend makes (raw JSON,
no model deserialisation: listing a thousand pods stays fast), and their errors, typed.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from prefect_kubeflow import constants
from prefect_kubeflow.backends.kubernetes.settings import KubernetesSettings
from prefect_kubeflow.errors import (
    BackendError,
    ClusterPermissionError,
    ClusterUnavailableError,
    InvalidInputError,
    NameConflictError,
    NamespaceNotFoundError,
    PrefectKubeflowError,
    TrainerNotInstalledError,
)

TRAINJOBS = "trainjobs"
CLUSTER_RUNTIMES = "clustertrainingruntimes"
_TRAINER_RESOURCES = (TRAINJOBS, CLUSTER_RUNTIMES)
_CLUSTER_SCOPED = (CLUSTER_RUNTIMES, "namespaces")
_INSTALL_HINT = (
    "install Kubeflow Trainer on the cluster (kubectl apply --server-side -k "
    '"github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=<version>")'
)


def connect(settings: KubernetesSettings) -> client.ApiClient:
    """A client of the configured cluster (see `KubernetesSettings` for the order tried).

    Raises:
        ClusterUnavailableError: no configuration names a cluster, or it cannot be loaded.
    """
    try:
        if settings.kubeconfig is not None:
            return config.new_client_from_config_dict(
                dict(settings.kubeconfig), context=settings.context, persist_config=False
            )
        if settings.config_file is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(
            config_file=settings.config_file, context=settings.context, persist_config=False
        )
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        where = settings.config_file or "the kubeconfig"
        raise ClusterUnavailableError(
            f"cannot load a cluster configuration from {where}"
            f"{f' (context {settings.context!r})' if settings.context else ''}: {exc}"
        ) from exc


class Cluster:
    """The calls the backend makes, in one namespace; each answers JSON-decoded dicts."""

    def __init__(self, api_client: client.ApiClient, settings: KubernetesSettings) -> None:
        self.api_client = api_client
        self.namespace = settings.namespace
        self.host = str(api_client.configuration.host)
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _json(self, response: Any) -> Any:
        # A list of a thousand objects is a million small allocations: without the cyclic
        # collector running through them mid-parse, decoding takes a fraction of the time.
        body = response.data
        collecting = gc.isenabled()
        gc.disable()
        try:
            return json.loads(body)
        finally:
            if collecting:
                gc.enable()

    def create_trainjob(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the TrainJob `body`."""
        name = body["metadata"]["name"]
        with self.errors("create", TRAINJOBS, name):
            return self._json(
                self.custom.create_namespaced_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    self.namespace,
                    TRAINJOBS,
                    body,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )

    def read_trainjob(self, name: str) -> dict[str, Any] | None:
        """The TrainJob `name`; None if there is none."""
        with self.errors("get", TRAINJOBS, name, missing_ok=True):
            return self._json(
                self.custom.get_namespaced_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    self.namespace,
                    TRAINJOBS,
                    name,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        return None

    def list_trainjobs(self, label_selector: str) -> list[dict[str, Any]]:
        """The namespace's TrainJobs matching `label_selector`."""
        with self.errors("list", TRAINJOBS):
            listed = self._json(
                self.custom.list_namespaced_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    self.namespace,
                    TRAINJOBS,
                    label_selector=label_selector,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        return list(listed.get("items") or [])

    def patch_trainjob(self, name: str, patch: dict[str, Any]) -> None:
        """Merge `patch` into the TrainJob `name` (a dict body is sent as a merge patch); gone
        already: nothing to do."""
        with self.errors("patch", TRAINJOBS, name, missing_ok=True):
            self.custom.patch_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                self.namespace,
                TRAINJOBS,
                name,
                patch,
                _preload_content=False,
                _request_timeout=self.timeout,
            )

    def create_event(self, involved: Mapping[str, Any], reason: str, message: str) -> None:
        """Record a core/v1 Event about the object `involved` (its apiVersion, kind, name,
        uid), from prefect-kubeflow."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}."},
            "involvedObject": {**involved, "namespace": self.namespace},
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": constants.APP_NAME},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with self.errors("create", "events"):
            self.core.create_namespaced_event(
                self.namespace, body, _preload_content=False, _request_timeout=self.timeout
            )

    def delete_trainjob(self, name: str) -> bool:
        """Delete the TrainJob `name`, its pods first (foreground); whether it existed."""
        with self.errors("delete", TRAINJOBS, name, missing_ok=True):
            self.custom.delete_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                self.namespace,
                TRAINJOBS,
                name,
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            return True
        return False

    def check_namespace(self) -> None:
        """Raise `NamespaceNotFoundError` if the namespace does not exist (an identity that may
        not read namespaces is not stopped: a namespaced Role seldom grants it)."""
        try:
            self.core.read_namespace(
                self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise self._namespace_missing() from exc
            if exc.status != 403:
                with self.errors("get", "namespaces", self.namespace):
                    raise

    def list_runtimes(self) -> list[dict[str, Any]]:
        """The cluster's ClusterTrainingRuntimes."""
        with self.errors("list", CLUSTER_RUNTIMES):
            listed = self._json(
                self.custom.list_cluster_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    CLUSTER_RUNTIMES,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        return list(listed.get("items") or [])

    def read_runtime(self, name: str) -> dict[str, Any] | None:
        """The ClusterTrainingRuntime `name`; None if there is none."""
        with self.errors("get", CLUSTER_RUNTIMES, name, missing_ok=True):
            return self._json(
                self.custom.get_cluster_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    CLUSTER_RUNTIMES,
                    name,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        return None

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        """The namespace's pods matching `label_selector` (never all of them)."""
        with self.errors("list", "pods"):
            listed = self._json(
                self.core.list_namespaced_pod(
                    self.namespace,
                    label_selector=label_selector,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        return list(listed.get("items") or [])

    def list_events(self, field_selector: str) -> list[dict[str, Any]]:
        """The namespace's events matching `field_selector`."""
        with self.errors("list", "events"):
            listed = self._json(
                self.core.list_namespaced_event(
                    self.namespace,
                    field_selector=field_selector,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        return list(listed.get("items") or [])

    def pod_log(
        self,
        pod: str,
        follow: bool,
        tail_lines: int | None = None,
        since_time: str | None = None,
        read_timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """The streamable log of the pod's node container, each line after its RFC 3339 time.

        Sent by hand: the client's `read_namespaced_pod_log` has no ``sinceTime``, and resuming
        a stream from the last time seen needs it (``sinceSeconds`` would depend on two clocks).
        """
        query: list[tuple[str, str]] = [("container", constants.NODE), ("timestamps", "true")]
        if follow:
            query.append(("follow", "true"))
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        if since_time is not None:
            query.append(("sinceTime", since_time))
        request = self.api_client.param_serialize(
            "GET",
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            path_params={"namespace": self.namespace, "name": pod},
            query_params=query,
            # As kubectl asks: a real API server refuses `text/plain` alone (406), though the
            # log itself comes back as text.
            header_params={"Accept": "application/json, */*"},
            auth_settings=["BearerToken"],
        )
        with self.errors("get", "pods/log", pod):
            response = self.api_client.call_api(
                *request, _request_timeout=(self.timeout[0], read_timeout or self.timeout[1])
            )
            if not 200 <= response.status <= 299:
                response.read()
                raise ApiException.from_response(http_resp=response, body=None, data=None)
        raw: urllib3.BaseHTTPResponse = response.response
        return raw

    @contextmanager
    def errors(
        self, verb: str, resource: str, name: str | None = None, missing_ok: bool = False
    ) -> Iterator[None]:
        """Turn the client's errors into typed ones that say what to do; with `missing_ok`, a
        missing object (not a missing namespace or CRD) is swallowed (the caller answers None)."""
        try:
            yield
        except ApiException as exc:
            error = self._api_error(exc, verb, resource, name)
            if error is None and missing_ok:
                return
            raise (error or BackendError(self._said(exc, verb, resource, name))) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            if isinstance(reason, urllib3.exceptions.SSLError):
                raise ClusterUnavailableError(
                    f"the Kubernetes API at {self.host} presented a certificate that is not "
                    f"trusted ({reason}); put the cluster's CA in the kubeconfig "
                    "(certificate-authority-data): verification stays on"
                ) from exc
            raise ClusterUnavailableError(
                f"cannot reach the Kubernetes API at {self.host} ({type(reason).__name__}: "
                f"{reason}); is the cluster up and the kubeconfig's server address right?"
            ) from exc

    def _api_error(
        self, exc: ApiException, verb: str, resource: str, name: str | None
    ) -> PrefectKubeflowError | None:
        """The typed error for `exc`; None for a plain missing object."""
        status = _status(exc)
        details = status.get("details") or {}
        said = self._said(exc, verb, resource, name)
        if exc.status == 403:
            return ClusterPermissionError(
                f"RBAC forbids {verb!r} on {resource!r} {self._where(resource)} "
                f"({status.get('message', exc.reason)}); grant it to this identity with a Role "
                "and RoleBinding"
            )
        if exc.status == 401:
            return ClusterUnavailableError(f"{said}: the cluster rejected the credentials")
        if exc.status == 404 and details.get("kind") == "namespaces":
            return self._namespace_missing()
        if exc.status == 404 and not details and resource in _TRAINER_RESOURCES:
            return TrainerNotInstalledError(
                f"{said}: the cluster at {self.host} does not serve "
                f"{resource}.{constants.GROUP}/{constants.VERSION}; {_INSTALL_HINT}"
            )
        if exc.status == 404:
            return None
        if exc.status == 409:
            return NameConflictError(f"{said}: {status.get('message', 'already exists')}")
        if exc.status == 422:
            return InvalidInputError(f"{said}: {status.get('message', exc.body)}")
        return None

    def _namespace_missing(self) -> NamespaceNotFoundError:
        return NamespaceNotFoundError(
            f"namespace {self.namespace!r} does not exist on {self.host}; create it "
            f"(kubectl create namespace {self.namespace}) or set `namespace`"
        )

    def _said(self, exc: ApiException, verb: str, resource: str, name: str | None) -> str:
        what = f"{resource} {name!r}" if name else resource
        message = _status(exc).get("message") or exc.reason
        return f"{verb} {what} {self._where(resource)} failed ({exc.status}: {message})"

    def _where(self, resource: str) -> str:
        return "cluster-wide" if resource in _CLUSTER_SCOPED else f"in namespace {self.namespace!r}"


def _status(exc: ApiException) -> dict[str, Any]:
    """The API's `Status` body of `exc` ({} when it sent none)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
