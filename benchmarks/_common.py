"""Shared set-up for the benchmarks: a private Prefect home and user folders, cleaned up after."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def isolated_home() -> Iterator[Path]:
    """Point Prefect and the user folders at a temporary directory; stop what ran there."""
    root = Path(tempfile.mkdtemp(prefix="pk-bench-"))
    saved = dict(os.environ)
    os.environ.update(
        PREFECT_HOME=str(root / "prefect-home"),
        XDG_CACHE_HOME=str(root / "cache"),
        XDG_DATA_HOME=str(root / "data"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
    )
    os.environ.pop("PREFECT_API_URL", None)
    try:
        yield root
    finally:
        state = root / "cache" / "prefect-kubeflow" / "server" / "server.json"
        if state.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(json.loads(state.read_text())["pid"], signal.SIGTERM)
        os.environ.clear()
        os.environ.update(saved)
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


def supervisor_of(name: str, timeout: float = 300.0) -> tuple[int, int, str]:
    """(pid, start time, flow run id) of the process running job `name`'s flow, read from
    the labels of its flow run, as the client finds it."""
    from prefect_kubeflow.flows import runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = runs.find_flow_runs([name]).get(name)
        supervisor = runs.supervisor_of(run) if run is not None else None
        if run is not None and supervisor is not None:
            return supervisor[1], supervisor[2], str(run.id)
        time.sleep(0.1)
    raise TimeoutError(f"no flow run of {name} named its process within {timeout} s")


def bare_torchrun_first_line(script: Path, nnodes: int = 1) -> float:
    """Seconds from starting bare torchrun on `script` to its first stdout line."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
         "--node_rank", "0", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
         "--master_port", "29533", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.readline()
    elapsed = time.perf_counter() - start
    process.wait()
    return elapsed


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, n={len(values)})"
