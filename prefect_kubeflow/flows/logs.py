"""Forwarding node log lines to the Prefect API, as logs of the node's task run: every line
once, in order, with the time the node wrote it, whatever the API's outages.

The bookkeeping of what has been delivered lives in the API itself: lines are stamped with
strictly increasing times computed from the node's log alone (the same in any process), and
are delivered in order, a batch retried until the API took it. So the logs of a task run are
always a prefix of its node's lines, and its newest node log's timestamp says where to resume,
after an outage or from another process.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_CLIENT_MAX_RETRIES,
    PREFECT_LOGGING_TO_API_ENABLED,
    temporary_settings,
)

from prefect_kubeflow.backends.logfile import STDERR, LogLine

NODE_LOGGER_NAME = "prefect_kubeflow.node"
_TICK = timedelta(microseconds=1)
# One upload: up to this many lines, sent as soon as the previous upload returned.
BATCH_LINES = 5000
BATCH_BYTES = 4 * 1024 * 1024  # as Prefect's own log uploads
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
GIVE_UP_SECONDS = 24 * 3600.0
_PAGE = 200
logger = logging.getLogger(__name__)


def stamped(lines: Iterable[LogLine]) -> Iterator[tuple[datetime, LogLine]]:
    """Each line with its log timestamp: when the node wrote it, never earlier than the line
    before plus 1 µs, so that the Prefect UI shows a node's lines in its order and the stamps
    order them. The same lines give the same stamps in every process."""
    last = datetime.fromtimestamp(0, timezone.utc)
    for line in lines:
        last = max(datetime.fromtimestamp(line.time, timezone.utc), last + _TICK)
        yield last, line


def delivered_until(client: SyncPrefectClient, task_run_id: UUID) -> datetime | None:
    """The timestamp of the newest node line the API holds for the task run; None if none."""
    offset = 0
    while True:
        page = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])),
            limit=_PAGE,
            offset=offset,
            sort=LogSort.TIMESTAMP_DESC,
        )
        for log in page:
            if log.name.startswith(NODE_LOGGER_NAME):
                return log.timestamp
        if len(page) < _PAGE:
            return None
        offset += len(page)


class LogShipper:
    """Delivers one node's lines as logs of its task run: from the first line the API does
    not hold yet, in batches, each retried until the API took it."""

    def __init__(self, flow_run_id: UUID, task_run_id: UUID, node: str) -> None:
        self.flow_run_id = str(flow_run_id)
        self.task_run_id = task_run_id
        self.name = f"{NODE_LOGGER_NAME}.{node}"
        self.delivered = 0

    def ship(self, lines: Iterable[LogLine]) -> int:
        """Deliver every line of `lines` the API lacks (reading on while an upload is under
        way or the API is down); how many lines were read."""
        pending: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with get_client(sync_client=True) as client:
            sender = threading.Thread(
                target=contextvars.copy_context().run,  # this run's Prefect settings
                args=(self._send, client, pending),
                name=f"{self.name}-sender",
            )
            sender.start()
            count = 0
            try:
                for stamp, line in stamped(lines):
                    count += 1
                    pending.put(self._log(stamp, line))
            finally:
                pending.put(None)
                sender.join()
        return count

    def _log(self, stamp: datetime, line: LogLine) -> dict[str, Any]:
        return {
            "name": self.name,
            "level": logging.WARNING if line.stream == STDERR else logging.INFO,
            "message": line.text,
            "timestamp": stamp.isoformat(),
            "flow_run_id": self.flow_run_id,
            "task_run_id": str(self.task_run_id),
            "_stamp": stamp,
        }

    def _send(self, client: SyncPrefectClient, pending: queue.Queue[dict[str, Any] | None]) -> None:
        """Upload what is pending until the end marker, a batch at a time; give up (reading
        on) once the API has been unreachable for `GIVE_UP_SECONDS`, or refuses the lines.
        Prefect's client does not retry here: a retried upload the server had stored would
        store it twice; `_deliver` retries from what the API holds instead."""
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
            self._send_all(client, pending)

    def _send_all(
        self, client: SyncPrefectClient, pending: queue.Queue[dict[str, Any] | None]
    ) -> None:
        try:
            until = self._retrying(lambda: delivered_until(client, self.task_run_id))
            ended = False
            while not ended:
                batch: list[dict[str, Any]] = []
                item = pending.get()
                size = 0
                while item is not None:
                    batch.append(item)
                    size += len(item["message"])
                    if len(batch) >= BATCH_LINES or size >= BATCH_BYTES or pending.empty():
                        break
                    item = pending.get()
                ended = item is None
                if until is not None:
                    batch = [log for log in batch if log["_stamp"] > until]
                if batch:
                    until = self._deliver(client, batch)
        except DeliveryAbandoned as exc:
            logger.error("%s: %s; the rest of its lines stay in its log only", self.name, exc)
            while pending.get() is not None:
                pass

    def _deliver(self, client: SyncPrefectClient, batch: list[dict[str, Any]]) -> datetime:
        """Upload `batch` until the API holds all of it; the newest stamp it then holds."""

        def upload() -> datetime:
            nonlocal batch
            # A failed request may have stored part of the batch: resume after it.
            until = delivered_until(client, self.task_run_id) if failed else None
            if until is not None:
                batch = [log for log in batch if log["_stamp"] > until]
                if not batch:
                    return until
            client.create_logs([_without_stamp(log) for log in batch])
            self.delivered += len(batch)
            stamp: datetime = batch[-1]["_stamp"]
            return stamp

        failed = False

        def attempt() -> datetime:
            nonlocal failed
            try:
                return upload()
            except Exception:
                failed = True
                raise

        return self._retrying(attempt)

    def _retrying(self, call: Any) -> Any:
        """`call()`, retried while it fails (the API is down), for up to `GIVE_UP_SECONDS`."""
        attempt = 0
        first_failure = None
        while True:
            try:
                return call()
            except Exception as exc:
                if not _is_transient(exc):
                    raise DeliveryAbandoned(f"the Prefect API refused them: {exc}") from exc
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure > GIVE_UP_SECONDS:
                    raise DeliveryAbandoned(f"the Prefect API failed for too long: {exc}") from exc
                logger.warning("delivering %s's lines failed (%s); retrying", self.name, exc)
                time.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1


def _is_transient(exc: Exception) -> bool:
    """Whether a failed call may succeed later: the API unreachable, overloaded or failing,
    not refusing the request itself."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status in (408, 429)
    return True


class DeliveryAbandoned(Exception):
    """The API stayed unreachable for longer than `GIVE_UP_SECONDS`."""


def _without_stamp(log: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in log.items() if key != "_stamp"}


def forward_lines(lines: Iterable[LogLine], flow_run_id: UUID, task_run_id: UUID, node: str) -> int:
    """Deliver every line of `lines` not yet in the API as a log of `task_run_id`, in order,
    resuming after outages; how many lines were read (all of them are read, and none sent,
    when logging to the API is off)."""
    if not PREFECT_LOGGING_TO_API_ENABLED.value():
        return sum(1 for _ in lines)
    return LogShipper(flow_run_id, task_run_id, node).ship(lines)


def drain(timeout: float | None = None) -> None:
    """Block until every log Prefect itself queued (the flow's own messages) reached the API
    (or `timeout` seconds passed)."""
    APILogWorker.drain_all(timeout=timeout)
