"""Runtime YAML → `RuntimeSpec`: size and alias limits, `yaml.safe_load_all`, then the
document shapes of `models`. Every error names the file, the document and the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from prefect_kubeflow import constants
from prefect_kubeflow.errors import RuntimeParseError
from prefect_kubeflow.resources import gpu_count
from prefect_kubeflow.runtimes.models import RUNTIME_KINDS, RuntimeDocument
from prefect_kubeflow.types import Runtime, RuntimeTrainer, TrainerType

MAX_DOCUMENT_BYTES = 1024 * 1024
# A runtime has a few hundred YAML nodes; aliases may not expand a file beyond this many
# (a "billion laughs" file expands to 10^9 from a few hundred bytes).
MAX_EXPANDED_NODES = 100_000
# Aliases may not expand a file's text to more than this many times the document size limit.
EXPANSION_FACTOR = 4
MAX_NESTING = 64
# Kubeflow marks runtimes whose node runs a built-in trainer (torchtune) by this command.
BUILTIN_TRAINER_COMMAND = "tune"

_COLLECTION_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


@dataclass(frozen=True)
class RuntimeSpec:
    """A runtime as the public `Runtime` plus what backends need beyond it."""

    runtime: Runtime
    num_proc_per_node: int | str = "auto"
    ml_policy: str | None = "torch"
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, read back by `from_dict` (the runtime cache stores it)."""
        trainer = self.runtime.trainer
        return {
            "name": self.runtime.name,
            "origin": self.runtime.origin,
            "trainer_type": trainer.trainer_type.value,
            "framework": trainer.framework,
            "image": trainer.image,
            "num_nodes": trainer.num_nodes,
            "device": trainer.device,
            "device_count": trainer.device_count,
            "command": list(trainer.command),
            "num_proc_per_node": self.num_proc_per_node,
            "ml_policy": self.ml_policy,
            "env": self.env,
            "resources": self.resources,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeSpec:
        """The spec `to_dict` wrote."""
        trainer = RuntimeTrainer(
            trainer_type=TrainerType(data["trainer_type"]),
            framework=data["framework"],
            image=data["image"],
            num_nodes=data["num_nodes"],
            device=data["device"],
            device_count=data["device_count"],
        )
        trainer.set_command(tuple(data["command"]))
        return cls(
            runtime=Runtime(name=data["name"], trainer=trainer, origin=data["origin"]),
            num_proc_per_node=data["num_proc_per_node"],
            ml_policy=data["ml_policy"],
            env=data["env"],
            resources=data["resources"],
        )


def parse_runtimes(
    content: bytes | str,
    origin: str,
    *,
    other_kinds_allowed: bool = False,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> list[RuntimeSpec]:
    """Every runtime document in `content` (one or more YAML documents) read from `origin`.

    With `other_kinds_allowed` (files found in a folder), documents of other kinds
    (kustomizations, CRDs) are skipped; otherwise a file without a runtime is an error.

    Raises:
        RuntimeParseError: oversized, not UTF-8, malformed YAML, too many aliases, or a runtime
            document missing a field; the message names `origin`, the document and the field.
    """
    documents = load_yaml(content, origin, max_bytes=max_bytes)
    return runtimes_from(documents, origin, other_kinds_allowed=other_kinds_allowed)


def load_yaml(
    content: bytes | str, origin: str, *, max_bytes: int = MAX_DOCUMENT_BYTES
) -> list[Any]:
    """The YAML documents of `content`, after the size, encoding and alias-expansion checks."""
    raw = content.encode() if isinstance(content, str) else content
    if len(raw) > max_bytes:
        raise RuntimeParseError(origin, f"{len(raw)} bytes is over the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuntimeParseError(
            origin, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    _check_expansion(text, origin, max_bytes)
    try:
        return list(yaml.safe_load_all(text))
    # Constructors raise plain ValueError/TypeError: a date like 2024-13-01, "!!int x".
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        raise RuntimeParseError(origin, f"malformed YAML: {exc}") from exc


def runtimes_from(
    documents: list[Any], origin: str, *, other_kinds_allowed: bool = False
) -> list[RuntimeSpec]:
    """The runtimes among loaded YAML `documents` (see `parse_runtimes`)."""
    specs: list[RuntimeSpec] = []
    kinds: list[str] = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        where = f"document {number}" if len(documents) > 1 else "document"
        kind = document.get("kind") if isinstance(document, dict) else None
        if kind not in RUNTIME_KINDS:
            kinds.append(repr(kind))
            continue
        try:
            model = RuntimeDocument.model_validate(document)
        except ValidationError as exc:
            raise RuntimeParseError(origin, f"{where}: {_describe(exc)}") from exc
        specs.append(_to_spec(model, origin))
    if not specs and not other_kinds_allowed:
        found = f"found kind {', '.join(kinds)}" if kinds else "it is empty"
        raise RuntimeParseError(
            origin, f"no {' or '.join(RUNTIME_KINDS)} document ({found}); is this a runtime file?"
        )
    return specs


def _check_expansion(text: str, origin: str, max_bytes: int) -> None:
    """Refuse YAML whose aliases expand past `MAX_EXPANDED_NODES` nodes or past
    `EXPANSION_FACTOR` times `max_bytes` of scalar text, or that nests deeper than `MAX_NESTING`,
    counting from parser events before anything is built."""
    max_scalar_bytes = EXPANSION_FACTOR * max_bytes
    # Per anchor, and per open collection: (nodes, scalar characters) it expands to.
    anchors: dict[str, tuple[int, int]] = {}
    open_sizes: list[tuple[str | None, int, int]] = []
    total_nodes = total_chars = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, _COLLECTION_STARTS):
                open_sizes.append((event.anchor, 1, 0))
                if len(open_sizes) > MAX_NESTING:
                    raise RuntimeParseError(origin, f"nested deeper than {MAX_NESTING} levels")
                continue
            if isinstance(event, yaml.ScalarEvent):
                anchor, nodes, chars = event.anchor, 1, len(event.value)
            elif isinstance(event, yaml.AliasEvent):
                anchor = None
                nodes, chars = anchors.get(event.anchor or "", (1, 0))
            elif isinstance(event, _COLLECTION_ENDS):
                anchor, nodes, chars = open_sizes.pop()
            else:
                continue
            if anchor is not None:
                anchors[anchor] = (nodes, chars)
            if open_sizes:
                parent_anchor, parent_nodes, parent_chars = open_sizes[-1]
                open_sizes[-1] = (parent_anchor, parent_nodes + nodes, parent_chars + chars)
            else:
                total_nodes, total_chars = total_nodes + nodes, total_chars + chars
            if total_nodes + sum(n for _, n, _ in open_sizes) > MAX_EXPANDED_NODES:
                raise RuntimeParseError(
                    origin, f"expands to more than {MAX_EXPANDED_NODES} YAML nodes (an alias bomb?)"
                )
            if total_chars + sum(c for _, _, c in open_sizes) > max_scalar_bytes:
                raise RuntimeParseError(
                    origin,
                    f"its aliases expand to more than {max_scalar_bytes} bytes of text "
                    "(an alias bomb?)",
                )
    except yaml.YAMLError as exc:
        raise RuntimeParseError(origin, f"malformed YAML: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    """The first validation error as 'field a.b.c: message (got value)'."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    detail = error["msg"]
    if error["type"] != "missing" and "input" in error and "got" not in detail:
        detail += f" (got {error['input']!r:.80})"
    more = f"; and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
    return f"field {location}: {detail}{more}"


def _gpus(resources: dict[str, Any], origin: str) -> int:
    try:
        return gpu_count(resources)
    except (TypeError, ValueError) as exc:
        raise RuntimeParseError(
            origin, f"the node's GPU resources are not a count: {resources!r:.120}"
        ) from exc


def _to_spec(model: RuntimeDocument, origin: str) -> RuntimeSpec:
    policy = model.spec.mlPolicy
    container = model.node_container()
    resources = {**container.resources.requests, **container.resources.limits}
    framework = model.metadata.labels.get(constants.RUNTIME_FRAMEWORK_LABEL) or (
        "torch" if policy.torch is not None else constants.UNKNOWN
    )
    device, device_count = constants.UNKNOWN, constants.UNKNOWN
    if gpus := _gpus(resources, origin):
        device, device_count = "gpu", str(gpus)
    elif constants.CPU_LABEL in resources:
        device, device_count = "cpu", str(resources[constants.CPU_LABEL])
    command = tuple(container.command)
    trainer = RuntimeTrainer(
        trainer_type=(
            TrainerType.BUILTIN_TRAINER
            if command[:1] == (BUILTIN_TRAINER_COMMAND,)
            else TrainerType.CUSTOM_TRAINER
        ),
        framework=framework,
        image=container.image or "",
        num_nodes=policy.numNodes,
        device=device,
        device_count=device_count,
    )
    trainer.set_command(command)
    ml_policy = "torch" if policy.torch is not None else "mpi" if policy.mpi is not None else None
    return RuntimeSpec(
        runtime=Runtime(name=model.metadata.name, trainer=trainer, origin=origin),
        num_proc_per_node=policy.torch.numProcPerNode if policy.torch is not None else 1,
        ml_policy=ml_policy,
        env={var.name: var.value for var in container.env if var.value is not None},
        resources=resources,
    )
