"""Training runtimes: parsing ``ClusterTrainingRuntime``/``TrainingRuntime`` YAML and the
runtimes built into the package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from prefect_kubeflow import constants
from prefect_kubeflow.errors import InvalidInputError, RuntimeNotFoundError
from prefect_kubeflow.types import Runtime, RuntimeTrainer, TrainerType

RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
MAX_RUNTIME_BYTES = 1024 * 1024


class RuntimeParseError(InvalidInputError):
    """A runtime document is malformed; the message names the source and the field."""


@dataclass(frozen=True)
class RuntimeSpec:
    """What a backend needs from a runtime beyond the public `Runtime`."""

    runtime: Runtime
    num_proc_per_node: int | str


def _field(doc: Any, path: str, source: str) -> Any:
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RuntimeParseError(f"{source}: missing field {path!r}")
        node = node[part]
    return node


def parse_runtimes(text: str, source: str) -> list[RuntimeSpec]:
    """Parse every runtime document in `text` (YAML, one or more documents)."""
    if len(text.encode()) > MAX_RUNTIME_BYTES:
        raise RuntimeParseError(f"{source}: larger than {MAX_RUNTIME_BYTES} bytes")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RuntimeParseError(f"{source}: malformed YAML: {exc}") from None
    specs = []
    for doc in docs:
        kind = _field(doc, "kind", source)
        if kind not in RUNTIME_KINDS:
            raise RuntimeParseError(f"{source}: kind {kind!r} is not one of {RUNTIME_KINDS}")
        name = _field(doc, "metadata.name", source)
        labels = doc["metadata"].get("labels") or {}
        framework = labels.get(constants.RUNTIME_FRAMEWORK_LABEL, constants.UNKNOWN)
        policy = _field(doc, "spec.mlPolicy", source)
        num_nodes = policy.get("numNodes", 1)
        nproc = (policy.get("torch") or {}).get("numProcPerNode", "auto")
        if isinstance(nproc, str) and nproc.isdigit():  # an IntOrString written as a string
            nproc = int(nproc)
        jobs = _field(doc, "spec.template.spec.replicatedJobs", source)
        node_job = next((j for j in jobs if j.get("name") == constants.NODE), None)
        if node_job is None:
            raise RuntimeParseError(f"{source}: runtime {name!r} has no replicated job 'node'")
        containers = _field(node_job, "template.spec.template.spec.containers", source)
        container = next((c for c in containers if c.get("name") == constants.NODE), containers[0])
        image = container.get("image") or constants.DEFAULT_FRAMEWORK_IMAGES.get(framework, "")
        trainer = RuntimeTrainer(
            trainer_type=TrainerType.CUSTOM_TRAINER,
            framework=framework,
            image=image,
            num_nodes=int(num_nodes),
        )
        trainer.set_command(tuple(container.get("command") or ()))
        specs.append(RuntimeSpec(Runtime(name=name, trainer=trainer), nproc))
    return specs


def builtin_runtimes() -> dict[str, RuntimeSpec]:
    """The runtimes shipped inside the package, by name."""
    found: dict[str, RuntimeSpec] = {}
    for entry in sorted(resources.files(__name__).joinpath("builtin").iterdir(), key=str):
        if entry.name.endswith(".yaml"):
            for spec in parse_runtimes(entry.read_text(), f"builtin:{entry.name}"):
                found.setdefault(spec.runtime.name, spec)
    return found


def get_runtime_spec(name: str) -> RuntimeSpec:
    """The runtime named `name`, or `RuntimeNotFoundError` listing the known ones."""
    known = builtin_runtimes()
    if name not in known:
        raise RuntimeNotFoundError(name, known)
    return known[name]
