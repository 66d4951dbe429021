"""The scheduler of the single node: gates, node selection, resource fit, binding."""

from __future__ import annotations

from typing import Any

from .events import EventRecorder, object_ref
from .podstatus import Node, unschedulable
from .store import Store
from .util import rfc3339


class Scheduler:
    """Binds pending pods to the node (or reports why they cannot be scheduled)."""

    def __init__(self, store: Store, recorder: EventRecorder, node: Node) -> None:
        self.store = store
        self.events = recorder
        self.node = node

    def schedule(self, pod: dict[str, Any], bound: list[dict[str, Any]]) -> bool:
        """Bind the pod to the node if it fits; else record why not. True when bound."""
        meta = pod["metadata"]
        if pod["spec"].get("schedulingGates"):
            self._set_scheduled(
                pod,
                "False",
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates",
            )
            return False
        message = unschedulable(pod, self.node, bound)
        if message:
            if self._set_scheduled(pod, "False", "Unschedulable", message):
                self.events.modern(
                    object_ref(pod),
                    "Warning",
                    "FailedScheduling",
                    message,
                    "default-scheduler",
                    "Scheduling",
                )
            return False

        def bind(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = self.node.name
            obj.setdefault("status", {})["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": rfc3339(),
                }
            ]

        if self.store.mutate("pods", meta["namespace"], meta["name"], meta["uid"], bind):
            self.events.modern(
                object_ref(pod),
                "Normal",
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node.name}",
                "default-scheduler",
                "Binding",
            )
            pod["spec"]["nodeName"] = self.node.name
            return True
        return False

    def _set_scheduled(self, pod: dict[str, Any], status: str, reason: str, message: str) -> bool:
        current: dict[str, Any] = next(
            (
                c
                for c in pod.get("status", {}).get("conditions") or []
                if c["type"] == "PodScheduled"
            ),
            {},
        )
        if (current.get("status"), current.get("reason"), current.get("message")) == (
            status,
            reason,
            message,
        ):
            return False

        def change(obj: dict[str, Any]) -> None:
            obj.setdefault("status", {})["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": status,
                    "lastProbeTime": None,
                    "lastTransitionTime": rfc3339(),
                    "reason": reason,
                    "message": message,
                }
            ]

        meta = pod["metadata"]
        return self.store.mutate("pods", meta["namespace"], meta["name"], meta["uid"], change)
