"""Progress reports from inside training: `update_trainjob_status`, as the Kubeflow SDK's.

Standard library only: it runs in the nodes (a container image has this package on its path,
not Prefect). Rank 0's report is written to the job's status file, where the backend and the
job's flow (which turns it into Prefect artifacts) read it; where the Kubeflow Trainer's status
server is configured (``KUBEFLOW_TRAINER_SERVER_URL``, on a cluster), it is posted there too.
`TrainerStatus` is a report as read back (``TrainJob.trainer_status``).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prefect_kubeflow.backends.entrypoint import STATUS_FILE_ENV

SERVER_URL_ENV = "KUBEFLOW_TRAINER_SERVER_URL"
SERVER_CA_ENV = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
SERVER_TOKEN_ENV = "KUBEFLOW_TRAINER_SERVER_TOKEN"  # noqa: S105 - a variable name
MIN_INTERVAL_SECONDS = 5.0
MAX_METRICS = 256
_lock = threading.Lock()
_last_sent: float | None = None
logger = logging.getLogger(__name__)


def trainer_status(
    progress_percent: int | None,
    estimated_remaining_seconds: int | None,
    metrics: dict[str, float | int | str] | None,
) -> dict[str, Any]:
    """The report as the Trainer's API takes it (``trainerStatus``)."""
    status: dict[str, Any] = {"lastUpdatedTime": datetime.now(timezone.utc).isoformat()}
    if progress_percent is not None:
        status["progressPercentage"] = max(0, min(100, int(progress_percent)))
    if estimated_remaining_seconds is not None:
        status["estimatedRemainingSeconds"] = max(0, int(estimated_remaining_seconds))
    if metrics:
        items = list(dict(metrics).items())[:MAX_METRICS]
        status["metrics"] = [{"name": str(key), "value": str(value)} for key, value in items]
    return status


def update_trainjob_status(
    progress_percent: int | None = None,
    estimated_remaining_seconds: int | None = None,
    metrics: dict[str, float | int | str] | None = None,
) -> bool:
    """Report training progress of the TrainJob this runs in (rank 0's reports count).

    Safe anywhere: outside a TrainJob, on another rank, or within 5 s of the last report it
    returns False; it never raises. The report shows in ``TrainerClient.get_job()`` and as a
    progress artifact (and a table of the latest metrics) on the job's Prefect flow run.

    Args:
        progress_percent: How far training is, 0 to 100.
        estimated_remaining_seconds: The time left, in seconds.
        metrics: Metric name to value (shown as text; the first 256 only).

    Returns:
        Whether the report was recorded.
    """
    global _last_sent
    try:
        path, url = os.environ.get(STATUS_FILE_ENV), os.environ.get(SERVER_URL_ENV)
        if os.environ.get("RANK", "0") != "0" or not (path or url):
            return False
        with _lock:
            now = time.monotonic()
            if _last_sent is not None and now - _last_sent < MIN_INTERVAL_SECONDS:
                return False
            status = trainer_status(progress_percent, estimated_remaining_seconds, metrics)
            sent = False
            if path:
                temporary = f"{path}.{os.getpid()}.tmp"
                with open(temporary, "w") as file:
                    json.dump(status, file)
                os.replace(temporary, path)
                sent = True
            if url:
                sent = _post(url, status) or sent
            if sent:
                _last_sent = now
            return sent
    except Exception as exc:  # training must never fail for a progress report
        logger.warning("update_trainjob_status failed: %s", exc)
        return False


def _post(url: str, status: dict[str, Any]) -> bool:
    """Post the report to the Trainer's status server (TLS verified, the pod's token)."""
    token_path = os.environ.get(SERVER_TOKEN_ENV)
    if not token_path or not os.path.exists(token_path):
        return False
    with open(token_path) as file:
        token = file.read().strip()
    ca_file = os.environ.get(SERVER_CA_ENV)
    context = ssl.create_default_context(
        cafile=ca_file if ca_file and os.path.exists(ca_file) else None
    )
    request = urllib.request.Request(  # noqa: S310 - the server the Trainer configured
        url,
        data=json.dumps({"trainerStatus": status}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError as exc:
        logger.warning("posting the status to %s failed: %s", url, exc)
        return False


@dataclass
class TrainerStatus:
    """Training progress as rank 0 last reported it with `update_trainjob_status` (the
    Trainer API's ``trainerStatus``)."""

    last_updated_time: datetime
    progress_percentage: int | None = None
    estimated_remaining_seconds: int | None = None
    metrics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: Any) -> TrainerStatus | None:
        """Read from its JSON form; None when there is none (or it cannot be read)."""
        try:
            return cls(
                last_updated_time=datetime.fromisoformat(
                    str(data["lastUpdatedTime"]).replace("Z", "+00:00")
                ),
                progress_percentage=data.get("progressPercentage"),
                estimated_remaining_seconds=data.get("estimatedRemainingSeconds"),
                metrics={str(m["name"]): str(m["value"]) for m in data.get("metrics") or []},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
