"""A job's event log: one JSON line per event, appended by whoever made it happen (a backend
creating or stopping the job, a node's keeper starting or ending its node). Standard library
only: a keeper inside a container imports it from the mounted package."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

EVENTS_FILE = "events.jsonl"
NODE_KIND = "Node"  # a node's events name it "node-<i>"; readers add the job's name


def append_event(events_file: Path, kind: str, obj: str, reason: str, message: str) -> None:
    """Append one event: one JSON line written with one ``write`` to a file opened for
    appending, so writers in several processes (and containers) never tear each other's
    lines."""
    line = json.dumps(
        {
            "kind": kind,
            "object": obj,
            "reason": reason,
            "message": message,
            "time": datetime.now(timezone.utc).isoformat(),
        }
    )
    fd = os.open(events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
