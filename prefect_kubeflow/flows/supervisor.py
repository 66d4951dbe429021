"""The detached process that runs one TrainJob's flow for `TrainerClient.train()`.

``python -m prefect_kubeflow.flows.supervisor`` with ``{"job", "config", "api_url"}`` as JSON
on stdin: the backend configuration block with its secrets (a backend may need credentials
while it watches), which stdin keeps out of every process's argv and off the disk.

The job exists already (the client created it, so that its errors reach the caller); this
process runs the ``trainjob`` flow, which watches the nodes and forwards their logs. If no
Prefect API answers, it still watches the nodes, so the gang and ``auto_remove`` hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
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


def launch(name: str, config: TrainingBackendConfig, api_url: str, resume: bool = False) -> int:
    """Start job `name`'s supervisor detached, at low priority; its pid. No shell involved.
    With `resume`, it settles the flow run of a job whose supervisor died instead of running
    a new one."""
    payload = {
        "job": name,
        "config": config.model_dump(mode="json", context={"include_secrets": True}),
        "api_url": api_url,
        "resume": resume,
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path(name), "ab") as log:
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
    """Run the job's flow (or, without Prefect, watch its nodes), then settle its flow run
    (every line delivered, its true final state) however long the API is down; with
    ``resume``, settle the flow run of a supervisor that died. 0 when the job completed."""
    from prefect_kubeflow.flows.server import ensure_server

    # Before Prefect reads its settings.
    os.environ["PREFECT_API_URL"] = payload["api_url"] or ensure_server()
    from prefect_kubeflow.blocks import TrainingBackendConfig
    from prefect_kubeflow.flows.gang import finish
    from prefect_kubeflow.flows.logs import drain
    from prefect_kubeflow.flows.runs import find_flow_runs, label_flow_run
    from prefect_kubeflow.flows.settle import settle_when_reachable
    from prefect_kubeflow.flows.trainjob import run_trainjob

    name = payload["job"]
    # The block's own type, found from its block_type_slug by Prefect's block dispatch.
    config = TrainingBackendConfig.model_validate(payload["config"])
    backend = config.get_backend()
    # A new job waits for the supervisor of an earlier job of its name to finish; a resumer
    # leaves the job to the supervisor that has it.
    with _sole_supervisor(name, wait=not payload.get("resume")) as sole:
        if not sole:
            return 0  # another process settles this job already
        if payload.get("resume"):
            flow_run = find_flow_runs([name]).get(name)
            if flow_run is not None:
                label_flow_run(flow_run.id, name)  # this process runs it now
        else:
            try:
                run_trainjob(name, config, return_state=True)
                drain(timeout=30)  # the flow's own messages; node lines are delivered
            except Exception:
                # Training must not die with the Prefect API: keep the gang whole without it.
                logger.exception("the trainjob flow failed; watching the nodes without Prefect")
                finish(backend, name, auto_remove=False)
        settle_when_reachable(backend, name, config.auto_remove)
        job = backend.describe(name)
    if config.auto_remove:  # nothing of the job is kept, this log included
        log_path(name).unlink(missing_ok=True)
    return 0 if job is None or job.status == constants.TRAINJOB_COMPLETE else 1


@contextlib.contextmanager
def _sole_supervisor(name: str, wait: bool) -> Iterator[bool]:
    """Whether this is the only process supervising job `name` (held for the block; with
    `wait`, once the other one is done): a lock on its log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path(name), "a") as log:
        try:
            fcntl.flock(log, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main(json.loads(sys.stdin.buffer.read())))
