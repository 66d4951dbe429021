"""The kubelet's container-runtime side: sandbox, image, config, one container per attempt.

`restartPolicy` decides what an exit means: Never (or OnFailure with exit code 0) ends the pod;
otherwise the container restarts in place, the first time at once, then after CrashLoopBackOff
delays of 10 s doubling to 5 min. The termination message is read from the file bind-mounted at
`terminationMessagePath` (at most 4 KiB; `FallbackToLogsOnError`: the last 80 lines, 2 KiB).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .dockerops import DockerOps, pod_dir
from .events import EventRecorder, object_ref
from .podconfig import ConfigError, MountError, expand, limits, mounts, resolve_env
from .podstatus import Node, PodState
from .util import rfc3339, seconds_precision


class PodRuntime:
    """Creates, starts and inspects a pod's containers (run on the executor)."""

    def __init__(
        self,
        ops: DockerOps,
        recorder: EventRecorder,
        node: Node,
        workdir: Path,
        states: dict[str, PodState],
        materialize: Any,
    ) -> None:
        self.materialize = materialize
        self.ops = ops
        self.events = recorder
        self.node = node
        self.workdir = workdir
        self.states = states

    def event(self, pod: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a kubelet event on the pod's container."""
        ref = object_ref(pod, f"spec.containers{{{pod['spec']['containers'][0]['name']}}}")
        self.events.legacy(ref, type_, reason, message, "kubelet", self.node.name)

    def after_exit(self, pod: dict[str, Any], state: PodState) -> None:
        """Decide what an exit means: a terminal phase, or a restart after back-off."""
        code = (state.terminated or {}).get("exitCode", 1)
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            state.final = "Succeeded" if code == 0 else "Failed"
            state.terminal_at = time.monotonic()
            return
        delay, state.backoff = (
            state.backoff,
            (10.0 if not state.backoff else min(state.backoff * 2, 300.0)),
        )
        state.backoff_until = time.monotonic() + delay
        state.restart_pending = True
        if delay:
            meta, name = pod["metadata"], pod["spec"]["containers"][0]["name"]
            state.last_terminated, state.terminated = state.terminated, None
            where = f"{meta['name']}_{meta['namespace']}({meta['uid']})"
            state.waiting = {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {int(delay)}s restarting failed container={name} pod={where}",
            }
            self.event(
                pod,
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {name} in pod {where}",
            )

    def start_attempt(self, pod: dict[str, Any], state: PodState) -> None:
        """Executor task: sandbox, image, config, then create and start one container."""
        container = pod["spec"]["containers"][0]
        folder = pod_dir(self.workdir, state.uid)
        try:
            binds, tmpfs = mounts(
                pod, container, folder, lambda volume, into: self.materialize(pod, volume, into)
            )
        except MountError as exc:
            self._wait(pod, state, "ContainerCreating", None, 10, "FailedMount", str(exc))
            return
        if state.sandbox is None:
            self._make_sandbox(pod, state)
        if not self._ensure_image(pod, state, container):
            return
        try:
            env = resolve_env(
                pod,
                container,
                state.pod_ip,
                state.host_ip,
                {"cpu_milli": self.node.cpu_milli, "memory": self.node.memory},
            )
        except ConfigError as exc:
            self._wait(
                pod, state, "CreateContainerConfigError", str(exc), 5, "Failed", f"Error: {exc}"
            )
            return
        attempt = len(state.attempts)
        config = self._config(container, env, binds, tmpfs, folder, attempt)
        container_id = self.ops.create_container(
            pod, state.job, container, state.sandbox or "", attempt, config
        )
        self.event(pod, "Normal", "Created", f"Created container: {container['name']}")
        if state.attempts:
            state.restart_count += 1
            if state.terminated is not None:
                state.last_terminated, state.terminated = state.terminated, None
        state.restart_pending = False
        state.attempts.append(container_id)
        error = self.ops.start(container_id)
        if error:
            self._start_failed(pod, state, container_id, error)
            return
        info = self.ops.inspect(container_id) or {}
        state.running_since = (
            seconds_precision(info.get("State", {}).get("StartedAt", "")) or rfc3339()
        )
        state.ever_ran = True
        self.event(pod, "Normal", "Started", f"Started container {container['name']}")

    def _config(
        self,
        container: dict[str, Any],
        env: dict[str, str],
        binds: dict[str, dict[str, str]],
        tmpfs: dict[str, str],
        folder: Path,
        attempt: int,
    ) -> dict[str, Any]:
        """Docker settings of one attempt, with its own termination-message file."""
        log_file = folder / f"{container['name']}-{attempt}-termination-log"
        log_file.touch()
        log_file.chmod(0o666)
        binds[str(log_file)] = {"bind": container["terminationMessagePath"], "mode": "rw"}
        command, args = container.get("command"), container.get("args")
        return {
            "env": [f"{k}={v}" for k, v in env.items()],
            "binds": binds,
            "tmpfs": tmpfs,
            "limits": limits(container, self.node.cpu_milli // 1000),
            "command": [expand(a, env) for a in command] if command else None,
            "args": [expand(a, env) for a in args] if args else None,
        }

    def _make_sandbox(self, pod: dict[str, Any], state: PodState) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        host = spec.get("hostname") or meta["name"]
        aliases = [host]
        if spec.get("subdomain"):
            full = f"{host}.{spec['subdomain']}"
            aliases += [
                full,
                f"{full}.{meta['namespace']}",
                f"{full}.{meta['namespace']}.svc",
                f"{full}.{meta['namespace']}.svc.cluster.local",
            ]
        search = [f"{meta['namespace']}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        state.sandbox, state.pod_ip = self.ops.create_sandbox(pod, state.job, aliases, search)
        state.host_ip = self.ops.ensure_network(meta["namespace"], state.job)["gateway"]

    def _ensure_image(
        self, pod: dict[str, Any], state: PodState, container: dict[str, Any]
    ) -> bool:
        image, policy = container["image"], container.get("imagePullPolicy", "IfNotPresent")
        present = self.ops.image_id(image)
        if present and policy != "Always":
            state.image_id = f"docker://{present}"
            self.event(
                pod, "Normal", "Pulled", f'Container image "{image}" already present on machine'
            )
            return True
        if policy == "Never":
            message = f'Container image "{image}" is not present with pull policy of Never'
            self._wait(pod, state, "ErrImageNeverPull", message, 10, "Failed", message)
            return False
        self.event(pod, "Normal", "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        error = self.ops.pull(image)
        if error:
            retry = 10.0 if state.waiting.get("reason") != "ImagePullBackOff" else 20.0
            self.event(pod, "Warning", "Failed", f'Failed to pull image "{image}": {error}')
            self._wait(
                pod,
                state,
                "ErrImagePull",
                f'Failed to pull image "{image}": {error}',
                retry,
                "Failed",
                "Error: ErrImagePull",
            )
            state.waiting = {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{image}"',
            }
            return False
        took = time.monotonic() - started
        state.image_id = f"docker://{self.ops.image_id(image) or ''}"
        self.event(
            pod,
            "Normal",
            "Pulled",
            f'Successfully pulled image "{image}" in {took:.3f}s ({took:.3f}s including waiting)',
        )
        return True

    def _wait(
        self,
        pod: dict[str, Any],
        state: PodState,
        reason: str,
        message: str | None,
        retry: float,
        event_reason: str,
        event_message: str,
    ) -> None:
        state.waiting = {"reason": reason, **({"message": message} if message else {})}
        state.retry_at = time.monotonic() + retry
        self.event(pod, "Warning", event_reason, event_message)

    def _start_failed(
        self, pod: dict[str, Any], state: PodState, container_id: str, error: str
    ) -> None:
        message = f"failed to create containerd task: failed to create shim task: {error}"
        info = self.ops.inspect(container_id) or {}
        state.terminated = {
            "exitCode": 128,
            "reason": "StartError",
            "message": message,
            "startedAt": "1970-01-01T00:00:00Z",
            "finishedAt": seconds_precision(info.get("State", {}).get("FinishedAt", ""))
            or rfc3339(),
            "containerID": f"docker://{container_id}",
        }
        self.event(pod, "Warning", "Failed", f"Error: {message}")
        self.after_exit(pod, state)

    def terminated_state(self, pod: dict[str, Any], container_id: str) -> dict[str, Any]:
        """`state.terminated` of an exited container, from Docker's real state."""
        info = self.ops.inspect(container_id)
        if info is None:
            return {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "startedAt": None,
                "finishedAt": None,
            }
        docker_state = info["State"]
        code = docker_state.get("ExitCode", 0)
        reason = (
            "OOMKilled"
            if docker_state.get("OOMKilled")
            else ("Completed" if code == 0 else "Error")
        )
        out: dict[str, Any] = {"exitCode": code, "reason": reason}
        message = self._termination_message(pod, container_id, code)
        if message:
            out["message"] = message
        out.update(
            startedAt=seconds_precision(docker_state.get("StartedAt", "")),
            finishedAt=seconds_precision(docker_state.get("FinishedAt", "")),
            containerID=f"docker://{container_id}",
        )
        return out

    def _termination_message(self, pod: dict[str, Any], container_id: str, code: int) -> str:
        container = pod["spec"]["containers"][0]
        state = self.states[pod["metadata"]["uid"]]
        attempt = state.attempts.index(container_id) if container_id in state.attempts else 0
        path = pod_dir(self.workdir, state.uid) / f"{container['name']}-{attempt}-termination-log"
        try:
            with path.open("rb") as handle:
                message = handle.read(4096).decode(errors="replace")
        except OSError:
            message = ""
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = self.ops.tail(container_id, 80)[-2048:].decode(errors="replace")
        return message
