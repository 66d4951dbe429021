"""One node's keeper: runs its torchrun agent and copies the agent's output into the node log.

``python -m prefect_kubeflow.backends.node LOG EXIT_FILE JOB_ID [SETUP_JSON] -- ARGV...``

SETUP_JSON, when given, is an argv (a JSON list) run first, its output in the same log (a
container node's ``pip install``); if it fails, the node ends with its code.

A process of its own (not a thread of the supervisor) so that moving training output to disk
never competes with Prefect bookkeeping for a GIL: training only ever waits on this loop. It
writes ``{"code": ..., "orphaned": ...}`` to EXIT_FILE once the log is complete, and exits with
the agent's code. It dies with its parent: the kernel sends it SIGTERM, which it passes on to
the agent, and the exit file then says the node was orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from prefect_kubeflow.backends.eventlog import EVENTS_FILE, NODE_KIND, append_event
from prefect_kubeflow.backends.logfile import STDERR, STDOUT, NodeLogWriter
from prefect_kubeflow.backends.processes import JOB_ID_ENV
from prefect_kubeflow.files import write_json_atomic

_PR_SET_PDEATHSIG = 1
_F_SETPIPE_SZ = 1031
PIPE_BYTES = 1024 * 1024


def pump(process: subprocess.Popen[bytes], writer: NodeLogWriter) -> None:
    """Copy both pipes of `process` into `writer` until both are closed."""
    selector = selectors.DefaultSelector()
    assert process.stdout is not None and process.stderr is not None
    selector.register(process.stdout, selectors.EVENT_READ, STDOUT)
    selector.register(process.stderr, selectors.EVENT_READ, STDERR)
    while selector.get_map():
        for key, _ in selector.select():
            chunk = os.read(key.fd, PIPE_BYTES)
            if chunk:
                writer.write(key.data, chunk)
            else:
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]


def main(
    log: str, exit_file: str, job_id: str, argv: list[str], setup: list[str] | None = None
) -> int:
    """Run `setup` (if any), then `argv` as the node's agent; log their output, record and
    return the exit code."""
    # Not on Linux, this fails: the supervisor's teardown still stops the agent.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    parent = os.getppid()
    orphaned = stopped = False
    running: subprocess.Popen[bytes] | None = None

    def stop_agent(signum: int, frame: FrameType | None) -> None:
        nonlocal orphaned, stopped
        orphaned = orphaned or os.getppid() != parent
        stopped = True
        if running is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_agent)
    writer = NodeLogWriter(Path(log))
    code = 0
    for command in [setup, argv] if setup else [argv]:
        if stopped:
            code = -signal.SIGTERM
            break
        running = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, JOB_ID_ENV: job_id},
            start_new_session=True,
        )
        for stream in (running.stdout, running.stderr):
            # Room for bursts: a rank printing fast seldom waits for this loop to drain the pipe.
            with contextlib.suppress(OSError):
                fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
        if os.getppid() != parent or stopped:  # the parent died before prctl took effect
            stop_agent(signal.SIGTERM, None)
        if command is argv:
            _event(exit_file, "Started", f"started (pid {running.pid})")
        pump(running, writer)
        code = running.wait()
        if code != 0:
            break
    writer.close()
    write_json_atomic(Path(exit_file), {"code": code, "orphaned": orphaned})
    _event(exit_file, "Completed" if code == 0 else "Failed", _how_it_ended(code))
    return code


def _event(exit_file: str, reason: str, message: str) -> None:
    """Record an event of this node in the job's event log (beside its exit file)."""
    node = Path(exit_file).stem
    with contextlib.suppress(OSError):  # the job's folder is being deleted
        append_event(
            Path(exit_file).parent / EVENTS_FILE, NODE_KIND, node, reason, f"{node} {message}"
        )


def _how_it_ended(code: int) -> str:
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(number).name}"
    return f"exited with {code}"


if __name__ == "__main__":
    separator = sys.argv.index("--")
    log_path, exit_path, job, *setup_json = sys.argv[1:separator]
    setup_argv = json.loads(setup_json[0]) if setup_json else None
    exit_code = main(log_path, exit_path, job, sys.argv[separator + 1 :], setup_argv)
    # A process cannot exit with -15: report a signal death as a shell does, 128 + signal.
    sys.exit(128 - exit_code if exit_code < 0 else exit_code)
