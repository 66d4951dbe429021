"""Job options for ``TrainerClient.train(options=[...])``, spelled as the Kubeflow SDK's.

`Name`, `Labels` and `Annotations` work on every backend. `RuntimePatch`, `TrainerCommand` and
`TrainerArgs` shape the TrainJob object itself, so only the Kubernetes backend honours them;
elsewhere they are refused, naming the option and the backend. The Kubeflow SDK's own option
objects of these names are accepted too (read by class name and fields).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect_kubeflow import constants
from prefect_kubeflow.errors import InvalidInputError, UnsupportedOptionError

_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Keys of these prefixes are the backends' own: a user's would overwrite a job's record.
RESERVED_PREFIXES = (constants.LABEL_PREFIX, constants.GROUP + "/")
RESERVED_MANAGER = constants.LABEL_PREFIX + "backend"  # the backend's own runtime patch
# A node's container name adds "-node-<i>" and its network "-net": room for 999 nodes.
MAX_NAME_LENGTH = 53


@dataclass
class Name:
    """The TrainJob's name instead of a random one: lowercase letters, digits and ``-``,
    starting with a letter (an RFC 1035 label, as Kubernetes requires), at most 53 characters.
    A job of that name already existing is a `NameConflictError`."""

    name: str


@dataclass
class Labels:
    """Labels on the TrainJob: container labels on Docker/Podman, the TrainJob's metadata on
    Kubernetes, and a filter for ``list_jobs(labels=...)`` everywhere."""

    labels: dict[str, str]


@dataclass
class Annotations:
    """Annotations on the TrainJob, shown by ``get_job`` (on Kubernetes, the TrainJob's
    metadata)."""

    annotations: dict[str, str]


@dataclass
class RuntimePatch:
    """A ``.spec.runtimePatches`` entry of the TrainJob (Kubernetes only): patches of the
    runtime's JobSet and pod templates, as the Trainer API defines them."""

    training_runtime_spec: dict[str, Any]
    manager: str = "trainer.kubeflow.org/kubeflow-sdk"


@dataclass
class TrainerCommand:
    """The trainer container's command (``.spec.trainer.command``; Kubernetes only, with a
    `CustomTrainerContainer`)."""

    command: list[str]


@dataclass
class TrainerArgs:
    """The trainer container's arguments (``.spec.trainer.args``; Kubernetes only, with a
    `CustomTrainerContainer`)."""

    args: list[str]


# The options only Kubernetes honours: they shape the TrainJob object.
KUBERNETES_ONLY = frozenset({"RuntimePatch", "TrainerCommand", "TrainerArgs"})
COMMON = frozenset({"Name", "Labels", "Annotations"})
_FIELDS = {
    "Name": "name",
    "Labels": "labels",
    "Annotations": "annotations",
    "RuntimePatch": "training_runtime_spec",
    "TrainerCommand": "command",
    "TrainerArgs": "args",
}


@dataclass(frozen=True)
class JobOptions:
    """What a ``train(options=...)`` list asks for, checked."""

    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_patches: list[dict[str, Any]] = field(default_factory=list)
    trainer_command: list[str] | None = None
    trainer_args: list[str] | None = None


def resolve_options(
    options: Sequence[Any] | None, supported: frozenset[str], backend: str
) -> JobOptions:
    """Check `options` against what the backend `supported` and fold them into one
    `JobOptions`.

    Raises:
        UnsupportedOptionError: an option the backend cannot honour (named, with the backend).
        InvalidInputError: an unknown option, or a bad value in one.
    """
    if options is None:
        return JobOptions()
    if not isinstance(options, (list, tuple)):
        raise InvalidInputError(f"options must be a list of job options, got {options!r}")
    values: dict[str, Any] = {}
    for option in options:
        kind = type(option).__name__
        if kind not in _FIELDS:
            raise InvalidInputError(
                f"option {option!r} is not a job option; allowed: {', '.join(sorted(_FIELDS))}"
            )
        if kind not in supported:
            raise UnsupportedOptionError(
                f"option {kind} is not supported by the {backend}; it supports "
                f"{', '.join(sorted(supported))}"
                + (" (only the Kubernetes backend honours it)" if kind in KUBERNETES_ONLY else "")
            )
        if kind in values and kind not in ("Labels", "Annotations", "RuntimePatch"):
            raise InvalidInputError(f"option {kind} is given twice")
        value = getattr(option, _FIELDS[kind])
        if kind in ("Labels", "Annotations"):
            values[kind] = {**values.get(kind, {}), **_check_metadata(kind, value)}
        elif kind == "RuntimePatch":
            patch = _runtime_patch(option)
            if patch["manager"] in {p["manager"] for p in values.get(kind, [])}:
                raise InvalidInputError(
                    f"two RuntimePatch options share the manager {patch['manager']!r}; a "
                    "TrainJob keeps one patch per manager: merge them, or name another manager"
                )
            values.setdefault(kind, []).append(patch)
        else:
            values[kind] = value
    return JobOptions(
        name=check_job_name(values["Name"]) if "Name" in values else None,
        labels=values.get("Labels", {}),
        annotations=values.get("Annotations", {}),
        runtime_patches=values.get("RuntimePatch", []),
        trainer_command=_argv("TrainerCommand", values.get("TrainerCommand")),
        trainer_args=_argv("TrainerArgs", values.get("TrainerArgs")),
    )


def check_job_name(name: Any) -> str:
    """`name` if it can name a TrainJob on every backend.

    Raises:
        InvalidInputError: it cannot, saying what is allowed.
    """
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _JOB_NAME.match(name):
        raise InvalidInputError(
            f"job name {name!r} is invalid: use lowercase letters, digits and '-', starting with "
            f"a letter and ending with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return name


def _check_metadata(kind: str, value: Any) -> dict[str, str]:
    """Labels or annotations as Kubernetes accepts them, none with a reserved prefix."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{kind} must be a dict of str to str, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not _metadata_key(key):
            raise InvalidInputError(
                f"{kind} key {key!r} is invalid: an optional DNS prefix and '/', then up to 63 "
                "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        if key.startswith(RESERVED_PREFIXES):
            raise InvalidInputError(
                f"{kind} key {key!r} is reserved: keys under {' and '.join(RESERVED_PREFIXES)} "
                "belong to the backends"
            )
        if not isinstance(item, str):
            raise InvalidInputError(f"{kind}[{key!r}] must be a str, got {item!r}")
        if kind == "Labels" and item and not _LABEL_NAME.match(item):
            raise InvalidInputError(
                f"label value {item!r} of {key!r} is invalid: up to 63 letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit"
            )
    return dict(value)


def _metadata_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(_LABEL_NAME.match(name)) and (not prefix or bool(_DNS_SUBDOMAIN.match(prefix)))


def _runtime_patch(option: Any) -> dict[str, Any]:
    spec = option.training_runtime_spec
    if option.manager == RESERVED_MANAGER:
        raise InvalidInputError(
            f"RuntimePatch manager {RESERVED_MANAGER!r} is the Kubernetes backend's own; name "
            "your tool as the manager"
        )
    if not isinstance(spec, dict):  # the Kubeflow SDK's dataclasses
        raise InvalidInputError(
            f"RuntimePatch.training_runtime_spec must be a dict (the Trainer API's "
            f"trainingRuntimeSpec), got {spec!r}"
        )
    return {"manager": str(option.manager), "trainingRuntimeSpec": spec}


def _argv(kind: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
        raise InvalidInputError(f"{kind} must be a list of str, got {value!r}")
    return list(value)
