"""Reaching a container engine: Docker or Podman, both through the Docker-compatible API (one
client library for both), with the engine's errors turned into typed ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from prefect_kubeflow.errors import (
    BackendError,
    EngineUnavailableError,
    ImageUnavailableError,
    NameConflictError,
)

ENGINES = ("docker", "podman")
API_TIMEOUT_SECONDS = 60
HOW_TO_START = {
    "docker": "start Docker (dockerd, or `systemctl start docker`)",
    "podman": (
        "start Podman's API service: `podman system service --time=0 unix:///run/podman/podman.sock`"
        " (rootless: `systemctl --user start podman.socket`)"
    ),
}


@dataclass(frozen=True)
class Engine:
    """A reachable engine: which one, where, and a client for it."""

    name: str
    url: str
    client: docker.DockerClient


def default_host(engine: str) -> str:
    """Where `engine` listens by default for this user."""
    if engine == "docker":
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if os.environ.get("CONTAINER_HOST"):
        return os.environ["CONTAINER_HOST"]
    if os.geteuid() == 0:
        return "unix:///run/podman/podman.sock"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return f"unix://{runtime_dir}/podman/podman.sock"


def connect(engine: str | None, host: str | None) -> Engine:
    """The engine named `engine` at `host` (defaults per engine); with no name, Docker if it
    answers, else Podman.

    Raises:
        EngineUnavailableError: none answers; the message names each URL tried and why.
    """
    if engine is not None and engine not in ENGINES:
        raise EngineUnavailableError(f"container_runtime {engine!r} is not one of {ENGINES}")
    candidates = [engine] if engine else list(ENGINES)
    failures = []
    for name in candidates:
        url = host or default_host(name)
        try:
            client = docker.DockerClient(base_url=url, timeout=API_TIMEOUT_SECONDS)
            client.ping()
            if engine is None and _is_podman(client):
                name = "podman"  # DOCKER_HOST or container_host naming Podman's socket
        except (DockerException, requests.RequestException) as exc:
            failures.append(f"{name} at {url}: {_reason(exc)}")
            continue
        return Engine(name, url, client)
    hints = "; or ".join(HOW_TO_START[name] for name in candidates)
    raise EngineUnavailableError(
        "no container engine answers (" + "; ".join(failures) + f"): {hints}, or set container_host"
    )


def _is_podman(client: docker.DockerClient) -> bool:
    components = client.version().get("Components") or []
    return any("podman" in str(c.get("Name", "")).lower() for c in components)


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn the engine's errors during `what` into typed, explained ones."""
    try:
        yield
    except ImageNotFound as exc:
        raise ImageUnavailableError(f"{what}: {_reason(exc)}") from None
    except APIError as exc:
        explanation = _reason(exc)
        # Docker answers a duplicate name with 409; Podman with 500 "... already in use".
        if (
            exc.status_code == 409
            or "already in use" in explanation
            or "already exists" in explanation
        ):
            raise NameConflictError(
                f"{what}: {explanation}; delete the job of that name, or remove what is left of it"
            ) from None
        raise BackendError(f"{what}: {explanation}") from None
    except (DockerException, requests.RequestException) as exc:
        raise EngineUnavailableError(
            f"{what}: the engine stopped answering ({_reason(exc)})"
        ) from None


def is_not_found(exc: Exception) -> bool:
    """Whether `exc` says the object is gone (Podman may answer 500 for that)."""
    return isinstance(exc, NotFound) or (
        isinstance(exc, APIError) and "no such" in _reason(exc).lower()
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc) or type(exc).__name__
