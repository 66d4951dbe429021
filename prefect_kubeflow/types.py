"""Public types, shaped like ``kubeflow.trainer.types``.

Field names and defaults match the Kubeflow SDK; construction validates the values so a bad
argument fails at once, naming the value and what is allowed.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
import types as pytypes
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from prefect_kubeflow import constants
from prefect_kubeflow.errors import (
    InvalidFuncArgsError,
    InvalidFunctionError,
    InvalidInputError,
    InvalidPackageSpecError,
)
from prefect_kubeflow.progress import TrainerStatus
from prefect_kubeflow.resources import memory_bytes, quantity

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_num_nodes(num_nodes: Any) -> None:
    if num_nodes is None:
        return
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise InvalidInputError(f"num_nodes must be an int >= 1, got {num_nodes!r}")


def _check_env(env: Any) -> None:
    if env is None:
        return
    if not isinstance(env, dict):
        raise InvalidInputError(f"env must be a dict of str to str, got {env!r}")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise InvalidInputError(
                f"env name {key!r} is invalid: use letters, digits and '_', not starting "
                "with a digit"
            )
        if not isinstance(value, str):
            raise InvalidInputError(f"env[{key!r}] must be a str, got {value!r}")


def _check_resources(resources: Any) -> None:
    if resources is None:
        return
    if not isinstance(resources, dict):
        raise InvalidInputError(f"resources_per_node must be a dict, got {resources!r}")
    for key, value in resources.items():
        if key not in constants.RESOURCE_KEYS:
            raise InvalidInputError(
                f"resources_per_node key {key!r} is not supported; allowed: "
                f"{', '.join(sorted(constants.RESOURCE_KEYS))}"
            )
        if key == constants.MEMORY_LABEL:
            try:
                if isinstance(value, bool) or memory_bytes(value) < 0:
                    raise ValueError(value)
            except ValueError as exc:
                raise InvalidInputError(
                    f"resources_per_node['memory'] must be like '4Gi', '512M' or bytes, "
                    f"got {value!r}"
                ) from exc
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidInputError(f"resources_per_node[{key!r}] must be a number, got {value!r}")
        try:
            number = quantity(value)
        except ValueError as exc:
            raise InvalidInputError(
                f"resources_per_node[{key!r}] must be a number, got {value!r}"
            ) from exc
        if number < 0:
            raise InvalidInputError(f"resources_per_node[{key!r}] must be >= 0, got {value!r}")


def _check_max_restarts(max_restarts: Any) -> None:
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise InvalidInputError(f"max_restarts must be an int >= 0, got {max_restarts!r}")


def _check_packages(packages: Any) -> None:
    if packages is None:
        return
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise InvalidPackageSpecError(
            f"packages_to_install must be a list of str, got {packages!r}"
        )
    for spec in packages:
        try:
            Requirement(spec)
        except InvalidRequirement as exc:
            raise InvalidPackageSpecError(
                f"packages_to_install entry {spec!r} is not a valid requirement (PEP 508, e.g. "
                f"'numpy>=1.26'): {exc}"
            ) from exc


def _check_index_urls(urls: Any) -> None:
    if not isinstance(urls, list) or not urls:
        raise InvalidInputError(f"pip_index_urls must be a non-empty list of URLs, got {urls!r}")
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise InvalidInputError(f"pip_index_urls entry {url!r} must be an http(s) URL")


def _check_function(func: Any) -> None:
    if not isinstance(func, pytypes.FunctionType):
        raise InvalidFunctionError(
            f"func must be a Python function defined with 'def', got {func!r} "
            f"({type(func).__name__})"
        )
    if func.__name__ == "<lambda>":
        raise InvalidFunctionError(
            f"func must be defined with 'def', not a lambda: {func!r} cannot be shipped as source"
        )
    if func.__code__.co_freevars:
        raise InvalidFunctionError(
            f"func {func.__name__!r} closes over {', '.join(func.__code__.co_freevars)}: a "
            "training function must be self-contained (import and define inside it)"
        )
    try:
        inspect.getsource(func)
    except (OSError, TypeError) as exc:
        raise InvalidFunctionError(
            f"the source of func {func.__name__!r} is not available ({exc}); define it in a file"
        ) from exc


# Decorators the worker cannot apply, and must not: Prefect's own (a task's fn is the bare
# function, but its source still shows the decorator).
_PREFECT_DECORATORS = {"task", "flow"}


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def function_source(func: Callable[..., Any]) -> str:
    """The source shipped to the nodes: `func`'s own, dedented, without Prefect's ``@task`` or
    ``@flow`` decorator lines (other decorators stay, and run in the worker)."""
    source = textwrap.dedent(inspect.getsource(func))
    definition = ast.parse(source).body[0]
    if not isinstance(definition, ast.FunctionDef):
        return source
    dropped: set[int] = set()
    for decorator in definition.decorator_list:
        if _decorator_name(decorator) in _PREFECT_DECORATORS:
            dropped.update(range(decorator.lineno - 1, (decorator.end_lineno or 0)))
    lines = source.splitlines(keepends=True)
    return "".join(line for index, line in enumerate(lines) if index not in dropped)


def _check_func_args(func: Callable[..., Any], func_args: Any) -> None:
    if func_args is None:
        func_args = {}
    if not isinstance(func_args, dict):
        raise InvalidFuncArgsError(f"func_args must be a dict, got {func_args!r}")
    try:
        encoded = json.dumps(func_args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidFuncArgsError(
            f"func_args must be JSON-serialisable (str, numbers, bools, None, lists, dicts with "
            f"str keys): {exc}"
        ) from exc
    if json.loads(encoded) != func_args:
        raise InvalidFuncArgsError(
            f"func_args {func_args!r} does not survive a JSON round trip (tuples or non-str keys?)"
        )
    try:
        inspect.signature(func).bind(**func_args)
    except TypeError as exc:
        raise InvalidFuncArgsError(
            f"func_args {sorted(func_args)} do not match {func.__name__}"
            f"{inspect.signature(func)}: {exc}"
        ) from exc


@dataclass
class CustomTrainer:
    """A self-contained training function run on every node.

    Args:
        func: The function that encapsulates the entire training process. It is shipped as
            source, so it must import what it uses inside its body.
        func_args: JSON-serialisable keyword arguments for `func`.
        packages_to_install: Python packages installed before training (PEP 508 specifiers).
        pip_index_urls: The first URL is the index URL, the rest extra index URLs.
        num_nodes: Number of training nodes; defaults to the runtime's.
        resources_per_node: Per-node resources: ``cpu``, ``memory``, ``gpu``/``nvidia.com/gpu``.
        env: Environment variables merged onto each node's environment.
        max_restarts: Gang restarts (beyond the Kubeflow SDK): when a node fails, every node is
            stopped and the job starts again with a fresh rendezvous, up to this many times.
            The function reads its attempt from ``TORCHELASTIC_RESTART_COUNT`` (0 first).
    """

    func: Callable[..., Any]
    func_args: dict[str, Any] | None = None
    packages_to_install: list[str] | None = None
    pip_index_urls: list[str] = field(
        default_factory=lambda: list(constants.DEFAULT_PIP_INDEX_URLS)
    )
    num_nodes: int | None = None
    resources_per_node: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    max_restarts: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises an `InvalidInputError` naming the bad value."""
        _check_function(self.func)
        _check_func_args(self.func, self.func_args)
        _check_packages(self.packages_to_install)
        _check_index_urls(self.pip_index_urls)
        _check_num_nodes(self.num_nodes)
        _check_resources(self.resources_per_node)
        _check_env(self.env)
        _check_max_restarts(self.max_restarts)


