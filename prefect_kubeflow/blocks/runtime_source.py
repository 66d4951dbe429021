"""The runtime source block: where a team's training runtimes come from."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from prefect_kubeflow.runtimes import HttpSettings, RuntimeCatalog
from prefect_kubeflow.runtimes.catalog import DEFAULT_CACHE_TTL_SECONDS
from prefect_kubeflow.runtimes.parsing import MAX_DOCUMENT_BYTES


class TrainingRuntimeSource(Block):
    """Where training runtimes (Kubeflow `ClusterTrainingRuntime` YAML) come from.

    Sources are checked in order and the first definition of a name wins; the runtimes built
    into prefect-kubeflow come last. Remote results are cached; when a source cannot be
    fetched, its stale cached copy serves with a warning, and a source that fails never hides
    the ones after it.

    Example:
        Load saved sources and list their runtimes:
        ```python
        from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient
        from prefect_kubeflow.blocks import TrainingRuntimeSource

        source = TrainingRuntimeSource.load("BLOCK_NAME")
        client = TrainerClient(backend_config=LocalProcessBackendConfig(runtime_source=source))
        for runtime in client.list_runtimes():
            print(runtime.name, runtime.trainer.image, runtime.origin)
        ```
    """

    _block_type_name = "Kubeflow Training Runtime Source"
    _block_type_slug = "kubeflow-training-runtime-source"
    _description = (
        "Where Kubeflow training runtimes come from: GitHub repositories, HTTPS URLs, "
        "local files and folders."
    )
    _documentation_url = HttpUrl(
        "https://github.com/prefect-kubeflow/prefect-kubeflow#training-runtimes"
    )
    _logo_url = HttpUrl("https://avatars.githubusercontent.com/u/33164907")

    sources: list[str] = Field(
        default_factory=list,
        description=(
            "Runtime sources, highest priority first: github://owner/repo[/path][@ref], "
            "https://host/file.yaml (a runtime file or a YAML list of file URLs), "
            "file:///abs/path or /abs/path (a file or a folder of *.yaml)."
        ),
        examples=[["github://kubeflow/trainer", "/srv/runtimes/"]],
    )
    cache_ttl_seconds: float = Field(
        default=DEFAULT_CACHE_TTL_SECONDS,
        ge=0,
        description="Seconds a fetched remote source is reused before it is fetched again.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Folder of the runtime cache; defaults to the user's cache folder.",
        examples=["/var/cache/prefect-kubeflow/runtimes"],
    )
    github_api_url: str = Field(
        default="https://api.github.com",
        description="Base URL of the GitHub REST API (change it for GitHub Enterprise).",
        examples=["https://github.example.com/api/v3"],
    )
    github_token: SecretStr | None = Field(
        default=None,
        description="GitHub token for private repositories and a higher API rate limit.",
    )
    ca_bundle: str | None = Field(
        default=None,
        description=(
            "CA certificate file (PEM) to verify HTTPS servers with, for servers whose "
            "certificate the system does not trust."
        ),
        examples=["/etc/ssl/certs/internal-ca.pem"],
    )
    allow_http: bool = Field(
        default=False,
        description="Whether unencrypted http:// sources are allowed.",
    )
    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for a remote source to answer.",
    )
    max_document_bytes: int = Field(
        default=MAX_DOCUMENT_BYTES,
        gt=0,
        description="Largest runtime file read, in bytes; larger ones are refused.",
    )
    default_images: dict[str, str] = Field(
        default_factory=dict,
        description="Framework to container image, for runtimes that name no image.",
        examples=[{"torch": "registry.example.com/pytorch:2.7"}],
    )
    include_builtin_runtimes: bool = Field(
        default=True,
        description="Whether the runtimes built into prefect-kubeflow are listed after these.",
    )
    pin_images: bool = Field(
        default=True,
        description=(
            "Whether a remote source's runtime keeps the image it was first read with: a change "
            "upstream is then a warning naming both images, never a silent new environment."
        ),
    )

    def get_catalog(self, clock: Callable[[], float] = time.time) -> RuntimeCatalog:
        """A catalog reading these sources; `clock` drives cache freshness."""
        token = self.github_token.get_secret_value() if self.github_token else None
        return RuntimeCatalog(
            self.sources,
            cache_dir=Path(self.cache_dir) if self.cache_dir else None,
            cache_ttl_seconds=self.cache_ttl_seconds,
            http=HttpSettings(
                timeout_seconds=self.timeout_seconds,
                ca_bundle=self.ca_bundle,
                allow_http=self.allow_http,
                max_bytes=self.max_document_bytes,
                github_api_url=self.github_api_url,
                github_token=token,
            ),
            default_images=self.default_images,
            include_builtin=self.include_builtin_runtimes,
            pin_images=self.pin_images,
            clock=clock,
        )
