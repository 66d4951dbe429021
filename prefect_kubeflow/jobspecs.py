"""A TrainJob's spec from what the user asked for: the runtime it trains on, its trainer,
its options, checked against what the backend can do. Nothing is created here."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend, JobSpec
from prefect_kubeflow.errors import InvalidInputError, InvalidRuntimeError, UnsupportedOptionError
from prefect_kubeflow.options import JobOptions, resolve_options
from prefect_kubeflow.runtimes import RuntimeCatalog, RuntimeSpec
from prefect_kubeflow.types import (
    CustomTrainer,
    CustomTrainerContainer,
    Runtime,
    TrainerType,
    function_source,
)


def _job_name() -> str:
    """A random lowercase name: a letter, then hex digits (as the Kubeflow SDK)."""
    return (
        "abcdefghijklmnopqrstuvwxyz"[uuid.uuid4().int % 26]
        + uuid.uuid4().hex[: constants.JOB_NAME_UUID_LENGTH]
    )


def resolve_runtime(catalog: RuntimeCatalog, runtime: str | Runtime | None) -> RuntimeSpec:
    """The runtime spec a job trains on: by name, a `Runtime` completed from the catalog, or
    the default; only a CustomTrainer torch runtime.

    Raises:
        RuntimeNotFoundError: `runtime` names no known runtime.
        InvalidRuntimeError: `runtime` cannot run a CustomTrainer.
    """
    if runtime is None:
        spec = catalog.get(constants.DEFAULT_TRAINING_RUNTIME)
    elif isinstance(runtime, str):
        spec = catalog.get(runtime)
    elif isinstance(runtime, Runtime):
        # The Runtime as given (its trainer fields win); what only a runtime document
        # holds (processes per node, env, resources) from the catalog's runtime of that
        # name. A Runtime no source defines gets its framework's default image.
        listing = catalog.load()
        known = listing.specs.get(runtime.name)
        given = catalog.runtime_default_image(runtime)
        spec = replace(known, runtime=given) if known else RuntimeSpec(given)
    else:
        raise InvalidInputError(f"runtime must be a name or a Runtime, got {runtime!r}")
    if spec.runtime.trainer.trainer_type is not TrainerType.CUSTOM_TRAINER:
        raise InvalidRuntimeError(
            f"runtime {spec.runtime.name!r} runs a built-in trainer "
            f"({' '.join(spec.runtime.trainer.command)!r}); a CustomTrainer needs a "
            f"CustomTrainer runtime such as {constants.DEFAULT_TRAINING_RUNTIME!r}"
        )
    if spec.ml_policy != "torch":
        raise InvalidRuntimeError(
            f"runtime {spec.runtime.name!r} has ML policy {spec.ml_policy!r}; this backend "
            "runs torch (torchrun) runtimes only"
        )
    return spec


def build_spec(
    backend: Backend,
    catalog: RuntimeCatalog,
    trainer: CustomTrainer | CustomTrainerContainer | None,
    runtime: str | Runtime | None = None,
    options: list[Any] | None = None,
) -> JobSpec:
    """The validated spec of a TrainJob running `trainer` on `runtime` with `options`,
    named by a `Name` option or at random; nothing is created. `train()` creates it; a
    deployment or a task runner hands it to the ``trainjob`` flow.

    Raises:
        InvalidInputError: `trainer` or an option is invalid.
        UnsupportedOptionError: this backend cannot honour an option or the trainer.
        RuntimeNotFoundError: `runtime` names no known runtime.
        InvalidRuntimeError: `runtime` cannot run a CustomTrainer on this backend.
    """
    job_options = check_trainer(backend, trainer, options)
    assert trainer is not None  # checked: for the type checker
    runtime_spec = resolve_runtime(catalog, runtime)
    # The runtime's numNodes, numProcPerNode, resources and env are defaults; the
    # trainer's num_nodes, resources_per_node (cpu/gpu decide the processes per node, as
    # for numProcPerNode "auto") and env override them.
    resources = dict(trainer.resources_per_node or runtime_spec.resources)
    overrides_nproc = bool(
        trainer.resources_per_node
        and {constants.CPU_LABEL, "gpu", constants.GPU_LABEL} & set(trainer.resources_per_node)
    )
    runtime = runtime_spec.runtime
    return JobSpec(
        name=job_options.name or _job_name(),
        runtime_name=runtime.name,
        framework=runtime.trainer.framework,
        image=_image(trainer, runtime),
        runtime_origin=runtime.origin,
        runtime_num_nodes=runtime.trainer.num_nodes,
        num_nodes=trainer.num_nodes or runtime.trainer.num_nodes,
        num_proc_per_node="auto" if overrides_nproc else runtime_spec.num_proc_per_node,
        **_function_fields(trainer),
        env={**runtime_spec.env, **(trainer.env or {})},
        resources_per_node=resources,
        max_restarts=trainer.max_restarts,
        labels=job_options.labels,
        annotations=job_options.annotations,
        custom_image=isinstance(trainer, CustomTrainerContainer),
        runtime_patches=job_options.runtime_patches,
        trainer_command=job_options.trainer_command,
        trainer_args=job_options.trainer_args,
        uid=uuid.uuid4().hex,
    )


def check_trainer(backend: Backend, trainer: Any, options: list[Any] | None) -> JobOptions:
    """Check `trainer` and `options` against what `backend` can do; the options, folded.

    Raises:
        InvalidInputError: `trainer` or an option is invalid.
        UnsupportedOptionError: the backend cannot honour an option or the trainer.
    """
    kind = type(backend).__name__
    if not isinstance(trainer, (CustomTrainer, CustomTrainerContainer)):
        raise InvalidInputError(
            f"trainer must be a CustomTrainer or CustomTrainerContainer, got {trainer!r}"
        )
    trainer.validate()  # again: the dataclass may have been changed since it was built
    job_options = resolve_options(options, backend.supported_options, kind)
    for_image = isinstance(trainer, CustomTrainerContainer)
    if isinstance(trainer, CustomTrainerContainer) and not backend.runs_images:
        raise UnsupportedOptionError(
            f"the {kind} runs no images, so it cannot run CustomTrainerContainer "
            f"{trainer.image!r}; use a ContainerBackendConfig (Docker, Podman) or a "
            "KubernetesBackendConfig"
        )
    if trainer.max_restarts and not backend.gang_restarts:
        raise UnsupportedOptionError(
            f"max_restarts={trainer.max_restarts} is not supported by the {kind}: "
            f"{backend.restarts_hint}"
        )
    if (job_options.trainer_command or job_options.trainer_args) and not for_image:
        raise InvalidInputError(
            "TrainerCommand and TrainerArgs need a CustomTrainerContainer: a CustomTrainer's "
            "command runs its function"
        )
    return job_options


def _function_fields(trainer: CustomTrainer | CustomTrainerContainer) -> dict[str, Any]:
    """What a spec carries of a CustomTrainer's function (nothing for an image)."""
    if isinstance(trainer, CustomTrainerContainer):
        return {}
    return {
        "function_name": trainer.func.__name__,
        "function_source": function_source(trainer.func),
        "func_args": dict(trainer.func_args or {}),
        "packages_to_install": list(trainer.packages_to_install or []),
        "pip_index_urls": list(trainer.pip_index_urls),
    }


def _image(trainer: CustomTrainer | CustomTrainerContainer, runtime: Runtime) -> str:
    """The nodes' image: a CustomTrainerContainer's own, else the runtime's."""
    return trainer.image if isinstance(trainer, CustomTrainerContainer) else runtime.trainer.image