@dataclass
class CustomTrainerContainer:
    """A training image that encapsulates the entire training process: its own command runs on
    every node (Docker, Podman or Kubernetes) under torchrun's rendezvous environment
    (``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``,
    ``PET_MASTER_PORT``), so a ``torchrun train.py`` command finds its peers.

    Args:
        image: The training image (its entrypoint and command run; it needs ``python3``).
        num_nodes: Number of training nodes; defaults to the runtime's.
        resources_per_node: Per-node resources: ``cpu``, ``memory``, ``gpu``/``nvidia.com/gpu``.
        env: Environment variables merged onto each node's environment.
        max_restarts: Gang restarts, as for `CustomTrainer`; the image's command reads its
            attempt from ``PREFECT_KUBEFLOW_RESTART_COUNT`` (its own torchrun counts from 0).
    """

    image: str
    num_nodes: int | None = None
    resources_per_node: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    max_restarts: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises an `InvalidInputError` naming the bad value."""
        if not isinstance(self.image, str) or not self.image.strip():
            raise InvalidInputError(f"image must be a non-empty str, got {self.image!r}")
        _check_num_nodes(self.num_nodes)
        _check_resources(self.resources_per_node)
        _check_env(self.env)
        _check_max_restarts(self.max_restarts)


class TrainerType(Enum):
    """The kind of trainer a runtime accepts."""

    CUSTOM_TRAINER = "CustomTrainer"
    BUILTIN_TRAINER = "BuiltinTrainer"


@dataclass
class RuntimeTrainer:
    """The trainer part of a runtime: framework, image, defaults for nodes and processes."""

    trainer_type: TrainerType
    framework: str
    image: str
    num_nodes: int = 1
    device: str = constants.UNKNOWN
    device_count: str = constants.UNKNOWN
    _command: tuple[str, ...] = field(default=(), init=False, repr=False)

    @property
    def command(self) -> tuple[str, ...]:
        """The container command of the runtime's node."""
        return self._command

    def set_command(self, command: tuple[str, ...]) -> None:
        """Set the container command of the runtime's node."""
        self._command = tuple(command)


