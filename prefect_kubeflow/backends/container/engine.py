"""Talking to a container engine: Docker or Podman, both through the Docker-compatible API (one
client library for both): connecting, making an image present, running a node's container, and
the engine's errors turned into typed ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.images import Image
from docker.types import DeviceRequest

from prefect_kubeflow.backends.container.specs import ENGINES, PYTHON, ContainerSettings, NodeSpec
from prefect_kubeflow.errors import (
    BackendError,
    EngineUnavailableError,
    ImageUnavailableError,
    InvalidInputError,
    NameConflictError,
)

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
        InvalidInputError: `engine` is neither "docker" nor "podman".
        EngineUnavailableError: none answers; the message names each URL tried and why.
    """
    if engine is not None and engine not in ENGINES:
        raise InvalidInputError(f"container_runtime {engine!r} is not one of {ENGINES} or None")
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
        raise ImageUnavailableError(f"{what}: {_reason(exc)}") from exc
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
            ) from exc
        raise BackendError(f"{what}: {explanation}") from exc
    except (DockerException, requests.RequestException) as exc:
        raise EngineUnavailableError(
            f"{what}: the engine stopped answering ({_reason(exc)})"
        ) from exc


def is_not_found(exc: Exception) -> bool:
    """Whether `exc` says the object is gone or going: Podman may answer 500 for that, and
    Docker 409 while another call removes it."""
    reason = _reason(exc).lower()
    return isinstance(exc, NotFound) or (
        isinstance(exc, APIError) and ("no such" in reason or "already in progress" in reason)
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class ImageInfo:
    """What the backend reads of an image: its environment, its command (``Entrypoint`` then
    ``Cmd``: what a `CustomTrainerContainer` node runs) and its digest (the registry's where
    the engine knows one, else the image's content-addressed id)."""

    env: dict[str, str]
    command: list[str]
    digest: str | None


def ensure_image(engine: Engine, image: str, settings: ContainerSettings) -> ImageInfo:
    """Make `image` present as `pull_policy` says, before anything is created; what it is."""
    if not image:
        raise ImageUnavailableError(
            "no image: the runtime names none; set ContainerBackendConfig.image"
        )
    policy = settings.pull_policy
    found: Image | None = None
    with engine_errors(f"inspecting image {image}"), suppress(ImageNotFound):
        found = engine.client.images.get(image)
    if found is not None and policy != "Always":
        return _image_info(found)
    if policy == "Never":
        raise ImageUnavailableError(
            f"image {image!r} is not present in {engine.name} and pull_policy is Never; "
            f"build or load it (`{engine.name} build`/`{engine.name} load`), "
            "or allow pulling with pull_policy IfNotPresent"
        )
    auth = None
    if settings.registry_username:
        auth = {
            "username": settings.registry_username,
            "password": settings.registry_password or "",
        }
    try:
        pulled = engine.client.images.pull(image, auth_config=auth)
    except (DockerException, requests.RequestException) as exc:
        reason = getattr(exc, "explanation", None) or str(exc)
        raise ImageUnavailableError(
            f"image {image!r} could not be pulled ({reason}); check the name and the "
            f"registry's credentials, or build or load it into {engine.name} "
            "(e.g. scripts/build-test-image.sh) and set pull_policy IfNotPresent"
        ) from None  # the registry's error may echo the credentials
    return _image_info(pulled if isinstance(pulled, Image) else pulled[0])


def run_node(engine: Engine, node: NodeSpec) -> None:
    """Create and start one node's container."""
    options: dict[str, object] = {}
    if node.nano_cpus is not None:
        options["nano_cpus"] = node.nano_cpus
    if node.mem_limit is not None:
        options["mem_limit"] = node.mem_limit
    if node.shm_size:
        options["shm_size"] = node.shm_size
    if node.gpu_driver == "cdi":
        options["device_requests"] = [DeviceRequest(driver="cdi", device_ids=node.gpu_ids)]
    elif node.gpu_driver:
        options["device_requests"] = [
            DeviceRequest(device_ids=node.gpu_ids, capabilities=[["gpu"]])
        ]
    # The low-level calls: the high-level create inspects each new container once more,
    # a round trip that Podman answers slowly while the other nodes start.
    api = engine.client.api
    with engine_errors(f"creating container {node.name}"):
        created = api.create_container(
            node.image,
            # The keeper is the entrypoint: an image's own (a CustomTrainerContainer's
            # ``torchrun``) would take the keeper's argv as its arguments.
            entrypoint=node.command[:1],
            command=node.command[1:],
            name=node.name,
            hostname=node.name,
            labels=node.labels,
            environment=node.env,
            working_dir=node.working_dir,
            stop_signal="SIGTERM",  # what the keeper handles, whatever the image says
            host_config=api.create_host_config(
                binds=node.binds, network_mode=node.network, **options
            ),
            networking_config=api.create_networking_config(
                {node.network: api.create_endpoint_config()}
            ),
        )
    try:
        with engine_errors(f"starting container {node.name}"):
            api.start(created["Id"])
    except BackendError as exc:
        if PYTHON in str(exc) and "not found" in str(exc):
            raise BackendError(
                f"{exc}; the image must provide {PYTHON} (3.10 or newer) and torch"
            ) from exc
        raise


def _image_info(image: Image) -> ImageInfo:
    """The environment, command and digest of `image`."""
    config = image.attrs.get("Config") or {}
    pairs = config.get("Env") or []
    digests = image.attrs.get("RepoDigests") or []
    return ImageInfo(
        env=dict(pair.split("=", 1) for pair in pairs if "=" in pair),
        command=[*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])],
        digest=str(digests[0]).rpartition("@")[2] if digests else image.id,
    )
