"""The process hosting one local job's nodes: the local backend's engine.

``python -m prefect_kubeflow.backends.nodehost JOB_DIR VENV_DIR GRACE_SECONDS``

It builds the job's venv if it has packages to install, starts one keeper per node
(`prefect_kubeflow.backends.node`, which runs the torchrun agent and writes the node's log),
reaps them, and when a node fails stops the others at once (gang semantics), as the Trainer's
JobSet does on a cluster. It records the exit of a keeper that was killed before it could. On
SIGTERM (`delete`) it stops every node and exits. Its keepers die with it. No Prefect here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.entrypoint import RESTART_COUNT_ENV
from prefect_kubeflow.backends.jobfiles import node_exit_file, node_log, read_restarts
from prefect_kubeflow.backends.local import ERROR_FILE, LocalJob
from prefect_kubeflow.backends.torchrun import ENTRYPOINT, torchrun_argv
from prefect_kubeflow.backends.venv import ensure_venv
from prefect_kubeflow.errors import BackendError
from prefect_kubeflow.files import write_json_atomic

MASTER_ADDR = "127.0.0.1"
logger = logging.getLogger("prefect_kubeflow.nodehost")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((MASTER_ADDR, 0))
        return int(sock.getsockname()[1])


def start_keepers(
    job: LocalJob,
    job_dir: Path,
    venv_dir: Path,
    keepers: list[subprocess.Popen[bytes]],
    stopping: threading.Event,
) -> None:
    """Start every node's keeper into `keepers`, unless `stopping`; build the package venv
    first if the job has packages."""
    python = sys.executable
    if job.packages_to_install:
        python = str(
            ensure_venv(
                venv_dir, job.packages_to_install, job.pip_index_urls, job_dir / "setup.log"
            )
        )
    port = _free_port()
    # Merged onto ours. The keepers carry the job's marker too: a keeper orphaned by a dead
    # host is found (and stopped) before the next attempt starts.
    env = {
        **os.environ,
        **job.env,
        RESTART_COUNT_ENV: str(len(read_restarts(job_dir))),
        processes.JOB_ID_ENV: job.job_id,
    }
    workdir = job.workdir if Path(job.workdir).is_dir() else str(job_dir)
    num_nodes, nproc = job.record.num_nodes, job.record.nproc_per_node
    for rank in range(num_nodes):
        if stopping.is_set():  # deleted while the venv was built or the nodes started
            return
        agent = torchrun_argv(
            python, num_nodes, rank, nproc, MASTER_ADDR, port, ENTRYPOINT, job_dir
        )
        keeper = [
            sys.executable,
            "-m",
            "prefect_kubeflow.backends.node",
            str(node_log(job_dir, rank)),
            str(node_exit_file(job_dir, rank)),
            job.job_id,
            "--",
            *agent,
        ]
        # A keeper is silent unless it crashes; its traceback then lands in host.log.
        keepers.append(
            subprocess.Popen(
                keeper, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, cwd=workdir
            )
        )


def main(job_dir: Path, venv_dir: Path, grace_period: float) -> int:
    """Run the job's nodes to their end; the exit code says whether every node succeeded."""
    job = LocalJob.read(job_dir)
    stopping = threading.Event()
    keepers: list[subprocess.Popen[bytes]] = []

    def stop_nodes() -> None:
        """Stop every keeper started so far; safe to call again (later keepers too)."""
        first = not stopping.is_set()
        stopping.set()
        for keeper in list(keepers):  # each passes SIGTERM on to its agent's process group
            processes.signal_process(keeper.pid, signal.SIGTERM)
        if first:  # what ignores SIGTERM is killed after the grace period
            threading.Thread(
                target=processes.kill_marked, args=(job.job_id, grace_period), daemon=True
            ).start()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop_nodes()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        start_keepers(job, job_dir, venv_dir, keepers, stopping)
    except (OSError, BackendError) as exc:
        (job_dir / ERROR_FILE).write_text(f"TrainJob {job.record.name!r} could not start: {exc}")
        stop_nodes()
        _reap_all(keepers, job_dir, lambda: None)
        return 1
    if stopping.is_set():  # SIGTERM came while keepers were starting: stop those started
        stop_nodes()
    # From here on this process only waits: the nodes come first on a busy machine.
    os.nice(processes.BOOKKEEPING_NICENESS)
    codes = _reap_all(keepers, job_dir, stop_nodes)
    if stopping.is_set():  # what a node's failure or SIGTERM set stopping may still be alive
        processes.kill_marked(job.job_id, grace_period)
    return 0 if all(code == 0 for code in codes.values()) else 1


def _reap_all(
    keepers: list[subprocess.Popen[bytes]], job_dir: Path, on_failure: Callable[[], None]
) -> dict[int, int]:
    """Wait for every keeper; record the exit of one killed before it could; call
    `on_failure` when a node fails. Exit codes by node index."""
    codes: dict[int, int] = {}

    def reap(rank: int) -> None:
        codes[rank] = keepers[rank].wait()
        exit_file = node_exit_file(job_dir, rank)
        try:
            if not exit_file.exists():  # the keeper itself was killed
                write_json_atomic(exit_file, {"code": codes[rank], "orphaned": False})
        except OSError as exc:  # the job's folder is being deleted
            logger.info("node-%s's exit not recorded: %s", rank, exc)
        if codes[rank] != 0:
            on_failure()

    reapers = [threading.Thread(target=reap, args=(rank,)) for rank in range(len(keepers))]
    for reaper in reapers:
        reaper.start()
    for reaper in reapers:
        reaper.join()
    return codes


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])))
