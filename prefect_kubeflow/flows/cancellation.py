"""Cancellation from Prefect: a TrainJob's flow run watches its own state (and its ancestors').

Prefect acts on a Cancelling flow run only under a runner or worker, and even there it signals
the flow's process alone, never our nodes. So the ``trainjob`` flow watches for itself, as
Prefect's own observer does: the ``prefect.flow-run.Cancelling`` event over the events
websocket, and polling while the websocket is unavailable. A subflow watches its parents too:
cancelling the user's flow cancels the TrainJob inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

CANCELLED_FROM_PREFECT = "cancelled from Prefect"
CANCEL_EVENTS = ["prefect.flow-run.Cancelling", "prefect.flow-run.Cancelled"]
# How often to poll while the websocket is down, and how long before subscribing again.
POLL_SECONDS = 1.0
RESUBSCRIBE_SECONDS = 10.0
logger = logging.getLogger(__name__)


def is_cancelling(run: FlowRun) -> bool:
    """Whether someone asked for the flow run to stop: Cancelling, or already Cancelled."""
    state = run.state
    return state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED)


async def lineage(client: PrefectClient, flow_run: FlowRun) -> list[UUID]:
    """The flow run and every flow run it is nested in (a subflow's parents), innermost first."""
    ids = [flow_run.id]
    while flow_run.parent_task_run_id is not None:
        task_run = await client.read_task_run(flow_run.parent_task_run_id)
        if task_run.flow_run_id is None or task_run.flow_run_id in ids:
            break
        flow_run = await client.read_flow_run(task_run.flow_run_id)
        ids.append(flow_run.id)
    return ids


class CancellationWatch:
    """Call `on_cancel` once, in its own thread, when the flow run `flow_run_id` or any flow run
    it is nested in is cancelled from Prefect; until `stop()`."""

    def __init__(self, flow_run_id: UUID, on_cancel: Callable[[], object]) -> None:
        self.flow_run_id = flow_run_id
        self.on_cancel = on_cancel
        self.cancelled = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # this run's Prefect settings
            args=(self._run,),
            name="cancellation-watch",
            daemon=True,
        )

    def start(self) -> None:
        """Start watching in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; `on_cancel` is not called after this returns."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop has just ended by itself
                self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._watch())
        except Exception:  # cancellation is a convenience: the job runs on without it
            logger.exception("watching flow run %s for cancellation failed", self.flow_run_id)
        finally:
            self._loop.close()

    async def _watch(self) -> None:
        async with get_client() as client:
            try:
                ids = await lineage(client, await client.read_flow_run(self.flow_run_id))
            except Exception as exc:  # the API hiccuped: watch this run alone
                logger.warning(
                    "could not read the parents of flow run %s: %s", self.flow_run_id, exc
                )
                ids = [self.flow_run_id]
            stopped = asyncio.ensure_future(self._stopped.wait())
            watching = asyncio.ensure_future(self._until_cancelled(client, ids))
            await asyncio.wait([stopped, watching], return_when=asyncio.FIRST_COMPLETED)
            for future in (stopped, watching):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
            if watching.done() and not watching.cancelled() and watching.result():
                self.cancelled.set()
                self.on_cancel()

    async def _until_cancelled(self, client: PrefectClient, ids: list[UUID]) -> bool:
        """Return True once any of `ids` is cancelled: told by the event stream, read by
        polling while the stream is unavailable."""
        event_filter = EventFilter(
            event=EventNameFilter(name=CANCEL_EVENTS),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{i}" for i in ids]),
        )
        while True:
            try:
                async with get_events_subscriber(
                    filter=event_filter, reconnection_attempts=0
                ) as subscriber:
                    # Subscribed first, then read: a cancel in between is seen either way.
                    if await self._any_cancelling(client, ids):
                        return True
                    async for _event in subscriber:
                        return True
            except Exception as exc:  # the websocket is unavailable: poll a while
                logger.debug("events websocket unavailable (%s); polling", exc)
            loop = asyncio.get_running_loop()
            resubscribe_at = loop.time() + RESUBSCRIBE_SECONDS
            while loop.time() < resubscribe_at:
                with contextlib.suppress(Exception):  # the API itself may be down
                    if await self._any_cancelling(client, ids):
                        return True
                await asyncio.sleep(POLL_SECONDS)

    @staticmethod
    async def _any_cancelling(client: PrefectClient, ids: list[UUID]) -> bool:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
        )
        return any(is_cancelling(run) for run in runs)


@contextlib.contextmanager
def watch_for_cancellation(
    flow_run_id: UUID, on_cancel: Callable[[], object]
) -> Iterator[CancellationWatch]:
    """Within the block, call `on_cancel` (once) when the flow run or a parent of it is
    cancelled from Prefect."""
    watch = CancellationWatch(flow_run_id, on_cancel)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()
