"""Event recording as the cluster components do it (core/v1 `Event` objects).

Two flavours, as in a real cluster: the kubelet and kube-controller-manager (job-controller)
use the legacy recorder (`source.component`, `firstTimestamp`/`lastTimestamp`, `count`,
duplicates aggregated), while the scheduler, JobSet and Trainer use the `events.k8s.io`
recorder, which shows in core/v1 with `eventTime`, `reportingComponent` and `action` and null
legacy timestamps.
"""

from __future__ import annotations

import time
from typing import Any

from .store import Store
from .util import micro_time, new_uid, rfc3339


def object_ref(obj: dict[str, Any], field_path: str | None = None) -> dict[str, Any]:
    """An `involvedObject` reference to a stored object."""
    meta = obj["metadata"]
    ref = {
        "kind": obj["kind"],
        "namespace": meta.get("namespace"),
        "name": meta["name"],
        "uid": meta.get("uid"),
        "apiVersion": obj["apiVersion"],
        "resourceVersion": meta.get("resourceVersion"),
    }
    if field_path:
        ref["fieldPath"] = field_path
    return {k: v for k, v in ref.items() if v is not None}


class EventRecorder:
    """Writes events into the store."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node

    def _name(self, ref: dict[str, Any]) -> str:
        return f"{ref['name']}.{time.time_ns():x}"

    def legacy(
        self,
        ref: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        component: str,
        host: str | None = None,
    ) -> None:
        """`record.EventRecorder`: aggregates identical events into `count`."""
        namespace = ref.get("namespace") or "default"
        for event in self.store.list_objects("events", namespace):
            same = (
                event["involvedObject"].get("uid") == ref.get("uid")
                and event["reason"] == reason
                and event["message"] == message
                and event["source"].get("component") == component
            )
            if same:
                event["count"] = event.get("count", 1) + 1
                event["lastTimestamp"] = rfc3339()
                self.store.put("events", event)
                return
        stamp = rfc3339()
        source = {"component": component, **({"host": host} if host else {})}
        self._put(
            ref,
            namespace,
            type_,
            reason,
            message,
            {
                "source": source,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host or "",
            },
        )

    def modern(
        self,
        ref: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        controller: str,
        action: str,
    ) -> None:
        """`events.EventRecorder` (events.k8s.io/v1), as seen through core/v1."""
        namespace = ref.get("namespace") or "default"
        self._put(
            ref,
            namespace,
            type_,
            reason,
            message,
            {
                "source": {},
                "firstTimestamp": None,
                "lastTimestamp": None,
                "eventTime": micro_time(),
                "action": action,
                "reportingComponent": controller,
                "reportingInstance": f"{controller}-{self.node}",
            },
        )

    def _put(
        self,
        ref: dict[str, Any],
        namespace: str,
        type_: str,
        reason: str,
        message: str,
        extra: dict[str, Any],
    ) -> None:
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": self._name(ref),
                "namespace": namespace,
                "uid": new_uid(),
                "creationTimestamp": rfc3339(),
            },
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type_,
            **extra,
        }
        self.store.put("events", event)
