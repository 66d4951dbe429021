"""Every error this library raises, under one base.

Each also subclasses the builtin that Kubeflow SDK users already catch::

    PrefectKubeflowError
    ├── InvalidInputError (ValueError)      a bad argument; nothing was created
    │   ├── InvalidFunctionError            `func` cannot be shipped as source
    │   ├── InvalidFuncArgsError            `func_args` not JSON-able / not matching `func`
    │   ├── InvalidPackageSpecError         a `packages_to_install` entry pip would reject
    │   ├── InvalidStatusError              a status outside the four TrainJob statuses
    │   ├── InvalidRuntimeError             a runtime this backend cannot train on
    │   └── UnsupportedOptionError          a job option or trainer this backend cannot honour
    ├── NotFoundError (ValueError)
    │   ├── JobNotFoundError
    │   ├── RuntimeNotFoundError
    │   └── StepNotFoundError
    ├── RuntimeSourceError                  a runtime source failed (`.source` names it)
    │   ├── InvalidRuntimeSourceError (ValueError)  unknown scheme, relative path, http://
    │   ├── RuntimeParseError (ValueError)  malformed, oversized or wrong-kind YAML
    │   └── RuntimeFetchError (RuntimeError)  unreachable, TLS refused, HTTP error status
    ├── JobFailedError (RuntimeError)       the TrainJob reached Failed
    ├── JobTimeoutError (TimeoutError)      waiting for a status took too long
    └── BackendError (RuntimeError)         the backend could not do what was asked
        ├── EngineUnavailableError          no Docker/Podman engine answers
        ├── ImageUnavailableError           the image is missing and cannot be pulled
        ├── NameConflictError               a container, network or TrainJob of that name exists
        ├── ClusterUnavailableError         the Kubernetes API is unreachable or not trusted
        ├── ClusterPermissionError (PermissionError)  RBAC forbids a call (verb and resource named)
        ├── NamespaceNotFoundError          the configured namespace does not exist
        └── TrainerNotInstalledError        the cluster has no Kubeflow Trainer CRDs
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BackendError",
    "ClusterPermissionError",
    "ClusterUnavailableError",
    "EngineUnavailableError",
    "ImageUnavailableError",
    "InvalidFuncArgsError",
    "InvalidFunctionError",
    "InvalidInputError",
    "InvalidPackageSpecError",
    "InvalidRuntimeError",
    "InvalidRuntimeSourceError",
    "InvalidStatusError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NameConflictError",
    "NamespaceNotFoundError",
    "NotFoundError",
    "PrefectKubeflowError",
    "RuntimeFetchError",
    "RuntimeNotFoundError",
    "RuntimeParseError",
    "RuntimeSourceError",
    "RuntimeSourceWarning",
    "StepNotFoundError",
    "TrainerNotInstalledError",
    "UnsupportedOptionError",
]


class PrefectKubeflowError(Exception):
    """Base of every error raised by prefect-kubeflow."""


class InvalidInputError(PrefectKubeflowError, ValueError):
    """An argument is invalid; the message names the value and what is allowed."""


class InvalidFunctionError(InvalidInputError):
    """The training function cannot be shipped to the nodes as source."""


class InvalidFuncArgsError(InvalidInputError):
    """`func_args` is not JSON-serialisable or does not match the function's signature."""


class InvalidPackageSpecError(InvalidInputError):
    """An entry of `packages_to_install` is not a valid requirement specifier."""


class InvalidStatusError(InvalidInputError):
    """A status outside Created, Running, Complete and Failed."""


class InvalidRuntimeError(InvalidInputError):
    """The runtime exists but this backend cannot train the given trainer on it."""


class UnsupportedOptionError(InvalidInputError):
    """A job option or trainer kind the backend cannot honour (both named in the message)."""


class RuntimeSourceError(PrefectKubeflowError):
    """A runtime source could not be used; the message starts with the source."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"runtime source {source!r}: {reason}")


class InvalidRuntimeSourceError(RuntimeSourceError, InvalidInputError):
    """The source is not one of the accepted forms (github://, https://, file://, /abs)."""


class RuntimeParseError(RuntimeSourceError, InvalidInputError):
    """A runtime document is malformed, oversized or of the wrong kind; the message names the
    document and the field."""


class RuntimeFetchError(RuntimeSourceError, RuntimeError):
    """The source could not be read: unreachable host, refused certificate, HTTP error
    (`status` holds the HTTP status when there was one)."""

    def __init__(self, source: str, reason: str, status: int | None = None) -> None:
        super().__init__(source, reason)
        self.status = status


class NotFoundError(PrefectKubeflowError, ValueError):
    """A named object does not exist."""

    kind = "object"

    def __init__(self, name: str, known: Iterable[str] = (), hint: str = "") -> None:
        self.name = name
        known = sorted(known)
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        listed = f"; known: {shown}" if known else ""
        super().__init__(f"{self.kind} {name!r} not found{listed}{hint}")


class JobNotFoundError(NotFoundError):
    """No TrainJob with this name exists on the backend."""

    kind = "TrainJob"


class RuntimeNotFoundError(NotFoundError):
    """No runtime with this name is known."""

    kind = "runtime"


class StepNotFoundError(NotFoundError):
    """The TrainJob has no step (node) with this name."""

    kind = "step"


class JobFailedError(PrefectKubeflowError, RuntimeError):
    """The TrainJob failed; the message carries the failing node's last error lines."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"TrainJob {name!r} failed: {reason}")


class JobResultError(PrefectKubeflowError, RuntimeError):
    """A job's result cannot be had: it has not completed, or its value cannot be read here."""


class JobTimeoutError(PrefectKubeflowError, TimeoutError):
    """The TrainJob did not reach the wanted status in time."""


class BackendError(PrefectKubeflowError, RuntimeError):
    """The backend could not carry out the request."""


class EngineUnavailableError(BackendError):
    """No container engine answers; the message says which were tried and how to start one."""


class ImageUnavailableError(BackendError):
    """The image is not present and cannot (or may not) be pulled."""


class NameConflictError(BackendError):
    """A container, network or TrainJob with the job's name already exists."""


class ClusterUnavailableError(EngineUnavailableError):
    """The Kubernetes API does not answer, or its certificate is not trusted."""


class ClusterPermissionError(BackendError, PermissionError):
    """The cluster's RBAC forbids a call; the message names the verb, resource and namespace."""


class NamespaceNotFoundError(BackendError):
    """The namespace the backend is configured with does not exist on the cluster."""


class TrainerNotInstalledError(BackendError):
    """The cluster does not serve the Kubeflow Trainer API (its CRDs are not installed)."""


class RuntimeSourceWarning(UserWarning):
    """A runtime source failed, or is served from a stale cache; the other sources still serve.

    Filter it like any warning: ``warnings.simplefilter("error", RuntimeSourceWarning)`` makes
    every failing source an error.
    """
