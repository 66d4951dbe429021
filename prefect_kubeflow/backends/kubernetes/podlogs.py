"""A pod's log as `LogLine`s, each with the time the container wrote it.

Following resumes after any interruption (a dropped connection, an API restart, a silent
stream): it asks again from the last second seen (``sinceTime``) and skips what it already
delivered, by the lines' own timestamps, so no line is lost and none comes twice. Once the
container has ended, one last read from that point makes sure the tail is complete.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import urllib3

from prefect_kubeflow.backends.kubernetes.api import Cluster
from prefect_kubeflow.backends.logfile import MAX_LINE_BYTES, STDOUT, LogLine, coalesce
from prefect_kubeflow.errors import BackendError, ClusterPermissionError, ClusterUnavailableError

# pod name, and whether its container has ended; None: the pod (or its job) is gone.
PodState = Callable[[], "tuple[str, bool] | None"]
logger = logging.getLogger(__name__)
_CHUNK = 64 * 1024


@dataclass
class Position:
    """Where a stream got to, for resuming it without a line lost or repeated: the newest
    second of the lines delivered, and how many lines of each exact time of it and of the
    second before were delivered. Lines may arrive out of their times' order (stdout and
    stderr, or a node's processes, are copied apart): none is dropped for that, and a resume
    starts a second early (``sinceTime`` counts whole seconds), so a late line of the second
    before is not skipped."""

    second: int | None = None
    seen: Counter[tuple[int, int]] = field(default_factory=Counter)

    def since_time(self) -> str | None:
        """``sinceTime`` to resume from: the second before the newest one seen."""
        if self.second is None:
            return None
        since = self.second - 1
        return datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def replay(self) -> Counter[tuple[int, int]]:
        """The lines a resumed stream sends again (from ``since_time``), to pass over."""
        return Counter(self.seen)

    def accept(self, stamp: tuple[int, int], replayed: Counter[tuple[int, int]]) -> bool:
        """Whether a line of time `stamp` is new (not one of `replayed` still to pass over);
        a new one is recorded."""
        if replayed[stamp] > 0:
            replayed[stamp] -= 1
            return False
        if self.second is None or stamp[0] > self.second:
            self.second = stamp[0]
            self.seen = Counter({k: n for k, n in self.seen.items() if k[0] >= self.second - 1})
        if stamp[0] >= self.second - 1:
            self.seen[stamp] += 1
        return True


def parse_stamp(stamp: bytes) -> tuple[tuple[int, int], float]:
    """An RFC 3339 (nano) UTC time as (seconds, nanoseconds) and as float seconds."""
    text = stamp.decode("ascii").rstrip("Z")
    whole, _, fraction = text.partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp())
    nanos = int((fraction + "000000000")[:9])
    return (seconds, nanos), seconds + nanos / 1e9


def split_records(response: urllib3.BaseHTTPResponse) -> Iterator[tuple[tuple[int, int], LogLine]]:
    """The response's timestamped lines, as they arrive; a progress bar's last frame only,
    a very long line in pieces."""
    partial = b""
    for chunk in response.stream(_CHUNK, decode_content=True):
        records = (partial + chunk).split(b"\n")
        partial = records.pop()
        for record in records:
            yield from _parse(record)
    if partial:
        yield from _parse(partial)


def _parse(record: bytes) -> Iterator[tuple[tuple[int, int], LogLine]]:
    stamp, _, text = record.partition(b" ")
    try:
        key, at = parse_stamp(stamp)
    except ValueError:
        return  # not a log line (a torn record at an interruption): it comes again
    text = coalesce(text)
    for start in range(0, max(len(text), 1), MAX_LINE_BYTES):
        piece = text[start : start + MAX_LINE_BYTES].decode("utf-8", "replace")
        yield key, LogLine(STDOUT, piece, at)


def read_pod_log(cluster: Cluster, pod: str, tail_lines: int | None) -> Iterator[LogLine]:
    """The pod's lines so far (the last `tail_lines` only, if given)."""
    if tail_lines == 0:
        return
    response = cluster.pod_log(pod, follow=False, tail_lines=tail_lines)
    try:
        for _, line in split_records(response):
            yield line
    except urllib3.exceptions.HTTPError as exc:  # the pod went away as its log was read
        raise BackendError(f"reading the log of pod {pod} was cut short: {exc}") from exc
    finally:
        response.release_conn()


def follow_pod_log(
    cluster: Cluster,
    pod_state: PodState,
    tail_lines: int | None,
    idle_timeout: float,
    poll_interval: float,
) -> Iterator[LogLine]:
    """Every line of the pod until its container has ended and its log is complete (or the
    pod is gone), resuming across interruptions."""
    position = Position()
    while True:
        try:
            state = pod_state()
        except ClusterUnavailableError as exc:  # an outage: the pod runs on; so do we
            logger.info("reading pod state failed (%s); trying again", exc)
            time.sleep(poll_interval)
            continue
        if state is None:
            return
        pod, ended = state
        replayed = position.replay()
        try:
            response = cluster.pod_log(
                pod,
                follow=not ended,
                tail_lines=tail_lines if position.second is None else None,
                since_time=position.since_time(),
                read_timeout=idle_timeout,
            )
            try:
                for stamp, line in split_records(response):
                    if position.accept(stamp, replayed):
                        yield line
            finally:
                response.release_conn()
        except (urllib3.exceptions.HTTPError, OSError, BackendError) as exc:
            if isinstance(exc, ClusterPermissionError):
                raise
            logger.info("the log stream of pod %s broke (%s); resuming", pod, exc)
            time.sleep(poll_interval)
            continue
        if ended:
            return  # this read started after the end: the log is complete
        tail_lines = None if position.second is not None else tail_lines
