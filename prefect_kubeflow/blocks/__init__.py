"""Prefect Blocks configuring prefect-kubeflow: saved, loaded and edited in the Prefect UI."""

from prefect_kubeflow.blocks.base import TrainingBackendConfig
from prefect_kubeflow.blocks.container import ContainerBackendConfig
from prefect_kubeflow.blocks.kubernetes import KubernetesBackendConfig
from prefect_kubeflow.blocks.local import LocalProcessBackendConfig
from prefect_kubeflow.blocks.runtime_source import TrainingRuntimeSource

__all__ = [
    "ContainerBackendConfig",
    "KubernetesBackendConfig",
    "LocalProcessBackendConfig",
    "TrainingBackendConfig",
    "TrainingRuntimeSource",
]
