"""prefect-kubeflow: run Kubeflow Trainer TrainJobs through Prefect.

Names are imported on first use, so a process can use the light parts (a local job's node
host, a node's keeper) without paying for Prefect's import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_kubeflow.blocks import (
        ContainerBackendConfig,
        KubernetesBackendConfig,
        LocalProcessBackendConfig,
        TrainingBackendConfig,
        TrainingRuntimeSource,
    )
    from prefect_kubeflow.client import TrainerClient
    from prefect_kubeflow.progress import TrainerStatus, update_trainjob_status
    from prefect_kubeflow.task_runners import TrainJobTaskRunner
    from prefect_kubeflow.types import (
        CustomTrainer,
        CustomTrainerContainer,
        Event,
        Runtime,
        RuntimeTrainer,
        Step,
        TrainerType,
        TrainJob,
    )


_EXPORTS = {
    # Read from the installed metadata (~20 ms): only when asked, not in every node's keeper.
    "__version__": "prefect_kubeflow._version",
    "TrainerClient": "prefect_kubeflow.client",
    "TrainJobTaskRunner": "prefect_kubeflow.task_runners",
    "LocalProcessBackendConfig": "prefect_kubeflow.blocks",
    "ContainerBackendConfig": "prefect_kubeflow.blocks",
    "KubernetesBackendConfig": "prefect_kubeflow.blocks",
    "TrainingBackendConfig": "prefect_kubeflow.blocks",
    "TrainingRuntimeSource": "prefect_kubeflow.blocks",
    "CustomTrainer": "prefect_kubeflow.types",
    "CustomTrainerContainer": "prefect_kubeflow.types",
    "Event": "prefect_kubeflow.types",
    "Runtime": "prefect_kubeflow.types",
    "RuntimeTrainer": "prefect_kubeflow.types",
    "Step": "prefect_kubeflow.types",
    "TrainerType": "prefect_kubeflow.types",
    "TrainJob": "prefect_kubeflow.types",
    "TrainerStatus": "prefect_kubeflow.progress",
    "update_trainjob_status": "prefect_kubeflow.progress",
}
__all__ = [
    "ContainerBackendConfig",
    "CustomTrainer",
    "CustomTrainerContainer",
    "Event",
    "KubernetesBackendConfig",
    "LocalProcessBackendConfig",
    "Runtime",
    "RuntimeTrainer",
    "Step",
    "TrainJob",
    "TrainJobTaskRunner",
    "TrainerClient",
    "TrainerStatus",
    "TrainerType",
    "TrainingBackendConfig",
    "TrainingRuntimeSource",
    "update_trainjob_status",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prefect_kubeflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
