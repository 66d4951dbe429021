"""The kubelet of the single node: drives each bound pod, publishes its status.

Per pod: the scheduler binds it; then the runtime (`podruntime`) makes a sandbox and the
container attempts; exits are turned into restarts or a terminal phase; deletion stops the
container with the pod's grace period (SIGTERM, then SIGKILL), removes the containers and
then the pod object. A terminal pod's sandbox -- and so its DNS name -- goes away 2 s after
its container ended (endpoint propagation).
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from .dockerops import DockerOps
from .events import EventRecorder
from .podruntime import PodRuntime
from .podstatus import Node, PodState, render
from .scheduler import Scheduler
from .store import Store

SANDBOX_LINGER = 2.0


class Kubelet:
    """Drives every pod of the node towards its spec; one `sync` per operator tick."""

    def __init__(
        self,
        store: Store,
        ops: DockerOps,
        recorder: EventRecorder,
        node: Node,
        workdir: Path,
        executor: Executor,
    ) -> None:
        self.store = store
        self.ops = ops
        self.events = recorder
        self.node = node
        self.workdir = workdir
        self.executor = executor
        self.states: dict[str, PodState] = {}
        self.runtime = PodRuntime(ops, recorder, node, workdir, self.states)
        self.scheduler = Scheduler(store, recorder, node)

    # -- events ------------------------------------------------------------------------------
    def _submit(self, state: PodState, fn: Any, *args: Any) -> None:
        state.busy = True

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # Docker hiccup: retry a little later
                state.retry_at = time.monotonic() + 2
                state.waiting = {"reason": "ContainerCreating", "message": str(exc)[:300]}
            finally:
                state.busy = False
                self.store.wake.set()

        self.executor.submit(run)

    # -- main loop ---------------------------------------------------------------------------
    def sync(self, snapshot: dict[str, dict[str, Any]]) -> None:
        """One pass over all pods."""
        pods = self.store.list_objects("pods")
        bound = [p for p in pods if p["spec"].get("nodeName") == self.node.name]
        for pod in pods:
            if not pod["spec"].get("nodeName"):
                if self.scheduler.schedule(pod, bound):
                    bound.append(pod)
                continue
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

    # -- container lifecycle -----------------------------------------------------------------
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

    # -- deletion and cleanup ----------------------------------------------------------------
    def _terminate(self, pod: dict[str, Any], state: PodState, snapshot: dict[str, Any]) -> None:
        if state.busy:
            return
        current = state.attempts[-1] if state.attempts else None
        info = snapshot.get(current) if current else None
        alive = info is not None and info["State"] in ("running", "restarting", "paused")
        if alive and not state.kill_sent:
            state.kill_sent = True
            grace = int(pod["metadata"].get("deletionGracePeriodSeconds", 30))
            self.runtime.event(
                pod,
                "Normal",
                "Killing",
                f"Stopping container {pod['spec']['containers'][0]['name']}",
            )
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
        status = render(pod, state)
        if status != pod.get("status"):
            self.store.mutate(
                "pods",
                meta["namespace"],
                meta["name"],
                meta["uid"],
                lambda obj: obj.__setitem__("status", status),
            )
        deleting = meta.get("deletionTimestamp") and not meta.get("finalizers")
        if deleting and state.final and not state.busy:
            self._submit(state, self._finish, pod, state)

    def _finish(self, pod: dict[str, Any], state: PodState) -> None:
        """Executor task: remove the pod's containers, then the pod object (the final delete)."""
        for container_id in [*state.attempts, state.sandbox]:
            if container_id:
                self.ops.remove(container_id)
        meta = pod["metadata"]
        with self.store.lock:
            current = self.store.get("pods", meta["namespace"], meta["name"])
            if current is not None and current["metadata"]["uid"] == meta["uid"]:
                self.store.remove("pods", meta["namespace"], meta["name"])

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
            owner = info.get("Labels", {}).get("minicluster.pod-uid")
            if owner and owner not in alive and owner not in self.states:
                self.executor.submit(self.ops.remove, container_id)
        self._prune_networks(snapshot)

    def _prune_networks(self, snapshot: dict[str, Any]) -> None:
        """Drop job networks no sandbox uses (Docker's address pools are small and shared)."""
        used = {
            (info["Labels"].get("minicluster.namespace"), info["Labels"].get("minicluster.job"))
            for info in snapshot.values()
            if info.get("Labels", {}).get("minicluster.role") == "sandbox"
        }
        used |= {(s.namespace, s.job) for s in self.states.values() if s.busy}
        for key in self.ops.known_networks():
            if key not in used:
                self.ops.remove_network(*key)

    def kill(self, pod_name: str) -> bool:
        """SIGKILL the current container of the named pod."""
        for state in list(self.states.values()):
            if state.name == pod_name and state.attempts:
                self.ops.kill(state.attempts[-1])
                return True
        return False
