"""The Kubernetes backend's configuration block."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, HttpUrl, SecretStr, model_validator

from prefect_kubeflow.backends.kubernetes.settings import DEFAULT_NAMESPACE, KubernetesSettings
from prefect_kubeflow.blocks.base import TrainingBackendConfig
from prefect_kubeflow.errors import InvalidInputError


class KubernetesBackendConfig(TrainingBackendConfig):
    """Run TrainJobs on a Kubernetes cluster with Kubeflow Trainer installed: each job is a
    ``TrainJob`` (trainer.kubeflow.org/v1alpha1) in `namespace`, each node one of its pods.

    The cluster is the first of: `kubeconfig` (stored as a secret), `client_configuration`,
    `config_file`, the in-cluster service account (inside a pod), then ``$KUBECONFIG`` or
    ``~/.kube/config``. Runtimes are the cluster's ClusterTrainingRuntimes first.

    Example:
        Load a saved configuration and train on its cluster:
        ```python
        from prefect_kubeflow import KubernetesBackendConfig, TrainerClient

        config = KubernetesBackendConfig.load("BLOCK_NAME")
        client = TrainerClient(backend_config=config)
        ```
    """

    _block_type_name = "Kubeflow Kubernetes Backend"
    _block_type_slug = "kubeflow-kubernetes-backend"
    _description = "Runs Kubeflow TrainJobs on a Kubernetes cluster running Kubeflow Trainer."
    _documentation_url = HttpUrl(
        "https://github.com/prefect-kubeflow/prefect-kubeflow#kubernetes-backend"
    )
    _logo_url = HttpUrl("https://avatars.githubusercontent.com/u/33164907")
    backend_kind: ClassVar[str] = "kubernetes"

    namespace: str = Field(default=DEFAULT_NAMESPACE, description="The namespace of the TrainJobs.")
    config_file: str | None = Field(
        default=None,
        description="Path of a kubeconfig file; default: $KUBECONFIG or ~/.kube/config.",
    )
    context: str | None = Field(
        default=None, description="The kubeconfig context to use; default: its current one."
    )
    kubeconfig: SecretStr | None = Field(
        default=None,
        description="A whole kubeconfig (YAML), kept as a secret, instead of `config_file`.",
    )
    client_configuration: Any = Field(
        default=None,
        exclude=True,
        description=(
            "A kubernetes.client.Configuration, as the Kubeflow SDK takes; it is turned into "
            "the `kubeconfig` secret (TLS verification must stay on)."
        ),
    )
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a connection to the API."
    )
    read_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Seconds to wait for an API answer."
    )
    rendezvous_timeout_seconds: int = Field(
        default=300,
        gt=0,
        description="Seconds a node waits for all nodes to meet before it fails.",
    )
    delete_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Seconds delete_job waits for the cluster to remove a job's pods.",
    )

    @model_validator(mode="after")
    def _configuration_as_kubeconfig(self) -> KubernetesBackendConfig:
        """Keep a given client Configuration as a kubeconfig: the block then saves, and the
        process that watches the job connects the same way."""
        if self.client_configuration is not None:
            self.kubeconfig = SecretStr(yaml.safe_dump(kubeconfig_of(self.client_configuration)))
            self.client_configuration = None
        return self

    def backend_settings(self) -> KubernetesSettings:
        """The Kubernetes backend's settings; the kubeconfig unwrapped for it alone."""
        kubeconfig = None
        if self.kubeconfig is not None:
            try:
                kubeconfig = yaml.safe_load(self.kubeconfig.get_secret_value())
            except yaml.YAMLError as exc:
                raise InvalidInputError(f"kubeconfig is not YAML: {type(exc).__name__}") from None
            if not isinstance(kubeconfig, dict):
                raise InvalidInputError("kubeconfig must be a kubeconfig document (a mapping)")
        return KubernetesSettings(
            namespace=self.namespace,
            config_file=self.config_file,
            context=self.context,
            kubeconfig=kubeconfig,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            rendezvous_timeout=self.rendezvous_timeout_seconds,
            delete_timeout=self.delete_timeout_seconds,
        )


def kubeconfig_of(configuration: Any) -> dict[str, Any]:
    """A kubeconfig document equivalent to a `kubernetes.client.Configuration`.

    Raises:
        ValueError: it turns TLS verification off, or is not a Configuration.
    """
    if not hasattr(configuration, "host") or not hasattr(configuration, "verify_ssl"):
        raise ValueError(
            f"client_configuration must be a kubernetes.client.Configuration, got "
            f"{type(configuration).__name__}"
        )
    if not configuration.verify_ssl:
        raise ValueError(
            "client_configuration turns TLS verification off; give the cluster's CA "
            "(ssl_ca_cert) instead"
        )
    cluster: dict[str, Any] = {"server": configuration.host}
    user: dict[str, Any] = {}
    files = {
        "certificate-authority-data": (cluster, configuration.ssl_ca_cert),
        "client-certificate-data": (user, configuration.cert_file),
        "client-key-data": (user, configuration.key_file),
    }
    for key, (section, path) in files.items():
        if path:
            section[key] = base64.b64encode(Path(path).read_bytes()).decode()
    authorization = (configuration.api_key or {}).get("authorization") or (
        configuration.api_key or {}
    ).get("BearerToken")
    if authorization:
        user["token"] = str(authorization).removeprefix("Bearer ").strip()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "context", "context": {"cluster": "cluster", "user": "user"}}],
        "current-context": "context",
    }
