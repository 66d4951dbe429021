"""The detached process that runs one TrainJob for `TrainerClient.train()`.

``python -m prefect_kubeflow.flows.supervisor NAME KIND API_URL``, the backend settings as
JSON on stdin.

It starts the nodes first, before importing Prefect, so training never waits for Prefect's
bookkeeping; then it runs the ``trainjob`` flow, which watches the nodes and forwards their logs.
SIGUSR1 (from `delete_job`) stops the nodes and ends the flow run Cancelled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from prefect_kubeflow.backends import backend_for, processes
from prefect_kubeflow.backends.base import SupervisorCommand
from prefect_kubeflow.errors import BackendError
from prefect_kubeflow.flows.gang import cancel_requested, watch_all

logger = logging.getLogger("prefect_kubeflow.supervisor")


def supervisor_command(
    name: str, kind: str, settings: dict[str, Any], api_url: str
) -> SupervisorCommand:
    """The command that runs job `name` detached (no shell involved). The settings go on its
    stdin, not its argv, which every user of the machine can read; secret fields are left out
    (the supervisor never needs them: images are pulled before it starts)."""
    settings = {k: v for k, v in settings.items() if not hasattr(v, "get_secret_value")}
    argv = [sys.executable, "-m", "prefect_kubeflow.flows.supervisor", name, kind, api_url]
    return SupervisorCommand(argv, json.dumps(settings).encode())


def main(argv: Sequence[str]) -> int:
    """Start the job's nodes, then run its flow; the exit code says whether it completed."""
    name, kind, api_url = argv
    settings = json.loads(sys.stdin.buffer.read())
    backend = backend_for(kind, settings)

    def stop_nodes() -> None:
        threading.Thread(target=backend.stop_job, args=(name,), daemon=True).start()

    def on_cancel(signum: int, frame: FrameType | None) -> None:
        if not cancel_requested.is_set():
            cancel_requested.set()
            stop_nodes()

    # SIGUSR1: delete_job cancels the job. SIGTERM: terminated from outside; inside the flow,
    # Prefect marks the flow run Crashed first, then hands the signal on to this handler.
    signal.signal(processes.CANCEL_SIGNAL, on_cancel)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_nodes())
    try:
        backend.start_job(name)
        started = True
    except BackendError as exc:
        logger.error("%s", exc)  # recorded on the job; the flow run reports it too
        started = False
    # From here on this process only does bookkeeping (flow run, log uploads): on a busy
    # machine the training processes, started above at normal priority, come first.
    os.nice(processes.BOOKKEEPING_NICENESS)

    try:
        _run_flow(name, kind, settings, api_url)
    except Exception:
        # Training must not die with the Prefect API: keep the job whole without its flow run.
        logger.exception("the trainjob flow could not run; watching the nodes without Prefect")
    if not started:
        return 1
    # Returns at once when the flow saw every node end; otherwise keeps the gang together.
    codes = watch_all(backend, name)
    if settings.get("auto_remove"):
        backend.delete_job(name)  # ended and forwarded: nothing of it is kept
    return 0 if all(code == 0 for code in codes.values()) else 1


def _run_flow(name: str, kind: str, settings: dict[str, Any], api_url: str) -> None:
    """Run the job's flow run against `api_url`, or the embedded server when it is empty."""
    from prefect_kubeflow.flows.server import ensure_server

    os.environ["PREFECT_API_URL"] = api_url or ensure_server()
    from prefect_kubeflow.blocks import BACKEND_CONFIGS
    from prefect_kubeflow.flows.logs import drain
    from prefect_kubeflow.flows.trainjob import run_trainjob

    run_trainjob(name, BACKEND_CONFIGS[kind](**settings), return_state=True)
    drain(timeout=600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
