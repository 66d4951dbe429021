"""`GET /api/v1/namespaces/{ns}/pods/{name}/log`, served from the pod's Docker container.

The container is chosen from the pod's status exactly as the kubelet does
(`validateContainerLogStatus`): the running or last terminated container, `previous=true` for
the one before, and a 400 while the container is waiting to start. Docker gives every line a
nanosecond timestamp; lines are filtered by `sinceTime`/`sinceSeconds` here (Docker's `since`
has one-second granularity), cut by `tailLines`/`limitBytes`, and printed with the kubelet's
fixed nine-digit `RFC3339NanoFixed` timestamps when `timestamps=true`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import errors as E
from .api import Response
from .errors import FieldError
from .httpserver import AbortStream
from .store import Store
from .util import dig, epoch_nanos, fixed_nano


def _int(query: dict[str, str], key: str) -> int | None:
    if key not in query or query[key] == "":
        return None
    try:
        return int(query[key])
    except ValueError as exc:
        raise E.bad_request(f'strconv.ParseInt: parsing "{query[key]}": invalid syntax') from exc


def _flag(query: dict[str, str], key: str) -> bool:
    value = query.get(key, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise E.bad_request(f'strconv.ParseBool: parsing "{query[key]}": invalid syntax')
    return value in ("true", "1")


def _options(name: str, query: dict[str, str]) -> dict[str, Any]:
    """Decoded and validated `PodLogOptions` (422 as the API server reports them)."""
    opts: dict[str, Any] = {
        "container": query.get("container", ""),
        "follow": _flag(query, "follow"),
        "previous": _flag(query, "previous"),
        "timestamps": _flag(query, "timestamps"),
        "tail": _int(query, "tailLines"),
        "limit": _int(query, "limitBytes"),
        "since_seconds": _int(query, "sinceSeconds"),
        "since_time": query.get("sinceTime"),
        "stream": query.get("stream") or "All",
    }
    _validate(name, opts)
    if opts["since_time"]:
        try:
            opts["since_ns"] = epoch_nanos(opts["since_time"])
        except ValueError as exc:
            raise E.bad_request(
                f'parsing time "{opts["since_time"]}" as "2006-01-02T15:04:05Z07:00": cannot parse'
            ) from exc
    elif opts["since_seconds"]:
        opts["since_ns"] = time.time_ns() - opts["since_seconds"] * 1_000_000_000
    return opts


def _validate(name: str, opts: dict[str, Any]) -> None:
    """`ValidatePodLogOptions`."""
    errs = []
    if opts["tail"] is not None and opts["tail"] < 0:
        errs.append(
            FieldError(E.INVALID, "tailLines", opts["tail"], "must be greater than or equal to 0")
        )
    if opts["limit"] is not None and opts["limit"] < 1:
        errs.append(FieldError(E.INVALID, "limitBytes", opts["limit"], "must be greater than 0"))
    if opts["since_seconds"] is not None and opts["since_seconds"] < 1:
        errs.append(
            FieldError(E.INVALID, "sinceSeconds", opts["since_seconds"], "must be greater than 0")
        )
    if opts["since_seconds"] is not None and opts["since_time"]:
        errs.append(
            FieldError(
                E.FORBIDDEN, "", "", "at most one of `sinceTime` or `sinceSeconds` may be specified"
            )
        )
    if opts["stream"] not in ("All", "Stdout", "Stderr"):
        errs.append(
            FieldError(
                E.NOT_SUPPORTED,
                "stream",
                opts["stream"],
                'supported values: "All", "Stderr", "Stdout"',
            )
        )
    elif opts["stream"] != "All" and opts["tail"] is not None:
        errs.append(
            FieldError(
                E.FORBIDDEN,
                "",
                "",
                "`tailLines` and specific `stream` are mutually exclusive for now",
            )
        )
    if errs:
        raise E.invalid("PodLogOptions", "", name, errs)


def _container(pod: dict[str, Any], requested: str) -> str:
    """`validateContainer` of the API server's pod log REST."""
    names = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
    if requested:
        if requested not in names:
            raise E.bad_request(
                f"container {requested} is not valid for pod {pod['metadata']['name']}"
            )
        return requested
    if len(pod["spec"]["containers"]) != 1:
        raise E.bad_request(
            f"a container name must be specified for pod "
            f"{pod['metadata']['name']}, choose one of: [{' '.join(names)}]"
        )
    return names[-1]


def _log_error(pod: dict[str, Any], message: str) -> E.ApiError:
    return E.ApiError(400, "BadRequest", message, {"name": pod["metadata"]["name"], "kind": "pods"})