@dataclass
class Runtime:
    """A training runtime: a named, pre-configured training environment.

    ``origin`` goes beyond the Kubeflow SDK: where the runtime was read from (a file, URL,
    ``github://`` path or ``builtin:`` file), or None for a Runtime built in code.
    """

    name: str
    trainer: RuntimeTrainer
    pretrained_model: str | None = None
    origin: str | None = None


@dataclass
class Step:
    """One step of a TrainJob; ``node-<i>`` for training nodes."""

    name: str
    status: str | None
    pod_name: str
    device: str = constants.UNKNOWN
    device_count: str = constants.UNKNOWN


@dataclass
class Restart:
    """An earlier attempt of a TrainJob that ended in a gang restart."""

    attempt: int
    reason: str
    time: datetime


@dataclass
class TrainJob:
    """A TrainJob as read back from its backend's records.

    Beyond the Kubeflow SDK: ``message`` says why a Failed job failed (the failing node's last
    error lines) or why a restarting one restarts; ``labels`` and ``annotations`` are the job
    options'; ``restarts`` lists the earlier attempts (``attempt`` is the current one's
    ``TORCHELASTIC_RESTART_COUNT``); ``image_digest`` is the digest of the image the nodes ran,
    where the engine gives one; ``uid`` tells this job from an earlier one of the same name;
    ``trainer_status`` is the progress rank 0 last reported.
    """

    name: str
    runtime: Runtime
    steps: list[Step]
    num_nodes: int
    creation_timestamp: datetime
    status: str = constants.UNKNOWN
    message: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    restarts: list[Restart] = field(default_factory=list)
    image_digest: str | None = None
    uid: str | None = None
    trainer_status: TrainerStatus | None = None

    @property
    def attempt(self) -> int:
        """The current attempt, counted from 0 (its nodes' ``TORCHELASTIC_RESTART_COUNT``)."""
        return len(self.restarts)


@dataclass
class Event:
    """Something that happened to a TrainJob or one of its nodes."""

    involved_object_kind: str
    involved_object_name: str
    message: str
    reason: str
    event_time: datetime
