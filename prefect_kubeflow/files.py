"""Writing files that other processes read while they change."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON so that readers never see half a file, even with several writers."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(data, file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_tree(path: Path, what: str) -> None:
    """Remove the folder `path` if it exists; a failure to is logged (naming `what` it held),
    not raised: it comes up while cleaning up, and must not hide why the caller cleans up."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("could not remove %s %s: %s", what, path, exc)
