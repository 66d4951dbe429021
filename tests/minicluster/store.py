"""The in-memory object store (the cluster's etcd) and the resources the server knows."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .schema import CrdSchema
from .util import deep, new_uid, rfc3339


@dataclass(frozen=True)
class Resource:
    """A served resource: where it lives in the API and what its objects are called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    crd: str | None = None  # name of the CustomResourceDefinition serving it
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        """`apiVersion` of its objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """`kind` of its lists."""
        return f"{self.kind}List"


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, "namespace")
PODS = Resource("", "v1", "pods", "Pod", True, "pod")
EVENTS = Resource("", "v1", "events", "Event", True, "event")
CRDS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    False,
    "customresourcedefinition",
)
BUILTIN = {("", "v1"): [NAMESPACES, PODS, EVENTS], ("apiextensions.k8s.io", "v1"): [CRDS]}
TRAINER_GROUP = "trainer.kubeflow.org"


class Store:
    """Objects by resource, namespace and name, with a cluster-wide resourceVersion counter."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.wake = threading.Event()  # set on every write, for the operator
        self._rv = 1000
        self._data: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self._schemas: dict[str, tuple[str, Resource, CrdSchema]] = {}

    def resource_version(self) -> str:
        """The current resourceVersion (for list metadata)."""
        with self.lock:
            return str(self._rv)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of one object, or None."""
        with self.lock:
            obj = self._data[plural].get((namespace or "", name))
            return deep(obj) if obj is not None else None

    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the objects in etcd key order (namespace, name)."""
        with self.lock:
            keys = sorted(k for k in self._data[plural] if namespace is None or k[0] == namespace)
            return [deep(self._data[plural][k]) for k in keys]

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object with a new resourceVersion; returns the stored copy."""
        meta = obj["metadata"]
        with self.lock:
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._data[plural][(meta.get("namespace") or "", meta["name"])] = deep(obj)
        self.wake.set()
        return deep(obj)

    def remove(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Remove an object; returns it (None if it was not there)."""
        with self.lock:
            obj = self._data[plural].pop((namespace or "", name), None)
            if obj is not None:
                self._rv += 1
        self.wake.set()
        return obj

    def mutate(
        self,
        plural: str,
        namespace: str,
        name: str,
        uid: str,
        change: Callable[[dict[str, Any]], None],
    ) -> bool:
        """Atomically change an object (only the one with this uid); False if it is gone."""
        with self.lock:
            current = self._data[plural].get((namespace or "", name))
            if current is None or current["metadata"].get("uid") != uid:
                return False
            updated = deep(current)
            change(updated)
            if updated != current:
                self.put(plural, updated)
            return True

    def drop_finalizer(
        self,
        plural: str,
        namespace: str,
        name: str,
        uid: str,
        finalizer: str,
        remove_if_deleted: bool = True,
    ) -> None:
        """Remove a finalizer; a deleted object without finalizers then disappears."""
        with self.lock:
            current = self._data[plural].get((namespace or "", name))
            if current is None or current["metadata"].get("uid") != uid:
                return
            finalizers = current["metadata"].get("finalizers") or []
            if finalizer not in finalizers:
                return
            updated = deep(current)
            updated["metadata"]["finalizers"] = [f for f in finalizers if f != finalizer]
            if not updated["metadata"]["finalizers"]:
                del updated["metadata"]["finalizers"]
                if updated["metadata"].get("deletionTimestamp") and remove_if_deleted:
                    self.remove(plural, namespace, name)
                    return
            self.put(plural, updated)

    def namespace_exists(self, name: str) -> bool:
        """Whether the namespace object exists."""
        return self.get("namespaces", "", name) is not None

    def add_namespace(self, name: str) -> dict[str, Any]:
        """Create a namespace object as `kubectl create namespace` does."""
        obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": new_uid(),
                "creationTimestamp": rfc3339(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        return self.put("namespaces", obj)

    # -- custom resources -------------------------------------------------------------------
    def custom_resources(self) -> list[tuple[Resource, CrdSchema]]:
        """Resources served by the installed CRDs (first served version of each)."""
        with self.lock:
            crds = self._data["customresourcedefinitions"]
            out = []
            for (_, name), crd in sorted(crds.items()):
                cached = self._schemas.get(name)
                if cached is None or cached[0] != crd["metadata"]["uid"]:
                    cached = (crd["metadata"]["uid"], *_served(crd))
                    self._schemas[name] = cached
                out.append((cached[1], cached[2]))
            return out

    def find(
        self, group: str, version: str, plural: str
    ) -> tuple[Resource, CrdSchema | None] | None:
        """The resource served at /apis/<group>/<version>/<plural> (None if not served)."""
        for resource in BUILTIN.get((group, version), []):
            if resource.plural == plural:
                return resource, None
        for resource, schema in self.custom_resources():
            if (resource.group, resource.version, resource.plural) == (group, version, plural):
                return resource, schema
        return None

    def resource(self, plural: str) -> tuple[Resource, CrdSchema | None] | None:
        """A served resource by plural name alone (builtins first)."""
        for resources in BUILTIN.values():
            for resource in resources:
                if resource.plural == plural:
                    return resource, None
        for resource, schema in self.custom_resources():
            if resource.plural == plural:
                return resource, schema
        return None


def _served(crd: dict[str, Any]) -> tuple[Resource, CrdSchema]:
    """The resource and schema of a CRD's first served version."""
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v.get("served", True))
    names = spec["names"]
    resource = Resource(
        spec["group"],
        version["name"],
        names["plural"],
        names["kind"],
        spec.get("scope") == "Namespaced",
        names.get("singular", names["kind"].lower()),
        crd["metadata"]["name"],
        "status" in (version.get("subresources") or {}),
    )
    return resource, CrdSchema(version["schema"]["openAPIV3Schema"])
