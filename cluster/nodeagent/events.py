"""core/v1 Events as the kubelet records them (legacy recorder: `source`, `count`)."""

from __future__ import annotations

import logging
import time
from typing import Any

from kubernetes.client.rest import ApiException

from .util import rfc3339

log = logging.getLogger(__name__)


def object_ref(obj: dict[str, Any], field_path: str | None = None) -> dict[str, Any]:
    """The `involvedObject` of an event about `obj`."""
    meta = obj["metadata"]
    ref = {
        "kind": obj.get("kind", "Pod"),
        "namespace": meta.get("namespace", ""),
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "apiVersion": obj.get("apiVersion", "v1"),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        ref["fieldPath"] = field_path
    return ref


class EventRecorder:
    """Creates events through the API; a refused event is logged, never raised."""

    def __init__(self, core: Any, node: str) -> None:
        self.core = core
        self.node = node

    def legacy(
        self,
        ref: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        component: str,
        host: str | None = None,
    ) -> None:
        """One event, as `record.EventRecorder` first writes it."""
        namespace = ref.get("namespace") or "default"
        stamp = rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref['name']}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        try:
            self.core.create_namespaced_event(namespace, body)
        except ApiException as exc:
            log.warning("event %s on %s refused: %s", reason, ref["name"], exc.reason)
