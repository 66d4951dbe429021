"""The kubelet endpoint the API server reads pod logs from:
`GET /containerLogs/{namespace}/{pod}/{container}?follow=&previous=&timestamps=&tailLines=
&limitBytes=&sinceTime=&sinceSeconds=`, over HTTPS.

The API server validates the options; here the container is chosen from the pod's status as
the kubelet does (`validateContainerLogStatus`: the running or last terminated container,
`previous=true` for the one before, a 400 while it waits to start). Docker stamps every line
with nanoseconds; `sinceTime` is applied here (Docker's `since` has whole seconds), and
`timestamps=true` prints the kubelet's fixed nine-digit `RFC3339NanoFixed` stamps.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .util import dig, epoch_nanos, fixed_nano


class LogError(Exception):
    """A request the kubelet answers with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def container_id(pod: dict[str, Any], name: str, previous: bool) -> str:
    """The kubelet's `validateContainerLogStatus`: the Docker id to read."""
    pod_name = pod["metadata"]["name"]
    statuses = dig(pod, "status", "containerStatuses", default=[]) or []
    status = next((s for s in statuses if s.get("name") == name), None)
    if status is None:
        raise LogError(
            400, f'container "{name}" in pod "{pod_name}" is waiting to start: ContainerCreating'
        )
    state, last = status.get("state") or {}, (status.get("lastState") or {}).get("terminated")
    if previous:
        if not last or not last.get("containerID"):
            raise LogError(
                400, f'previous terminated container "{name}" in pod "{pod_name}" not found'
            )
        return str(last["containerID"]).split("://")[-1]
    if "running" in state and status.get("containerID"):
        return str(status["containerID"]).split("://")[-1]
    if "terminated" in state:
        cid = state["terminated"].get("containerID") or (last or {}).get("containerID")
        if not cid:
            raise LogError(400, f'container "{name}" in pod "{pod_name}" is terminated')
        return str(cid).split("://")[-1]
    if last and last.get("containerID"):
        return str(last["containerID"]).split("://")[-1]
    reason = (state.get("waiting") or {}).get("reason", "")
    reason = {
        "ErrImagePull": "image can't be pulled",
        "ImagePullBackOff": "trying and failing to pull image",
    }.get(reason, reason)
    raise LogError(400, f'container "{name}" in pod "{pod_name}" is waiting to start: {reason}')


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


def _options(query: dict[str, str]) -> dict[str, Any]:
    def number(key: str) -> int | None:
        return int(query[key]) if query.get(key) else None

    opts: dict[str, Any] = {
        "follow": query.get("follow") in ("true", "1"),
        "previous": query.get("previous") in ("true", "1"),
        "timestamps": query.get("timestamps") in ("true", "1"),
        "tail": number("tailLines"),
        "limit": number("limitBytes"),
    }
    if query.get("sinceTime"):
        opts["since_ns"] = epoch_nanos(query["sinceTime"])
    elif query.get("sinceSeconds"):
        opts["since_ns"] = time.time_ns() - int(query["sinceSeconds"]) * 1_000_000_000
    return opts


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


class LogServer:
    """Serves pod logs from Docker; `pod_of(namespace, name)` gives the pod with the status
    the agent last published; `tls` is (certificate, key, CA of the clients)."""

    def __init__(
        self,
        docker: Any,
        pod_of: Callable[[str, str], dict[str, Any] | None],
        tls: tuple[str, str, str],
        port: int,
    ) -> None:
        self.docker = docker
        self.pod_of = pod_of
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"service": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key, client_ca = tls
        context.load_cert_chain(cert, key)
        # Only the API server (a client certificate of the cluster's CA) may read logs.
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="kubelet-logs", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()

    def lines(
        self, namespace: str, name: str, container: str, query: dict[str, str]
    ) -> Iterator[bytes]:
        """The log bytes of one request, one Docker entry at a time (LogError to refuse)."""
        pod = self.pod_of(namespace, name)
        if pod is None:
            raise LogError(404, f'pod "{name}" not found on this node')
        opts = _options(query)
        docker_id = container_id(pod, container, opts["previous"])
        kwargs: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "timestamps": True,
            "stream": True,
            "follow": opts["follow"],
            "tail": opts["tail"] if opts["tail"] is not None else "all",
        }
        if opts.get("since_ns") and opts["tail"] is None:
            kwargs["since"] = max(1, opts["since_ns"] // 1_000_000_000 - 1)
        try:
            stream = self.docker.api.logs(docker_id, **kwargs)
        except Exception as exc:
            raise LogError(500, f"failed to read the container's log: {exc}") from exc
        return self._entries(stream, opts)

    def _entries(self, stream: Any, opts: dict[str, Any]) -> Iterator[bytes]:
        with self._lock:
            self._open.add(stream)
        budget = opts["limit"]
        try:
            for chunk in stream:
                for entry in _entries(chunk):
                    out = _format(entry, opts)
                    if out is None:
                        continue
                    if budget is not None:
                        out, budget = out[:budget], budget - len(out)
                    yield out
                    if budget is not None and budget <= 0:
                        return
        finally:
            with self._lock:
                self._open.discard(stream)
            stream.close()


class _Handler(BaseHTTPRequestHandler):
    service: LogServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._error(404, "not found")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = self.service.lines(parts[1], parts[2], parts[3], query)
        except LogError as exc:
            self._error(exc.status, str(exc))
            return
        except ValueError as exc:
            self._error(400, str(exc))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        with contextlib.suppress(OSError):
            for piece in body:
                self.wfile.write(piece)
                self.wfile.flush()

    def _error(self, status: int, message: str) -> None:
        data = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the agent logs what matters itself."""
