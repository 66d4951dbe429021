"""Watching a job's nodes, Prefect-free: follow a node to its end, and when it failed stop
the whole gang at once. The ``trainjob`` flow's node tasks use it with a log forwarder; a
supervisor that cannot reach Prefect uses it without one, so the gang holds either way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend
from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.errors import JobNotFoundError
from prefect_kubeflow.types import TrainJob

ENDED = (constants.STEP_SUCCEEDED, constants.STEP_FAILED)
# How long a node whose log has ended may still read as running (a container whose keeper
# has written its exit but not yet exited).
SETTLE_SECONDS = 60.0


def _discard(lines: Iterable[LogLine]) -> None:
    for _ in lines:
        pass


def watch_node(
    backend: Backend,
    name: str,
    node_index: int,
    forward: Callable[[Iterable[LogLine]], object] = _discard,
) -> str | None:
    """Follow one node's log to its end, handing the lines to `forward`; return the node's
    final phase, having stopped every other node if it failed. None: the job was deleted."""
    try:
        forward(backend.node_logs(name, node_index, follow=True))
    except JobNotFoundError:
        return None
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        job = backend.describe(name)
        if job is None:
            return None
        phase = job.steps[node_index].status
        if phase in ENDED or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if phase == constants.STEP_FAILED:
        backend.stop(name)
    return phase


def watch_gang(backend: Backend, name: str) -> TrainJob | None:
    """Watch every node of the job in its own thread until all ended; the job then (None
    once deleted)."""
    threads = [
        threading.Thread(target=watch_node, args=(backend, name, index), daemon=True)
        for index in range(backend.get(name).num_nodes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return backend.describe(name)
