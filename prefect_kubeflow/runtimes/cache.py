"""The on-disk cache of what runtime sources yielded: one JSON file per source, holding the
parsed runtimes (so a warm read parses no YAML) and the errors of files that failed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_kubeflow.errors import (
    InvalidRuntimeSourceError,
    RuntimeFetchError,
    RuntimeParseError,
    RuntimeSourceError,
)
from prefect_kubeflow.files import write_json_atomic
from prefect_kubeflow.runtimes.parsing import RuntimeSpec

CACHE_FORMAT = 2
_ERROR_TYPES: dict[str, type[RuntimeSourceError]] = {
    cls.__name__: cls
    for cls in (InvalidRuntimeSourceError, RuntimeFetchError, RuntimeParseError, RuntimeSourceError)
}


@dataclass(frozen=True)
class CacheEntry:
    """A source's cached result and when it was fetched."""

    fetched_at: float
    specs: list[RuntimeSpec]
    errors: list[RuntimeSourceError]


class RuntimeCache:
    """Cached source results under `folder`, fresh for `ttl_seconds` by `clock`."""

    def __init__(self, folder: Path, ttl_seconds: float, clock: Callable[[], float]) -> None:
        self.folder = folder
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def get(self, key: str) -> CacheEntry | None:
        """The entry stored under `key`, fresh or not; None if absent or unreadable."""
        try:
            data = json.loads(self._path(key).read_text())
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                return None
            return CacheEntry(
                fetched_at=float(data["fetched_at"]),
                specs=[RuntimeSpec.from_dict(spec) for spec in data["runtimes"]],
                errors=[_error(*entry) for entry in data["errors"]],
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # a missing or damaged entry is a miss; the next fetch rewrites it

    def is_fresh(self, entry: CacheEntry) -> bool:
        """Whether `entry` is younger than the TTL."""
        return 0 <= self.clock() - entry.fetched_at < self.ttl_seconds

    def put(self, key: str, specs: list[RuntimeSpec], errors: list[RuntimeSourceError]) -> None:
        """Store a source's result, stamped with the clock's time.

        Raises:
            OSError: the cache folder cannot be written.
        """
        data: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "key": key,
            "fetched_at": self.clock(),
            "runtimes": [spec.to_dict() for spec in specs],
            "errors": [
                [type(err).__name__, err.source, err.reason, getattr(err, "status", None)]
                for err in errors
            ],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._path(key), data)


def _error(kind: str, source: str, reason: str, status: int | None) -> RuntimeSourceError:
    if kind == RuntimeFetchError.__name__:
        return RuntimeFetchError(source, reason, status=status)
    return _ERROR_TYPES.get(kind, RuntimeSourceError)(source, reason)
