"""The detached process that runs one TrainJob's flow for `TrainerClient.train()`.

``python -m prefect_kubeflow.flows.supervisor`` with ``{"job", "config", "api_url"}`` as JSON
on stdin: the backend configuration block with its secrets (a backend may need credentials
while it watches), which stdin keeps out of every process's argv and off the disk.

The job exists already (the client created it, so that its errors reach the caller); this
process runs the ``trainjob`` flow, which watches the nodes and forwards their logs. If no
Prefect API answers, it still watches the nodes, so the gang and ``auto_remove`` hold.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_cache_dir

from prefect_kubeflow import constants
from prefect_kubeflow.backends import processes

if TYPE_CHECKING:
    from prefect_kubeflow.blocks.base import TrainingBackendConfig

LOG_DIR = Path(user_cache_dir(constants.APP_NAME)) / "supervisors"
logger = logging.getLogger("prefect_kubeflow.supervisor")


def log_path(name: str) -> Path:
    """Where the supervisor of job `name` writes what it has to say outside Prefect."""
    return LOG_DIR / f"{name}.log"


def launch(name: str, config: TrainingBackendConfig, api_url: str) -> int:
    """Start job `name`'s supervisor detached, at low priority; its pid. No shell involved."""
    payload = {
        "job": name,
        "config": config.model_dump(mode="json", context={"include_secrets": True}),
        "api_url": api_url,
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path(name), "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "prefect_kubeflow.flows.supervisor"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    assert child.stdin is not None
    with child.stdin:
        child.stdin.write(json.dumps(payload).encode())
    # Bookkeeping: the nodes starting now need the CPU more than its imports do.
    processes.lower_priority(child.pid, whole_session=True)
    return child.pid


def main(payload: dict[str, Any]) -> int:
    """Run the job's flow (or, without Prefect, watch its nodes); 0 when it completed."""
    from prefect_kubeflow.flows.server import ensure_server

    # Before Prefect reads its settings.
    os.environ["PREFECT_API_URL"] = payload["api_url"] or ensure_server()
    from prefect_kubeflow.blocks import TrainingBackendConfig
    from prefect_kubeflow.flows.gang import finish
    from prefect_kubeflow.flows.logs import drain
    from prefect_kubeflow.flows.trainjob import run_trainjob

    name = payload["job"]
    # The block's own type, found from its block_type_slug by Prefect's block dispatch.
    config = TrainingBackendConfig.model_validate(payload["config"])
    try:
        state = run_trainjob(name, config, return_state=True)
        drain(timeout=600)
        completed = state.is_completed()
    except Exception:
        # Training must not die with the Prefect API: keep the gang whole without its flow run.
        logger.exception("the trainjob flow could not run; watching the nodes without Prefect")
        job = finish(config.get_backend(), name, config.auto_remove)
        completed = job is not None and job.status == constants.TRAINJOB_COMPLETE
    if config.auto_remove:  # nothing of the job is kept, this log included
        log_path(name).unlink(missing_ok=True)
    return 0 if completed else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main(json.loads(sys.stdin.buffer.read())))