def container_id(pod: dict[str, Any], name: str, previous: bool) -> str:
    """The kubelet's `validateContainerLogStatus`: the Docker id to read."""
    pod_name = pod["metadata"]["name"]
    statuses = (dig(pod, "status", "initContainerStatuses", default=[]) or []) + (
        dig(pod, "status", "containerStatuses", default=[]) or []
    )
    status = next((s for s in statuses if s.get("name") == name), None)
    if status is None:
        raise _log_error(
            pod, f'container "{name}" in pod "{pod_name}" is waiting to start: ContainerCreating'
        )
    state, last = status.get("state") or {}, (status.get("lastState") or {}).get("terminated")
    if previous:
        if not last or not last.get("containerID"):
            raise _log_error(
                pod, f'previous terminated container "{name}" in pod "{pod_name}" not found'
            )
        return last["containerID"].split("://")[-1]
    if "running" in state and status.get("containerID"):
        return status["containerID"].split("://")[-1]
    if "terminated" in state:
        cid = state["terminated"].get("containerID") or (last or {}).get("containerID")
        if not cid:
            raise _log_error(pod, f'container "{name}" in pod "{pod_name}" is terminated')
        return cid.split("://")[-1]
    if last and last.get("containerID"):
        return last["containerID"].split("://")[-1]
    if "waiting" not in state:
        raise _log_error(
            pod, f'container "{name}" in pod "{pod_name}" is waiting to start - no logs yet'
        )
    reason = state["waiting"].get("reason", "")
    reason = {
        "ErrImagePull": "image can't be pulled",
        "ImagePullBackOff": "trying and failing to pull image",
    }.get(reason, reason)
    raise _log_error(pod, f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}')


_STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")


def _entries(chunk: bytes) -> list[bytes]:
    """Split a Docker frame into log entries (each starts with its timestamp)."""
    entries: list[bytes] = []
    for piece in chunk.splitlines(keepends=True):
        if entries and not _STAMP.match(piece):
            entries[-1] += piece  # a multi-line frame without its own stamp
        else:
            entries.append(piece)
    return entries


class LogService:
    """Serves pod logs; tracks open Docker streams so `stop` can cut them."""

    def __init__(self, store: Store, docker: Any) -> None:
        self.store = store
        self.docker = docker
        self.cut_after: int | None = None
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self.stopped = threading.Event()

    def serve(self, namespace: str, name: str, query: dict[str, str]) -> Response:
        """The response for one log request."""
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise E.not_found("pods", "", name)
        opts = _options(name, query)
        container = _container(pod, opts["container"])
        if not pod["spec"].get("nodeName"):
            return Response(200, "", content_type="text/plain")
        docker_id = container_id(pod, container, opts["previous"])
        cut = self.cut_after if opts["follow"] else None
        return Response(200, content_type="text/plain", stream=self._lines(docker_id, opts, cut))

    def close_all(self) -> None:
        """Cut every open stream (server shutdown)."""
        self.stopped.set()
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()

    def _docker_stream(self, docker_id: str, opts: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {
            "stdout": opts["stream"] in ("All", "Stdout"),
            "stderr": opts["stream"] in ("All", "Stderr"),
            "timestamps": True,
            "stream": True,
            "follow": opts["follow"],
            "tail": opts["tail"] if opts["tail"] is not None else "all",
        }
        if opts.get("since_ns") and opts["tail"] is None:
            kwargs["since"] = max(1, opts["since_ns"] // 1_000_000_000 - 1)
        try:
            return self.docker.api.logs(docker_id, **kwargs)
        except Exception as exc:
            raise E.ApiError(500, "InternalError", f"Internal error occurred: {exc}") from exc

    def _lines(self, docker_id: str, opts: dict[str, Any], cut: int | None) -> Iterator[bytes]:
        """The kubelet's log writer: one Docker log entry (`<time> <text>`) at a time."""
        stream = self._docker_stream(docker_id, opts)
        with self._lock:
            self._open.add(stream)
        budget, lines = opts["limit"], 0
        try:
            for chunk in stream:
                for entry in _entries(chunk):
                    out = self._format(entry, opts)
                    if out is None:
                        continue
                    if budget is not None:
                        out, budget = out[:budget], budget - len(out)
                    yield out
                    lines += out.count(b"\n")
                    if budget is not None and budget <= 0:
                        return
                    if cut is not None and lines >= cut:
                        raise AbortStream()
        finally:
            with self._lock:
                self._open.discard(stream)
            stream.close()

    @staticmethod
    def _format(line: bytes, opts: dict[str, Any]) -> bytes | None:
        stamp, _, content = line.partition(b" ")
        try:
            text = stamp.decode()
            nanos = epoch_nanos(text)
        except ValueError:
            return line if not opts.get("since_ns") else None
        if opts.get("since_ns") and nanos < opts["since_ns"]:
            return None
        if opts["timestamps"]:
            return fixed_nano(text).encode() + b" " + content
        return content
