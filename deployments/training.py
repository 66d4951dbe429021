"""A parametrised training flow for deployments: any training function, by import path, run as
a TrainJob on any saved backend block.

``prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml`` registers the
deployments in ``prefect.yaml`` (run from the repository root); ``python
deployments/training.py`` serves the same flow on a schedule without a work pool.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.blocks.core import Block

from prefect_kubeflow import CustomTrainer, TrainerClient, TrainingBackendConfig
from prefect_kubeflow.errors import InvalidInputError
from prefect_kubeflow.flows.trainjob import run_trainjob


def import_function(path: str) -> Any:
    """The function at ``"package.module:function"``, importable from the working directory
    (a deployment's pull step sets it) or the installed packages.

    Raises:
        InvalidInputError: `path` is not of that form, or names nothing importable.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(
            f"function {path!r} must be an import path 'package.module:function'"
        )
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"function {path!r} cannot be imported: {exc}") from exc


def load_backend(block: str | None) -> TrainingBackendConfig | None:
    """The saved backend block `block` (``"block-type-slug/block-name"``, as `Block.load`
    takes it); None for the embedded default, the local backend.

    Raises:
        InvalidInputError: `block` is saved but is not a backend configuration.
    """
    if not block:
        return None
    config = Block.load(block)
    if not isinstance(config, TrainingBackendConfig):
        raise InvalidInputError(
            f"block {block!r} is a {type(config).__name__}, not a backend configuration such "
            "as kubeflow-container-backend/<name>"
        )
    return config


@flow(name="train-model")
def train_model(
    function: str = "deployments.examples:ddp_train",
    func_args: dict[str, Any] | None = None,
    num_nodes: int = 2,
    backend_block: str | None = None,
    runtime: str = "torch-distributed",
) -> Any:
    """Train `function` on `num_nodes` nodes as a TrainJob (its own child flow run, with one
    ``node-<i>`` task run per node) and return what rank 0 returned.

    Args:
        function: The training function, ``"package.module:function"``, importable here.
            Whoever may run this deployment chooses the code it runs: grant that right
            accordingly.
        func_args: Its keyword arguments (JSON values).
        num_nodes: Nodes of the job.
        backend_block: A saved backend block, ``"block-type-slug/block-name"`` (such as
            ``kubeflow-container-backend/gpu-box``); the local backend when empty.
        runtime: The training runtime.
    """
    client = TrainerClient(backend_config=load_backend(backend_block))
    trainer = CustomTrainer(
        func=import_function(function), func_args=func_args, num_nodes=num_nodes
    )
    spec = client.build_spec(trainer, runtime)
    # The job's own flow run returns rank 0's value (a block with auto_remove keeps no job).
    result = run_trainjob(spec, client.backend_config)
    get_run_logger().info("TrainJob %s completed; rank 0 returned %r", spec.name, result)
    return result


if __name__ == "__main__":
    # Serve without a work pool: every 6 hours, and on demand.
    train_model.serve(name="served-every-6-hours", interval=6 * 3600)
