"""The local process backend's configuration block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl

from prefect_kubeflow.blocks.runtime_source import TrainingRuntimeSource


class LocalProcessBackendConfig(Block):
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
    runtime_source: TrainingRuntimeSource | None = Field(
        default=None,
        description=(
            "Where runtimes come from besides the built-in ones; their images are not used by "
            "this backend, their nodes, processes per node, environment and resources are."
        ),
    )
