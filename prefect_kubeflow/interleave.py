"""Several followed streams read as one: each drained by its own thread into a bounded queue,
items yielded as they arrive. `TrainerClient.get_job_logs(follow=True)` reads every node so."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

_END = object()
QUEUE_SIZE = 1024


def interleave(streams: Sequence[Callable[[], Iterable[str]]]) -> Iterator[str]:
    """Every item of every stream (each opened by calling it, in its own thread), in the order
    they arrive, until all streams end. Memory stays flat: the queue is bounded. A consumer
    that stops early does not wait for the streams to end: each reader returns at its next
    item, or when its stream ends."""
    items: queue.Queue[object] = queue.Queue(maxsize=QUEUE_SIZE)
    closed = threading.Event()

    def offer(item: object) -> bool:
        """Queue `item` unless the consumer went away; whether it was queued."""
        while not closed.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(stream: Callable[[], Iterable[str]]) -> None:
        try:
            for item in stream():
                if not offer(item):
                    return
        finally:
            offer(_END)

    for stream in streams:
        threading.Thread(target=read, args=(stream,), daemon=True).start()
    try:
        ended = 0
        while ended < len(streams):
            item = items.get()
            if item is _END:
                ended += 1
            else:
                yield str(item)
    finally:
        closed.set()
