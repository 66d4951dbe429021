"""Backends, looked up by the name of their configuration block; each imported only when used.

Backends take the block's fields as a plain mapping, so a process can run a backend without
importing Prefect (the detached supervisor starts nodes before it does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefect_kubeflow.errors import InvalidInputError

if TYPE_CHECKING:
    from prefect_kubeflow.backends.base import Backend

SUPPORTED = ("LocalProcessBackendConfig", "ContainerBackendConfig")


def backend_for(kind: str, settings: Mapping[str, Any]) -> Backend:
    """The backend configured by a `kind` block whose fields are `settings`."""
    if kind == "LocalProcessBackendConfig":
        from prefect_kubeflow.backends.local import LocalProcessBackend

        return LocalProcessBackend.from_settings(settings)
    if kind == "ContainerBackendConfig":
        from prefect_kubeflow.backends.container.backend import ContainerBackend

        return ContainerBackend.from_settings(settings)
    raise InvalidInputError(f"backend config {kind!r} is not supported; use one of {SUPPORTED}")
