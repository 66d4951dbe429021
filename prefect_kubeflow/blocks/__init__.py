"""Prefect Blocks configuring prefect-kubeflow: saved, loaded and edited in the Prefect UI."""

from prefect_kubeflow.blocks.container import ContainerBackendConfig
from prefect_kubeflow.blocks.local import LocalProcessBackendConfig
from prefect_kubeflow.blocks.runtime_source import TrainingRuntimeSource

BackendConfig = LocalProcessBackendConfig | ContainerBackendConfig

# Backend configuration blocks by class name, as a supervising process receives them.
BACKEND_CONFIGS: dict[str, type[LocalProcessBackendConfig | ContainerBackendConfig]] = {
    cls.__name__: cls for cls in (LocalProcessBackendConfig, ContainerBackendConfig)
}

__all__ = [
    "BACKEND_CONFIGS",
    "BackendConfig",
    "ContainerBackendConfig",
    "LocalProcessBackendConfig",
    "TrainingRuntimeSource",
]
