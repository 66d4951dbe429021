"""Runtime documents and the real loopback servers that serve them to the runtime tests: a plain
HTTP(S) file server and a GitHub-REST-API-shaped server (contents API) on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


def runtime_doc(
    name: str,
    *,
    framework: str | None = "torch",
    num_nodes: int = 1,
    nproc: Any = "auto",
    image: str | None = "example.com/torch:1",
    env: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
    command: list[str] | None = None,
    kind: str = "ClusterTrainingRuntime",
    policy: str = "torch",
) -> dict[str, Any]:
    """A runtime document as a dict (dump it with `yaml.safe_dump`)."""
    container: dict[str, Any] = {"name": "node"}
    if image:
        container["image"] = image
    if command:
        container["command"] = command
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if resources:
        container["resources"] = {"limits": resources}
    ml_policy: dict[str, Any] = {"numNodes": num_nodes}
    ml_policy[policy] = {"numProcPerNode": nproc}
    labels = {"trainer.kubeflow.org/framework": framework} if framework else {}
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "mlPolicy": ml_policy,
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": "node",
                            "template": {
                                "spec": {"template": {"spec": {"containers": [container]}}}
                            },
                        }
                    ]
                }
            },
        },
    }


def runtime_yaml(name: str, **options: Any) -> str:
    """One runtime document as YAML text."""
    return yaml.safe_dump(runtime_doc(name, **options), sort_keys=False)


KUSTOMIZATION = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"


@dataclass
class Served:
    """What a loopback server serves, and the requests it received."""

    url: str
    # path -> body, or (status, body); a 3xx body is the Location.
    files: dict[str, bytes | tuple[int, bytes]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


class _FileHandler(BaseHTTPRequestHandler):
    served: Served

    def do_GET(self) -> None:
        self.served.requests.append({"path": self.path, "headers": dict(self.headers)})
        entry = self.served.files.get(urlsplit(self.path).path)
        status, body = (
            (404, b"not found")
            if entry is None
            else (entry if isinstance(entry, tuple) else (200, entry))
        )
        self.send_response(status)
        if 300 <= status < 400:  # the body is where to
            self.send_header("Location", body.decode())
            body = b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _GitHubHandler(BaseHTTPRequestHandler):
    """GET /repos/{owner}/{repo}/contents/{path}?ref=… as the GitHub REST API answers it."""

    served: Served
    repos: dict[tuple[str, str, str], dict[str, bytes]]  # (owner, repo, ref) -> path -> bytes
    default_branch = "main"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.served.requests.append({"path": self.path, "headers": dict(self.headers)})
        segments = parts.path.split("/", 5)
        if len(segments) < 5 or segments[1] != "repos" or segments[4] != "contents":
            return self._reply(404, {"message": "Not Found"})
        owner, repo = segments[2], segments[3]
        path = unquote(segments[5]).strip("/") if len(segments) > 5 else ""
        ref = parse_qs(parts.query).get("ref", [self.default_branch])[0]
        files = self.repos.get((owner, repo, ref))
        if files is None:
            return self._reply(404, {"message": "Not Found"})
        if path in files:
            if "raw" in self.headers.get("Accept", ""):
                return self._reply(200, files[path], raw=True)
            return self._reply(200, self._entry(path, files[path], with_content=True))
        prefix = f"{path}/" if path else ""
        children: dict[str, dict[str, Any]] = {}
        for file_path, content in files.items():
            if not file_path.startswith(prefix):
                continue
            name = file_path[len(prefix) :].split("/", 1)[0]
            child = prefix + name
            children[child] = (
                self._entry(child, content)
                if child == file_path
                else {"name": name, "path": child, "type": "dir", "size": 0}
            )
        if not children:
            return self._reply(404, {"message": "Not Found"})
        return self._reply(200, list(children.values()))

    @staticmethod
    def _entry(path: str, content: bytes, with_content: bool = False) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "type": "file",
            "size": len(content),
        }
        if with_content:
            entry["encoding"] = "base64"
            entry["content"] = base64.b64encode(content).decode()
        return entry

    def _reply(self, status: int, body: Any, raw: bool = False) -> None:
        data = body if raw else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None, **attrs: Any
) -> Iterator[Served]:
    """Run `handler` on 127.0.0.1 (HTTPS with `tls`) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    served = Served(url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (handler,), {"served": served, **attrs})  # type: ignore[assignment]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def file_server(tls: ssl.SSLContext | None = None):
    """A loopback server of `Served.files` (path → body or (status, body))."""
    return serve(_FileHandler, tls)


def github_server(repos: dict[tuple[str, str, str], dict[str, bytes]]):
    """A loopback server answering the GitHub contents API for `repos`."""
    return serve(_GitHubHandler, repos=repos)


def self_signed_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 signed by a fresh CA, and that CA's PEM file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prefect-kubeflow test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
