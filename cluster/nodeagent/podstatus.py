"""Pod status as the kubelet writes it, and what the agent knows of each pod and of its node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .util import rfc3339

TERMINAL = ("Succeeded", "Failed")


@dataclass
class PodState:
    """What the kubelet knows about one pod's sandbox and container attempts."""

    uid: str
    namespace: str
    name: str
    job: str
    start_time: str = field(default_factory=rfc3339)
    sandbox: str | None = None
    pod_ip: str = ""
    host_ip: str = ""
    attempts: list[str] = field(default_factory=list)
    image_id: str = ""
    running_since: str | None = None
    terminated: dict[str, Any] | None = None  # current attempt, once it exited
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    waiting: dict[str, str] = field(default_factory=lambda: {"reason": "ContainerCreating"})
    backoff: float = 0.0
    backoff_until: float = 0.0
    retry_at: float = 0.0
    busy: bool = False
    final: str | None = None  # terminal phase once decided
    terminal_at: float | None = None
    sandbox_gone: bool = False
    kill_sent: bool = False
    restart_pending: bool = False
    ever_ran: bool = False
    noted: set[str] = field(default_factory=set)  # one-shot events already recorded
    published: dict[str, Any] | None = None  # the status last written to the API


def _condition(
    kind: str, status: bool, old: dict[str, dict[str, Any]], reason: str = "", message: str = ""
) -> dict[str, Any]:
    value = "True" if status else "False"
    prior = old.get(kind)
    when = prior["lastTransitionTime"] if prior and prior.get("status") == value else rfc3339()
    cond = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": when}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _container_state(state: PodState) -> tuple[dict[str, Any], bool]:
    """(state, running) of the current attempt."""
    if state.terminated is not None:
        return {"terminated": state.terminated}, False
    if state.running_since is not None:
        return {"running": {"startedAt": state.running_since}}, True
    return {"waiting": dict(state.waiting)}, False


def phase_of(pod: dict[str, Any], state: PodState) -> str:
    """`getPhase`: Pending until the container ran, then Running until terminal."""
    if state.final:
        return state.final
    if state.running_since is not None or state.ever_ran:
        return "Running"
    return "Pending"


def render(pod: dict[str, Any], state: PodState) -> dict[str, Any]:
    """The full `status` of a bound pod."""
    old = {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}
    container = pod["spec"]["containers"][0]
    current, running = _container_state(state)
    phase = phase_of(pod, state)
    terminal = phase in TERMINAL
    status_c: dict[str, Any] = {
        "name": container["name"],
        "state": current,
        "lastState": {"terminated": state.last_terminated} if state.last_terminated else {},
        "ready": running and not terminal,
        "restartCount": state.restart_count,
        "image": container.get("image", ""),
        "imageID": state.image_id,
        "started": running,
    }
    last_id = (state.terminated or {}).get("containerID") or (
        f"docker://{state.attempts[-1]}" if state.attempts and running else None
    )
    if last_id:
        status_c["containerID"] = last_id
    not_ready = f"containers with unready status: [{container['name']}]"
    ready_reason = ("PodCompleted", "") if terminal else ("ContainersNotReady", not_ready)
    ready = running and not terminal
    conditions = [
        _condition(
            "PodReadyToStartContainers", bool(state.sandbox) and not state.sandbox_gone, old
        ),
        _condition("Initialized", True, old, "PodCompleted" if terminal else ""),
        _condition("Ready", ready, old, *(("", "") if ready else ready_reason)),
        _condition("ContainersReady", ready, old, *(("", "") if ready else ready_reason)),
        old.get("PodScheduled") or _condition("PodScheduled", True, old),
    ]
    status = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": state.host_ip,
        "hostIPs": [{"ip": state.host_ip}] if state.host_ip else [],
        "startTime": state.start_time,
        "containerStatuses": [status_c],
        "qosClass": pod.get("status", {}).get("qosClass", "BestEffort"),
    }
    if state.pod_ip:
        status.update(podIP=state.pod_ip, podIPs=[{"ip": state.pod_ip}])
    return status


@dataclass
class Node:
    """The agent's node: its name, address, kubelet port and allocatable resources."""

    name: str
    cpu_milli: int
    memory: int
    address: str = "127.0.0.1"
    port: int = 10250
    max_pods: int = 110
