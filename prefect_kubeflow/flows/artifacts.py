"""Rank 0's progress reports (`update_trainjob_status`) as artifacts of the job's flow run: a
progress artifact (its percentage, updated in place) and a table of the latest metrics (a new
version per report), read from the job while it runs."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import Iterator
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

from prefect_kubeflow.backends.base import Backend
from prefect_kubeflow.progress import TrainerStatus

POLL_SECONDS = 2.0
logger = logging.getLogger(__name__)


class ProgressPublisher:
    """Publishes each new report of job `name` on the flow run `flow_run_id`."""

    def __init__(self, backend: Backend, name: str, flow_run_id: UUID) -> None:
        self.backend = backend
        self.name = name
        self.flow_run_id = flow_run_id
        self.published: TrainerStatus | None = None
        self._progress_id: UUID | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # this run's Prefect settings
            args=(self._run,),
            name="progress",
            daemon=True,
        )

    def start(self) -> None:
        """Publish in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, publishing the last report first."""
        self._stopped.set()
        self._thread.join()
        self.publish_latest()

    def _run(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            self.publish_latest()

    def publish_latest(self) -> None:
        """Publish the job's report if it is new; a failure to is logged (training goes on)."""
        try:
            job = self.backend.describe(self.name)
            status = job.trainer_status if job is not None else None
            if status is None or status == self.published:
                return
            self._publish(status)
            self.published = status
        except Exception as exc:
            logger.warning("publishing the progress of TrainJob %s failed: %s", self.name, exc)

    def _publish(self, status: TrainerStatus) -> None:
        description = f"TrainJob {self.name}: reported at {status.last_updated_time.isoformat()}"
        if status.estimated_remaining_seconds is not None:
            description += f", {status.estimated_remaining_seconds} s remaining"
        with get_client(sync_client=True) as client:
            if status.progress_percentage is not None:
                progress = float(status.progress_percentage)
                if self._progress_id is None:
                    artifact = client.create_artifact(
                        ArtifactCreate(
                            type="progress",
                            data=progress,
                            description=description,
                            flow_run_id=self.flow_run_id,
                        )
                    )
                    self._progress_id = artifact.id
                else:
                    client.update_artifact(
                        self._progress_id, ArtifactUpdate(data=progress, description=description)
                    )
            if status.metrics:
                rows = [{"metric": key, "value": value} for key, value in status.metrics.items()]
                client.create_artifact(
                    ArtifactCreate(
                        key=f"{self.name}-metrics",
                        type="table",
                        data=json.dumps(rows),
                        description=description,
                        flow_run_id=self.flow_run_id,
                    )
                )


@contextlib.contextmanager
def publish_progress(backend: Backend, name: str, flow_run_id: UUID) -> Iterator[None]:
    """Within the block, publish the job's progress reports on its flow run."""
    publisher = ProgressPublisher(backend, name, flow_run_id)
    publisher.start()
    try:
        yield
    finally:
        publisher.stop()
