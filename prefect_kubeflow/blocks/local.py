"""The local process backend's configuration block."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, HttpUrl

from prefect_kubeflow.backends.local import LocalSettings
from prefect_kubeflow.blocks.base import TrainingBackendConfig


class LocalProcessBackendConfig(TrainingBackendConfig):
    """Run TrainJobs as torchrun processes on this machine, one process tree per node.

    Jobs are kept on disk under `jobs_dir`, so any Python process on the machine can list,
    follow and delete them. Venvs for `packages_to_install` are cached under `venv_cache_dir`.

    Example:
        Load a saved configuration and train with it:
        ```python
        from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient

        config = LocalProcessBackendConfig.load("BLOCK_NAME")
        client = TrainerClient(backend_config=config)
        ```
    """

    _block_type_name = "Kubeflow Local Process Backend"
    _block_type_slug = "kubeflow-local-process-backend"
    _description = "Runs Kubeflow TrainJobs as local torchrun processes, one per training node."
    _documentation_url = HttpUrl("https://github.com/prefect-kubeflow/prefect-kubeflow#readme")
    _logo_url = HttpUrl("https://avatars.githubusercontent.com/u/33164907")
    backend_kind: ClassVar[str] = "local"

    jobs_dir: str | None = Field(
        default=None,
        description=(
            "Folder holding one subfolder per TrainJob (record, function, node logs); "
            "defaults to the user's data folder."
        ),
        examples=["/srv/trainjobs"],
    )
    venv_cache_dir: str | None = Field(
        default=None,
        description=(
            "Folder caching one venv per set of packages_to_install; defaults to the user's "
            "cache folder."
        ),
        examples=["/var/cache/prefect-kubeflow/venvs"],
    )
    stop_grace_period_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a node gets to exit after SIGTERM before it is killed.",
    )

    def backend_settings(self) -> LocalSettings:
        """The local backend's settings; unset folders get the user's defaults."""
        defaults = LocalSettings()
        return LocalSettings(
            jobs_dir=Path(self.jobs_dir) if self.jobs_dir else defaults.jobs_dir,
            venv_dir=Path(self.venv_cache_dir) if self.venv_cache_dir else defaults.venv_dir,
            grace_period=self.stop_grace_period_seconds,
        )
