"""The Kubernetes backend's settings: which cluster, which namespace, how long calls may take."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class KubernetesSettings:
    """How the Kubernetes backend connects; `kubeconfig` is unwrapped only here, for the call.

    The cluster is the first of: `kubeconfig` (a kubeconfig's content), `config_file`, the
    in-cluster service account (inside a pod), then ``$KUBECONFIG`` or ``~/.kube/config``.
    """

    namespace: str = DEFAULT_NAMESPACE
    config_file: str | None = None
    context: str | None = None
    kubeconfig: Mapping[str, Any] | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # A follow stream silent this long is re-opened (from where it stopped): a connection that
    # died without a reset never hangs a watcher.
    log_idle_timeout: float = 300.0
    poll_interval: float = 0.5
    # How long a node waits for the others at the rendezvous (pods start at different times).
    rendezvous_timeout: int = 300
    # How long `delete` waits for the cluster to remove the job's pods and the TrainJob.
    delete_timeout: float = 120.0
