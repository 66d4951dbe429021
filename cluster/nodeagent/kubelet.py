"""Drives each pod bound to the node towards its spec and publishes its status to the API.

Per pod: the runtime (`podruntime`) makes a sandbox and the container attempts; exits become
restarts or a terminal phase; deletion stops the container with the pod's grace period
(SIGTERM, then SIGKILL), removes the containers and then the pod object (the final delete). A
terminal pod's sandbox -- and so its DNS name -- goes away 2 s after its container ended.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from .dockerops import LABEL, DockerOps
from .events import EventRecorder
from .podruntime import PodRuntime
from .podstatus import Node, PodState, render
from .volumes import VolumeSources

SANDBOX_LINGER = 2.0
log = logging.getLogger(__name__)


class Kubelet:
    """One `sync` per tick over the pods the API says are bound to this node."""

    def __init__(
        self,
        core: Any,
        ops: DockerOps,
        recorder: EventRecorder,
        node: Node,
        workdir: Path,
        executor: Executor,
    ) -> None:
        self.core = core
        self.ops = ops
        self.events = recorder
        self.node = node
        self.workdir = workdir
        self.executor = executor
        self.wake = threading.Event()
        self.states: dict[str, PodState] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.runtime = PodRuntime(ops, recorder, node, workdir, self.states, VolumeSources(core))

    def bound_pods(self) -> list[dict[str, Any]]:
        """Every pod bound to this node, as plain API JSON."""
        answer = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node.name}", _preload_content=False
        )
        return list(json.loads(answer.data)["items"])

    def _submit(self, state: PodState, fn: Any, *args: Any) -> None:
        state.busy = True

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # a Docker or API hiccup: retry a little later
                log.warning("pod %s/%s: %s", state.namespace, state.name, exc)
                state.retry_at = time.monotonic() + 2
                state.waiting = {"reason": "ContainerCreating", "message": str(exc)[:300]}
            finally:
                state.busy = False
                self.wake.set()

        self.executor.submit(run)

    def sync(self, pods: list[dict[str, Any]], snapshot: dict[str, dict[str, Any]]) -> None:
        """One pass over all bound pods."""
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        for pod in pods:
            meta = pod["metadata"]
            state = self.states.get(meta["uid"])
            if state is None:
                job = meta.get("labels", {}).get("jobset.sigs.k8s.io/jobset-name", meta["name"])
                state = self.states.setdefault(
                    meta["uid"], PodState(meta["uid"], meta["namespace"], meta["name"], job)
                )
            if meta.get("deletionTimestamp"):
                self._terminate(pod, state, snapshot)
            else:
                self._drive(pod, state, snapshot)
            self._publish(pod, state)
        self._collect(pods, snapshot)

    def _drive(self, pod: dict[str, Any], state: PodState, snapshot: dict[str, Any]) -> None:
        if state.busy:
            return
        if state.final:
            self._linger(state)
            return
        now = time.monotonic()
        if not state.attempts:
            if now >= state.retry_at:
                self._submit(state, self.runtime.start_attempt, pod, state)
            return
        if state.running_since is not None:
            info = snapshot.get(state.attempts[-1])
            if info is None or info["State"] in ("exited", "dead"):
                state.terminated = self.runtime.terminated_state(pod, state.attempts[-1])
                state.running_since = None
                self.runtime.after_exit(pod, state)
            return
        if state.restart_pending and now >= max(state.backoff_until, state.retry_at):
            self._submit(state, self.runtime.start_attempt, pod, state)

    def _terminate(self, pod: dict[str, Any], state: PodState, snapshot: dict[str, Any]) -> None:
        if state.busy:
            return
        current = state.attempts[-1] if state.attempts else None
        info = snapshot.get(current) if current else None
        alive = info is not None and info["State"] in ("running", "restarting", "paused")
        if alive and not state.kill_sent:
            state.kill_sent = True
            grace = int(pod["metadata"].get("deletionGracePeriodSeconds", 30))
            name = pod["spec"]["containers"][0]["name"]
            self.runtime.event(pod, "Normal", "Killing", f"Stopping container {name}")
            self._submit(state, self.ops.stop, current, grace)
            return
        if alive:
            return
        if current and state.terminated is None and state.running_since is not None:
            state.terminated = self.runtime.terminated_state(pod, current)
            state.running_since = None
        if state.final is None:
            code = (state.terminated or {}).get("exitCode")
            state.final = "Succeeded" if code == 0 else "Failed"
            state.terminal_at = time.monotonic()
        if state.sandbox and not state.sandbox_gone:
            state.sandbox_gone = True
            self.executor.submit(self.ops.remove, state.sandbox)

    def _linger(self, state: PodState) -> None:
        if (
            state.sandbox
            and not state.sandbox_gone
            and state.terminal_at is not None
            and (time.monotonic() - state.terminal_at > SANDBOX_LINGER)
        ):
            state.sandbox_gone = True
            self.executor.submit(self.ops.remove, state.sandbox)

    def _publish(self, pod: dict[str, Any], state: PodState) -> None:
        meta = pod["metadata"]
        status = render({**pod, "status": state.published or pod.get("status") or {}}, state)
        if status != state.published:
            try:
                self.core.patch_namespaced_pod_status(
                    meta["name"],
                    meta["namespace"],
                    {"status": status},
                    _content_type="application/merge-patch+json",
                )
                state.published = status
            except ApiException as exc:  # gone, or a conflict: the next tick tries again
                log.info("status of %s/%s: %s", meta["namespace"], meta["name"], exc.reason)
        deleting = meta.get("deletionTimestamp") and not meta.get("finalizers")
        if deleting and state.final and not state.busy:
            self._submit(state, self._finish, pod, state)

    def _finish(self, pod: dict[str, Any], state: PodState) -> None:
        """Executor task: remove the pod's containers, then the pod object (the final delete)."""
        for container_id in [*state.attempts, state.sandbox]:
            if container_id:
                self.ops.remove(container_id)
        # The job's last pod takes its network along: once the pods are gone, nothing is left.
        sandboxes = [
            info
            for info in self.ops.snapshot().values()
            if info.get("Labels", {}).get(f"{LABEL}.role") == "sandbox"
            and info["Labels"].get(f"{LABEL}.namespace") == state.namespace
            and info["Labels"].get(f"{LABEL}.job") == state.job
        ]
        if not sandboxes:
            self.ops.remove_network(state.namespace, state.job)
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body={"preconditions": {"uid": meta["uid"]}},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _collect(self, pods: list[dict[str, Any]], snapshot: dict[str, Any]) -> None:
        """Remove containers (and host folders) of pods that no longer exist."""
        alive = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self.states if u not in alive]:
            state = self.states.pop(uid)
            for container_id in [*state.attempts, state.sandbox]:
                if container_id:
                    self.executor.submit(self.ops.remove, container_id)
            shutil.rmtree(self.workdir / "pods" / uid, ignore_errors=True)
        for container_id, info in snapshot.items():
            owner = info.get("Labels", {}).get(f"{LABEL}.pod-uid")
            if owner and owner not in alive and owner not in self.states:
                self.executor.submit(self.ops.remove, container_id)
        self._prune_networks(snapshot)

    def _prune_networks(self, snapshot: dict[str, Any]) -> None:
        """Drop job networks no sandbox uses (Docker's address pools are small and shared)."""
        used = {
            (info["Labels"].get(f"{LABEL}.namespace"), info["Labels"].get(f"{LABEL}.job"))
            for info in snapshot.values()
            if info.get("Labels", {}).get(f"{LABEL}.role") == "sandbox"
        }
        used |= {(s.namespace, s.job) for s in self.states.values() if s.busy}
        for key in self.ops.known_networks():
            if key not in used:
                self.ops.remove_network(*key)
