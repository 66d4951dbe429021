"""What every backend configuration block has: a runtime source, clean-up after the job, and
the backend it builds (`get_backend()`, as prefect-docker's `DockerHost.get_client()`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from prefect_kubeflow.backends import load_backend
from prefect_kubeflow.backends.base import Backend
from prefect_kubeflow.blocks.runtime_source import TrainingRuntimeSource


class TrainingBackendConfig(Block, ABC):
    """Where TrainJob nodes run. A block of this kind builds its backend on demand and keeps
    no live handle, so it can be saved, loaded and passed to a flow run."""

    backend_kind: ClassVar[str]

    runtime_source: TrainingRuntimeSource | None = Field(
        default=None,
        description="Where runtimes come from besides the built-in ones.",
    )
    auto_remove: bool = Field(
        default=False,
        description=(
            "Whether a job's records, logs and everything it ran on are removed as soon as it "
            "has ended and its logs are forwarded (it then no longer lists)."
        ),
    )

    @abstractmethod
    def backend_settings(self) -> Any:
        """The frozen settings the backend takes (secrets unwrapped, for the backend only)."""

    def get_backend(self) -> Backend:
        """A new backend configured by this block."""
        return load_backend(self.backend_kind, self.backend_settings())
