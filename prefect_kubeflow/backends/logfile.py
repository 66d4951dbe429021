"""Node log files: bytes split into lines, one record per line, read back lazily.

A record is ``O <text>\\n`` (stdout) or ``E <text>\\n`` (stderr). Splitting carries a partial
line across chunks, keeps only the last ``\\r`` segment of a line (progress bars), and cuts lines
longer than `MAX_LINE_BYTES` into pieces, so memory stays bounded and no piece exceeds the
Prefect API's log size limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MAX_LINE_BYTES = 256 * 1024
STDOUT, STDERR = "stdout", "stderr"
_TAGS = {STDOUT: b"O ", STDERR: b"E "}
_STREAMS = {b"O": STDOUT, b"E": STDERR}
_READ_BLOCK = 64 * 1024


@dataclass(frozen=True)
class LogLine:
    """One line a node wrote, without its newline, and when (Unix seconds)."""

    stream: str
    text: str
    time: float = field(default=0.0, compare=False)


def coalesce(line: bytes) -> bytes:
    """Keep what a terminal would show: the text after the last carriage return."""
    line = line.removesuffix(b"\r")
    cut = line.rfind(b"\r")
    return line if cut < 0 else line[cut + 1 :]


class LineSplitter:
    """Turn a byte stream, chunk by chunk, into complete lines."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._tail = b""
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        """Lines completed by `chunk`; the unfinished rest is kept for the next call."""
        pieces = (self._tail + chunk).split(b"\n")
        self._tail = pieces.pop()
        lines = [coalesce(p) for p in pieces]
        cut = self._tail.rfind(b"\r", 0, len(self._tail) - 1)
        if cut >= 0:  # a progress bar redrawing: only its latest frame matters
            self._tail = self._tail[cut + 1 :]
        while len(self._tail) >= self._max:
            lines.append(self._tail[: self._max])
            self._tail = self._tail[self._max :]
        return lines

    def close(self) -> list[bytes]:
        """The last, unterminated line, if any."""
        tail, self._tail = self._tail, b""
        return [coalesce(tail)] if tail else []


class NodeLogWriter:
    """Append records of one node's two streams to its log file."""

    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._splitters = {STDOUT: LineSplitter(), STDERR: LineSplitter()}

    def write(self, stream: str, chunk: bytes) -> None:
        """Record the lines `chunk` completes and flush them, so followers see them now."""
        self._put(stream, self._splitters[stream].feed(chunk))
        self._file.flush()

    def _put(self, stream: str, lines: list[bytes]) -> None:
        prefix = _TAGS[stream] + b"%.6f " % time.time()
        self._file.write(b"".join(prefix + line + b"\n" for line in lines))

    def close(self) -> None:
        """Record both streams' unterminated last lines and close the file."""
        for stream, splitter in self._splitters.items():
            self._put(stream, splitter.close())
        self._file.close()


def _parse(record: bytes) -> LogLine:
    stamp, _, text = record[2:].partition(b" ")
    return LogLine(_STREAMS.get(record[:1], STDOUT), text.decode("utf-8", "replace"), float(stamp))


def _tail_offset(file: IO[bytes], lines: int) -> int:
    """The offset where the last `lines` records start, reading backwards block by block."""
    end = file.seek(0, os.SEEK_END)
    position, newlines = end, 0
    while position > 0:
        size = min(_READ_BLOCK, position)
        position -= size
        file.seek(position)
        block = file.read(size)
        # The file ends with a newline, so `lines` records need lines + 1 newlines found.
        for index in range(len(block) - 1, -1, -1):
            if block[index] == 0x0A:
                newlines += 1
                if newlines == lines + 1:
                    return position + index + 1
    return 0


def read_node_log(
    path: Path,
    follow: bool = False,
    is_done: Callable[[], bool] = lambda: True,
    tail_lines: int | None = None,
    poll_interval: float = 0.05,
) -> Iterator[LogLine]:
    """Yield a node's lines; with `follow`, keep waiting for new ones until `is_done()`."""
    while not path.exists():
        if not follow or is_done():
            return
        time.sleep(poll_interval)
    with open(path, "rb") as file:
        if tail_lines is not None:
            file.seek(_tail_offset(file, tail_lines))
        partial = b""
        finishing = False
        while True:
            chunk = file.read(_READ_BLOCK)
            if chunk:
                records = (partial + chunk).split(b"\n")
                partial = records.pop()
                for record in records:
                    yield _parse(record)
                continue
            if not follow or finishing:
                return
            # Once the writer is done, one more pass reads what it wrote before it finished.
            finishing = is_done()
            if not finishing:
                time.sleep(poll_interval)
