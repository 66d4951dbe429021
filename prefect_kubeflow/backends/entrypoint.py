"""Run the shipped training function in a torchrun worker. Standard library only.

Usage: ``python entrypoint.py JOB_DIR`` with ``JOB_DIR/function.py`` (the function's source) and
``JOB_DIR/function.json`` (``{"name": ..., "args": {...}}``). No shell is involved.

Rank 0's return value is pickled to ``JOB_DIR/result.pkl`` with cloudpickle (the host's copy,
which the backends put on the path; plain pickle where there is none). A value that cannot be
pickled fails rank 0, naming its type.
"""

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

_PR_SET_PDEATHSIG = 1
RESULT_FILE = "result.pkl"
# The job's gang restarts so far, set by the backend on every node of an attempt. torchrun
# sets TORCHELASTIC_RESTART_COUNT to its own (per-agent) count; the function sees the sum.
RESTART_COUNT_ENV = "PREFECT_KUBEFLOW_RESTART_COUNT"
TORCHELASTIC_RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
# Where rank 0's progress reports (`prefect_kubeflow.update_trainjob_status`) go.
STATUS_FILE_ENV = "PREFECT_KUBEFLOW_STATUS_FILE"
STATUS_FILE = "trainer-status.json"
# torchrun before 2.0 holds a failed node in its exit barrier until every other node arrives
# (300 s), so the gang's teardown, which starts when a node ends, would wait that long. A failed
# rank ends its agent if the agent is still there this long after (newer ones have exited).
AGENT_GRACE_SECONDS = 3.0


def _die_with_parent() -> None:
    """Let the kernel kill this worker when its torchrun agent dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the agent died before the call above
        sys.exit(1)


def main(job_dir: str) -> None:
    """Load the function and its arguments from `job_dir` and call it."""
    _die_with_parent()
    os.environ[STATUS_FILE_ENV] = os.path.join(job_dir, STATUS_FILE)
    restarts = int(os.environ.get(RESTART_COUNT_ENV) or 0)
    os.environ[TORCHELASTIC_RESTART_COUNT] = str(
        restarts + int(os.environ.get(TORCHELASTIC_RESTART_COUNT) or 0)
    )
    # One write per line: lines of ranks sharing the node's pipe never tear (writes up to
    # PIPE_BUF bytes are atomic), and each line still arrives as soon as it is printed.
    # write_through is off too: PYTHONUNBUFFERED turns it on, and then print() writes a line's
    # text and its newline separately.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]
    # Python put this file's folder first on sys.path; the user's working directory belongs there.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.getcwd()] + [p for p in sys.path if os.path.abspath(p or ".") != here]
    source_path = os.path.join(job_dir, "function.py")
    with open(os.path.join(job_dir, "function.json")) as file:
        meta = json.load(file)
    with open(source_path) as file:
        source = file.read()
    namespace: dict[str, Any] = {
        "__name__": "__prefect_kubeflow_function__",
        "__file__": source_path,
    }
    exec(compile(source, source_path, "exec"), namespace)  # noqa: S102 - the user's own function
    try:
        result = namespace[meta["name"]](**meta["args"])
        if os.environ.get("RANK", "0") == "0" and result is not None:
            _write_result(job_dir, result)
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)) or (
            isinstance(exc, SystemExit) and exc.code not in (None, 0)
        ):
            _record_error(job_dir)
            _end_the_agent_after_grace()
        raise


def _write_result(job_dir: str, result: Any) -> None:
    """Pickle rank 0's return value where the backend reads the job's result."""
    try:
        import cloudpickle as pickler
    except ImportError:  # an image without it, on a cluster: plain pickle
        import pickle as pickler
    try:
        data = pickler.dumps(result)
    except Exception as exc:
        kind = f"{type(result).__module__}.{type(result).__qualname__}"
        raise TypeError(
            f"rank 0 returned a {kind}, which cannot be pickled ({exc}); return plain Python "
            "values, and move tensors to the CPU first (tensor.cpu())"
        ) from exc
    path = os.path.join(job_dir, RESULT_FILE)
    with open(path + ".tmp", "wb") as file:
        file.write(data)
    os.replace(path + ".tmp", path)


def _record_error(job_dir: str) -> None:
    """Leave this rank's traceback where the job's failure message is built from."""
    rank = os.environ.get("RANK", "0")
    errors = os.path.join(job_dir, "errors")
    try:
        os.makedirs(errors, exist_ok=True)
        with open(os.path.join(errors, f"rank-{rank}.txt"), "w") as file:
            file.write("".join(traceback.format_exc().splitlines(keepends=True)[-40:]))
    except OSError:
        pass  # a read-only job folder: the traceback is still in the node's log


def _end_the_agent_after_grace() -> None:
    """Fork a watchdog that SIGTERMs this worker's torchrun agent if it outlives the grace."""
    agent = os.getppid()
    if agent <= 1:
        return
    try:
        if os.fork():
            return
    except OSError:
        return
    try:  # the watchdog: it holds none of the node's pipes, and runs no Python clean-up
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        deadline = time.monotonic() + AGENT_GRACE_SECONDS
        while time.monotonic() < deadline:
            os.kill(agent, 0)  # ProcessLookupError once the agent has gone
            time.sleep(0.1)
        os.kill(agent, signal.SIGTERM)
    except OSError:
        pass
    finally:
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
