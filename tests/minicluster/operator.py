"""The control loop: one thread running the controllers and the kubelet every tick.

A tick lists this cluster's Docker containers once (a single label-filtered call), then runs
the Trainer/JobSet/Job controllers and the kubelet. Ticks happen when the store changes, and at
least every 0.2 s, but never more often than every 0.1 s (the machine has 2 cores).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .dockerops import DockerOps
from .events import EventRecorder
from .jobs import JobController
from .kubelet import Kubelet
from .podstatus import Node
from .registry import Registry
from .store import Store

LOG = logging.getLogger("minicluster")


class Operator:
    """Runs the controllers and the kubelet on a daemon thread."""

    def __init__(self, store: Store, ops: DockerOps, node: Node, workdir: Path) -> None:
        self.store = store
        self.ops = ops
        self.executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="minicluster-docker")
        recorder = EventRecorder(store, node.name)
        self.jobs = JobController(store, Registry(store), recorder, ops)
        self.kubelet = Kubelet(store, ops, recorder, node, workdir, self.executor)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="minicluster-operator", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self.store.wake.wait(0.2)
            pause = 0.1 - (time.monotonic() - last)
            if pause > 0 and self._stop.wait(pause):
                return
            self.store.wake.clear()
            last = time.monotonic()
            try:
                self.tick()
            except Exception:  # keep the cluster alive; tests can inspect `errors`
                self.errors.append(traceback.format_exc())
                LOG.error("minicluster operator error: %s", self.errors[-1])

    def tick(self) -> None:
        """One reconciliation pass."""
        snapshot = self.ops.snapshot()
        self.jobs.sync()
        self.kubelet.sync(snapshot)

    def stop(self) -> None:
        """Stop the loop and the Docker worker threads (pending work is dropped)."""
        self._stop.set()
        self.store.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.executor.shutdown(wait=False, cancel_futures=True)
