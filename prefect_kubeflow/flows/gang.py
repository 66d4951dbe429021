"""Watching a job's nodes, Prefect-free: follow a node to its end, and when it failed stop
the whole gang at once. The ``trainjob`` flow's node tasks use it with a log forwarder; a
supervisor that cannot reach Prefect uses it without one, so the gang holds either way."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import Backend
from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.backends.status import is_active, restart_pending
from prefect_kubeflow.errors import BackendError, JobNotFoundError
from prefect_kubeflow.types import TrainJob

ENDED = (constants.STEP_SUCCEEDED, constants.STEP_FAILED)
# How long a node whose log has ended may still read as running (a container whose keeper
# has written its exit but not yet exited).
SETTLE_SECONDS = 60.0
READ_ATTEMPTS = 5
logger = logging.getLogger(__name__)


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
    phase = constants.UNKNOWN
    while phase not in ENDED and time.monotonic() < deadline:
        try:
            job = backend.describe(name)
        except BackendError as exc:  # the engine hiccuped: the node's state is still there
            logger.warning("reading TrainJob %s failed (%s); trying again", name, exc)
            time.sleep(1)
            continue
        if job is None:
            return None
        phase = job.steps[node_index].status or constants.UNKNOWN
        if phase not in ENDED:
            time.sleep(0.1)
    if phase == constants.STEP_FAILED and why_cancelled(backend, name) is None:
        node = f"{constants.NODE}-{node_index}"
        stop_gang(backend, name, "GangTeardown", f"{node} failed: stopping every node of the gang")
    return phase


def stop_gang(backend: Backend, name: str, reason: str, message: str) -> None:
    """Stop every node of the job, recording why as an event; a failure to stop is logged
    (the flow then watches on)."""
    backend.record_event(name, reason, message)
    try:
        backend.stop(name)
    except BackendError as exc:
        logger.warning("stopping the nodes of TrainJob %s failed: %s", name, exc)


def record_watcher(backend: Backend, name: str) -> None:
    """Record this process as the job's watcher (the one restarting its gang); a failure to is
    logged: the job then runs as if it had none yet."""
    try:
        backend.record_watcher(name)
    except (BackendError, JobNotFoundError, OSError) as exc:
        logger.warning("could not record the watcher of TrainJob %s: %s", name, exc)


def restart_gang(backend: Backend, name: str) -> TrainJob | None:
    """Start the job's next attempt if its current one failed, has fully stopped and restarts
    remain (`restart_pending`); the job then (None once deleted)."""
    job = backend.describe(name)
    if job is not None and restart_pending(job):
        logger.info("TrainJob %s: attempt %s failed; restarting the gang", name, job.attempt + 1)
        try:
            backend.restart(name)
        except JobNotFoundError:
            return None  # deleted meanwhile
        except (BackendError, OSError) as exc:  # no job may wait for a restart never to come
            logger.warning("TrainJob %s could not restart: %s", name, exc)
            cancel_job(backend, name, f"the gang could not restart: {exc}")
        job = backend.describe(name)
    return job


def cancel_job(backend: Backend, name: str, message: str) -> None:
    """Stop every node of the job for good, saying why (`Backend.cancel`): the one path of a
    cancel from Prefect, a delete, and a gang that cannot restart. A failure to is logged."""
    logger.info("TrainJob %s: %s; stopping every node", name, message)
    try:
        backend.cancel(name, message)
    except (BackendError, JobNotFoundError, OSError) as exc:
        logger.warning("TrainJob %s could not be cancelled: %s", name, exc)


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


def finish(backend: Backend, name: str, auto_remove: bool) -> TrainJob | None:
    """The job once none of its nodes runs and no restart is due (watching the gang while any
    runs, restarting it when one is), removed then if `auto_remove`; None once deleted. The
    end of every plan, with Prefect or without."""
    job = backend.describe(name)
    if job is not None and is_active(job.status):
        record_watcher(backend, name)
    while job is not None and is_active(job.status):
        if restart_pending(job):
            job = restart_gang(backend, name)
            continue
        logger.info("TrainJob %s still runs; watching its nodes", name)
        job = watch_gang(backend, name)
    if job is not None and auto_remove:
        remove(backend, name)
    return job


def remove(backend: Backend, name: str) -> None:
    """Remove an ended job (``auto_remove``); a failure to is logged, not raised."""
    try:
        backend.delete(name)
    except (BackendError, OSError) as exc:
        logger.warning("auto_remove could not remove TrainJob %s: %s", name, exc)


def why_cancelled(backend: Backend, name: str) -> str | None:
    """Why the ended job was stopped on purpose (cancelled, or deleted meanwhile); None when
    it ended by itself."""
    for attempt in range(READ_ATTEMPTS):
        try:
            cancelled = backend.cancelled(name)
            if cancelled is None and backend.describe(name) is None:
                return "it was deleted"
            return cancelled
        except BackendError as exc:  # the engine hiccuped: the record is still there
            logger.warning("reading TrainJob %s failed (%s); trying again", name, exc)
            time.sleep(attempt + 1)
    return backend.cancelled(name)
