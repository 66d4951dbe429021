"""Forwarding node log lines to the Prefect API, as logs of the node's task run.

The lines come from the node's own log (a file the training processes never wait on), are
queued on Prefect's `APILogWorker` (which batches the uploads in its own thread) one log per
line, stdout at INFO and stderr at WARNING, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from uuid import UUID

from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED

from prefect_kubeflow.backends.logfile import STDERR, LogLine

NODE_LOGGER_NAME = "prefect_kubeflow.node"
_TICK = timedelta(microseconds=1)


def forward_lines(lines: Iterable[LogLine], flow_run_id: UUID, task_run_id: UUID, node: str) -> int:
    """Queue every line for upload as a log of `task_run_id`; return how many were read.

    Each log is stamped with the time the node wrote it, made strictly increasing so that the
    Prefect UI shows them in the node's order.
    """
    enabled = PREFECT_LOGGING_TO_API_ENABLED.value()
    worker = APILogWorker.instance() if enabled else None
    name = f"{NODE_LOGGER_NAME}.{node}"
    flow_run, task_run = str(flow_run_id), str(task_run_id)
    last = datetime.fromtimestamp(0, timezone.utc)
    count = 0
    for line in lines:
        count += 1
        if worker is None:
            continue
        # When the node wrote it; never earlier than the line before, so the order holds.
        last = max(datetime.fromtimestamp(line.time, timezone.utc), last + _TICK)
        worker.send(
            {
                "name": name,
                "level": logging.WARNING if line.stream == STDERR else logging.INFO,
                "message": line.text,
                "timestamp": last.isoformat(),
                "flow_run_id": flow_run,
                "task_run_id": task_run,
            }
        )
    return count


def drain(timeout: float | None = None) -> None:
    """Block until every queued log reached the API (or `timeout` seconds passed)."""
    APILogWorker.drain_all(timeout=timeout)
