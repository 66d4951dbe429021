"""The HTTPS listener: HTTP/1.1 keep-alive, JSON bodies, chunked log streams."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api import ApiHandler, Request, Response
from .util import new_uid

LOG = logging.getLogger("minicluster")


class AbortStream(Exception):
    """Raised by a stream to end the connection abruptly (no final chunk)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the cluster records requests itself."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, url.path, query, headers, body)
        try:
            response = self.server.api.handle(request)
        except Exception as exc:  # a bug in the fixture: answer like the apiserver would
            LOG.error("minicluster internal error: %s", traceback.format_exc())
            response = Response(
                500,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"Internal error occurred: {exc}",
                    "reason": "InternalError",
                    "details": {"causes": [{"message": str(exc)}]},
                    "code": 500,
                },
            )
        if response.stream is not None:
            self._send_stream(response)
        else:
            self._send(response)

    def _head(self, response: Response) -> None:
        self.send_response(response.code)
        self.send_header("Audit-Id", new_uid())
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)

    def _send(self, response: Response) -> None:
        if isinstance(response.body, (dict, list)):
            payload = json.dumps(response.body).encode()
        else:
            payload = str(response.body or "").encode()
        self._head(response)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, response: Response) -> None:
        stream = response.stream
        assert stream is not None
        self._head(response)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except AbortStream:
            self.close_connection = True
            _hard_close(self.connection)
        except (OSError, ssl.SSLError):
            self.close_connection = True
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()


def _hard_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class ApiServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over TLS that can drop every open connection on shutdown."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, api: ApiHandler, cert_file: str, key_file: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections dropped by clients (or by `stop`) are not errors worth printing."""

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="minicluster-apiserver",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and cut every open connection, streams included."""
        self.shutdown()
        self.server_close()
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            _hard_close(sock)
        if self._thread is not None:
            self._thread.join(timeout=2)
