"""A job's folder on this machine, shared by the backends whose nodes write to it (local
processes, containers): the shipped function, per-node logs and exit files, the ranks'
tracebacks, and the failure message built from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import JobSpec, exit_header
from prefect_kubeflow.backends.entrypoint import RESULT_FILE
from prefect_kubeflow.backends.logfile import STDERR, read_node_log
from prefect_kubeflow.files import write_json_atomic


def write_function(job_dir: Path, spec: JobSpec) -> None:
    """Ship the training function: its source and its name and JSON arguments."""
    (job_dir / "function.py").write_text(spec.function_source)
    write_json_atomic(
        job_dir / "function.json", {"name": spec.function_name, "args": spec.func_args}
    )


def read_result(job_dir: Path) -> bytes | None:
    """Rank 0's pickled return value (written by the entrypoint); None without one."""
    try:
        return (job_dir / RESULT_FILE).read_bytes()
    except FileNotFoundError:
        return None


def node_log(job_dir: Path, node_index: int) -> Path:
    """The node's log file (written by its keeper)."""
    return job_dir / f"{constants.NODE}-{node_index}.log"


def node_exit_file(job_dir: Path, node_index: int) -> Path:
    """The node's exit file, written by its keeper once the log is complete."""
    return job_dir / f"{constants.NODE}-{node_index}.exit"


def read_exit(job_dir: Path, node_index: int) -> dict[str, Any] | None:
    """``{"code", "orphaned"}`` of an ended node, with ``"at"`` (when it ended, from the file's
    time); None while it runs."""
    path = node_exit_file(job_dir, node_index)
    try:
        ended = dict(json.loads(path.read_text()))
        ended["at"] = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return ended


def node_failure(job_dir: Path, node_index: int, code: int, nproc_per_node: int) -> str:
    """Why a node failed: how it ended, then a rank's traceback or the node's last stderr."""
    header = exit_header(node_index, code)
    first_rank = node_index * nproc_per_node
    for global_rank in range(first_rank, first_rank + nproc_per_node):
        error = job_dir / "errors" / f"rank-{global_rank}.txt"
        if error.exists():
            return f"{header}; rank {global_rank} raised:\n{error.read_text().rstrip()}"
    lines = list(read_node_log(node_log(job_dir, node_index), tail_lines=200))
    errors = [line.text for line in lines if line.stream == STDERR][-20:]
    return header + ("\n" + "\n".join(errors) if errors else "")
