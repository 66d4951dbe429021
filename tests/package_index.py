"""A PEP 503 package index serving one hand-built wheel (tinypkg 1.0), for the
packages_to_install tests: a real pip talks to it."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager


def build_wheel(name: str, version: str, value: int) -> bytes:
    """A minimal pure-Python wheel holding `name/__init__.py` with VALUE = value."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


@contextmanager
def package_index(
    bind: str = "127.0.0.1", advertise: str | None = None
) -> Iterator[tuple[str, list[str]]]:
    """Serve tinypkg 1.0 on `bind`; yield the index URL (on `advertise`, default `bind`) and the
    list of paths requested so far."""
    wheel_name = "tinypkg-1.0-py3-none-any.whl"
    wheel = build_wheel("tinypkg", "1.0", 42)
    requests: list[str] = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.rstrip("/") == "/simple/tinypkg":
                body = f'<a href="/files/{wheel_name}">{wheel_name}</a>'.encode()
                kind = "text/html"
            elif self.path == f"/files/{wheel_name}":
                body, kind = wheel, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((bind, 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{advertise or bind}:{server.server_address[1]}/simple", requests
    finally:
        server.shutdown()
        server.server_close()
