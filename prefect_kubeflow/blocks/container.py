"""The container backend's configuration block."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, HttpUrl, SecretStr

from prefect_kubeflow.backends.container.specs import ContainerSettings
from prefect_kubeflow.blocks.base import TrainingBackendConfig


class ContainerBackendConfig(TrainingBackendConfig):
    """Run TrainJobs in Docker or Podman containers on this machine: one network per job and
    one container per node, each running torchrun.

    Jobs are found through the engine by their labels, so any process sees the same jobs. The
    image comes from `image`, else from the runtime.

    Example:
        Load a saved configuration and train with it:
        ```python
        from prefect_kubeflow import ContainerBackendConfig, TrainerClient

        config = ContainerBackendConfig.load("BLOCK_NAME")
        client = TrainerClient(backend_config=config)
        ```
    """

    _block_type_name = "Kubeflow Container Backend"
    _block_type_slug = "kubeflow-container-backend"
    _description = "Runs Kubeflow TrainJobs in Docker or Podman containers, one per node."
    _documentation_url = HttpUrl(
        "https://github.com/prefect-kubeflow/prefect-kubeflow#container-backend"
    )
    _logo_url = HttpUrl("https://avatars.githubusercontent.com/u/33164907")
    backend_kind: ClassVar[str] = "container"

    container_runtime: Literal["docker", "podman"] | None = Field(
        default=None,
        description="The container engine; None picks Docker if it answers, else Podman.",
    )
    container_host: str | None = Field(
        default=None,
        description=(
            "The engine's API socket URL; defaults to DOCKER_HOST or /var/run/docker.sock for "
            "Docker, and /run/podman/podman.sock (root) or "
            "$XDG_RUNTIME_DIR/podman/podman.sock (rootless) for Podman."
        ),
        examples=["unix:///run/user/1000/podman/podman.sock"],
    )
    image: str | None = Field(
        default=None,
        description="Image of every node, instead of the runtime's image.",
        examples=["registry.example.com/team/pytorch:2.7"],
    )
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        default="IfNotPresent",
        description="When the image is pulled: if it is not present, always, or never.",
    )
    registry_username: str | None = Field(
        default=None, description="User name for pulling the image from its registry."
    )
    registry_password: SecretStr | None = Field(
        default=None, description="Password or token for pulling the image from its registry."
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Extra bind mounts of every node, as host_path:container_path[:ro].",
        examples=[["/data/imagenet:/data:ro"]],
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of every node (the trainer's env overrides it).",
    )
    network_driver: str = Field(
        default="bridge", description="Driver of the network each job gets."
    )
    shm_size: str | None = Field(
        default=None,
        description="Size of /dev/shm of every node (PyTorch data loaders use it).",
        examples=["2g"],
    )
    jobs_dir: str | None = Field(
        default=None,
        description=(
            "Host folder of one subfolder per job (the shipped function, node logs), mounted "
            "into its containers; defaults to the user's data folder."
        ),
    )
    stop_grace_period_seconds: float = Field(
        default=10.0, ge=0, description="Seconds a node gets to exit after SIGTERM."
    )
    rendezvous_timeout_seconds: int = Field(
        default=120,
        gt=0,
        description=(
            "Seconds a node waits for all nodes to meet at node 0 before it fails (and with "
            "it the job)."
        ),
    )

    def backend_settings(self) -> ContainerSettings:
        """The container backend's settings; the registry password unwrapped for it alone."""
        password = self.registry_password.get_secret_value() if self.registry_password else None
        defaults = ContainerSettings()
        return ContainerSettings(
            container_runtime=self.container_runtime,
            container_host=self.container_host,
            image=self.image,
            pull_policy=self.pull_policy,
            registry_username=self.registry_username,
            registry_password=password,
            volumes=tuple(self.volumes),
            env=dict(self.env),
            network_driver=self.network_driver,
            shm_size=self.shm_size,
            jobs_dir=Path(self.jobs_dir) if self.jobs_dir else defaults.jobs_dir,
            grace_period=self.stop_grace_period_seconds,
            rendezvous_timeout=self.rendezvous_timeout_seconds,
        )
