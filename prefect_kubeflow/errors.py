"""Every error this library raises, under one base.

Each also subclasses the builtin that Kubeflow SDK users already catch::

    PrefectKubeflowError
    ├── InvalidInputError (ValueError)      a bad argument; nothing was created
    │   ├── InvalidFunctionError            `func` cannot be shipped as source
    │   ├── InvalidFuncArgsError            `func_args` not JSON-able / not matching `func`
    │   ├── InvalidPackageSpecError         a `packages_to_install` entry pip would reject
    │   └── InvalidStatusError              a status outside the four TrainJob statuses
    ├── NotFoundError (ValueError)
    │   ├── JobNotFoundError
    │   ├── RuntimeNotFoundError
    │   └── StepNotFoundError
    ├── JobFailedError (RuntimeError)       the TrainJob reached Failed
    ├── JobTimeoutError (TimeoutError)      waiting for a status took too long
    └── BackendError (RuntimeError)         the backend could not do what was asked
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BackendError",
    "InvalidFuncArgsError",
    "InvalidFunctionError",
    "InvalidInputError",
    "InvalidPackageSpecError",
    "InvalidStatusError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NotFoundError",
    "PrefectKubeflowError",
    "RuntimeNotFoundError",
    "StepNotFoundError",
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


class NotFoundError(PrefectKubeflowError, ValueError):
    """A named object does not exist."""

    kind = "object"

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        known = sorted(known)
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        hint = f"; known: {shown}" if known else ""
        super().__init__(f"{self.kind} {name!r} not found{hint}")


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


class JobTimeoutError(PrefectKubeflowError, TimeoutError):
    """The TrainJob did not reach the wanted status in time."""


class BackendError(PrefectKubeflowError, RuntimeError):
    """The backend could not carry out the request."""
