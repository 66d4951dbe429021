"""The backend registry: a kind of backend, and where its implementation lives.

A backend module is imported only when a job uses it, so ``import prefect_kubeflow`` imports
neither the Docker nor the Kubernetes client. Each configuration block hands its kind and a
frozen settings object to `load_backend` (``config.get_backend()``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefect_kubeflow.errors import InvalidInputError

if TYPE_CHECKING:
    from prefect_kubeflow.backends.base import Backend

# kind -> "module:class"; a new backend is one line here.
BACKENDS: dict[str, str] = {
    "local": "prefect_kubeflow.backends.local:LocalProcessBackend",
    "container": "prefect_kubeflow.backends.container.backend:ContainerBackend",
    "kubernetes": "prefect_kubeflow.backends.kubernetes.backend:KubernetesBackend",
}


def load_backend(kind: str, settings: Any) -> Backend:
    """The backend of `kind`, built from its frozen `settings`.

    Raises:
        InvalidInputError: no backend of that kind is registered.
    """
    if kind not in BACKENDS:
        raise InvalidInputError(f"backend kind {kind!r} is not one of {sorted(BACKENDS)}")
    module, _, cls = BACKENDS[kind].partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)(settings)
    return backend
