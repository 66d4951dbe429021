"""Local process backend: each node is a torchrun agent subprocess on this machine.

A job is a directory: ``job.json`` (the record), ``function.py``/``function.json`` (what runs),
``owner.json`` (the process that supervises the nodes), ``node-<i>.log`` and ``node-<i>.exit``.
Status is derived from those files and from which processes live, so any process sees the same
jobs. Nodes rendezvous statically on 127.0.0.1, node ``i`` having node rank ``i``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir, user_data_dir

from prefect_kubeflow import constants
from prefect_kubeflow.backends import processes
from prefect_kubeflow.backends.base import JobSpec, SupervisorCommand
from prefect_kubeflow.backends.jobfiles import (
    flow_run_id,
    lost_flow_run_id,
    node_exit_file,
    node_failure,
    node_log,
    owner_alive,
    read_owner,
    start_owner,
    stop_supervisor,
    write_flow_run,
    write_function,
)
from prefect_kubeflow.backends.logfile import LogLine, read_node_log
from prefect_kubeflow.backends.torchrun import ENTRYPOINT, resolve_nproc_per_node, torchrun_argv
from prefect_kubeflow.backends.venv import ensure_venv
from prefect_kubeflow.errors import BackendError, JobNotFoundError
from prefect_kubeflow.files import write_json_atomic
from prefect_kubeflow.types import Runtime, RuntimeTrainer, Step, TrainerType, TrainJob

MASTER_ADDR = "127.0.0.1"
_ERROR_FILE = "error.txt"


def local_gpu_count() -> int:
    """NVIDIA GPUs visible on this machine, counted without importing torch."""
    return sum(1 for d in Path("/dev").glob("nvidia[0-9]*"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((MASTER_ADDR, 0))
        return int(sock.getsockname()[1])


@dataclass
class _Record:
    """The job record kept in ``job.json``."""

    name: str
    job_id: str
    created: str
    runtime: dict[str, Any]
    num_nodes: int
    nproc_per_node: int
    device: str
    function_name: str
    func_args: dict[str, Any]
    packages_to_install: list[str]
    pip_index_urls: list[str]
    env: dict[str, str]
    resources_per_node: dict[str, Any]
    workdir: str


class LocalProcessBackend:
    """Runs each node as a torchrun agent subprocess; jobs live under `jobs_dir`."""

    # Handles of the nodes this process started, by job name: the only in-memory state, and
    # only for waiting on this process's own children.
    _started: dict[str, list[subprocess.Popen[bytes]]] = {}

    def __init__(self, jobs_dir: Path, venv_dir: Path, grace_period: float = 10.0) -> None:
        self.jobs_dir = jobs_dir
        self.venv_dir = venv_dir
        self.grace_period = grace_period

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> LocalProcessBackend:
        """Build from `LocalProcessBackendConfig`'s fields; unset folders get user defaults."""
        return cls(
            jobs_dir=Path(
                settings.get("jobs_dir") or Path(user_data_dir(constants.APP_NAME)) / "jobs"
            ),
            venv_dir=Path(
                settings.get("venv_cache_dir") or Path(user_cache_dir(constants.APP_NAME)) / "venvs"
            ),
            grace_period=float(settings.get("stop_grace_period_seconds", 10.0)),
        )

    # -- records -----------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.jobs_dir / name
        if "/" in name or name in ("", ".", "..") or not (path / "job.json").exists():
            raise JobNotFoundError(name, self._names())
        return path

    def _names(self) -> list[str]:
        if not self.jobs_dir.is_dir():
            return []
        return [p.parent.name for p in self.jobs_dir.glob("*/job.json")]

    def _load(self, name: str) -> tuple[_Record, Path]:
        """The job's record and folder, found once."""
        job_dir = self._dir(name)
        return _Record(**json.loads((job_dir / "job.json").read_text())), job_dir

    def create_job(self, spec: JobSpec, supervisor: SupervisorCommand | None) -> None:
        """Write the job's record; start `supervisor` detached, or make this process the owner."""
        nproc, device = resolve_nproc_per_node(
            spec.num_proc_per_node, spec.resources_per_node, local_gpu_count()
        )
        trainer = spec.runtime.trainer
        record = _Record(
            name=spec.name,
            job_id=uuid.uuid4().hex,
            created=datetime.now(timezone.utc).isoformat(),
            runtime={
                "name": spec.runtime.name,
                "framework": trainer.framework,
                "image": trainer.image,
                "num_nodes": trainer.num_nodes,
                "origin": spec.runtime.origin,
            },
            num_nodes=spec.num_nodes,
            nproc_per_node=nproc,
            device=device,
            function_name=spec.function_name,
            func_args=spec.func_args,
            packages_to_install=spec.packages_to_install,
            pip_index_urls=spec.pip_index_urls,
            env=spec.env,
            resources_per_node=spec.resources_per_node,
            workdir=os.getcwd(),
        )
        job_dir = self.jobs_dir / spec.name
        job_dir.mkdir(parents=True)
        try:
            write_function(job_dir, spec)
            start_owner(job_dir, supervisor)
            # job.json last: a job is listed only once it is complete.
            write_json_atomic(job_dir / "job.json", asdict(record))
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise

    def set_flow_run(self, name: str, flow_run_id: str, closed: bool = False) -> None:
        """Remember the flow run that runs the job; `closed` once its run is over."""
        write_flow_run(self._dir(name), flow_run_id, closed)

    def flow_run_id(self, name: str) -> str | None:
        """The flow run that runs the job, once it started."""
        return flow_run_id(self._dir(name))

    def lost_flow_run_id(self, name: str) -> str | None:
        """The flow run of a job whose supervising process died before closing it."""
        return lost_flow_run_id(self._dir(name))

    # -- running -----------------------------------------------------------------------------

    def start_job(self, name: str) -> None:
        """Start every node as a torchrun agent; build the package venv first if needed."""
        if name in self._started:
            return
        record, job_dir = self._load(name)
        if (job_dir / _ERROR_FILE).exists():
            raise BackendError((job_dir / _ERROR_FILE).read_text())
        python = sys.executable
        try:
            if record.packages_to_install:
                python = str(
                    ensure_venv(
                        self.venv_dir,
                        record.packages_to_install,
                        record.pip_index_urls,
                        job_dir / "setup.log",
                    )
                )
            port = _free_port()
            env = {**os.environ, **record.env}  # merged onto ours; the keeper adds the marker
            started: list[subprocess.Popen[bytes]] = []
            self._started[name] = started
            for rank in range(record.num_nodes):
                argv = torchrun_argv(
                    python,
                    record.num_nodes,
                    rank,
                    record.nproc_per_node,
                    MASTER_ADDR,
                    port,
                    ENTRYPOINT,
                    job_dir,
                )
                keeper_argv = [
                    sys.executable,
                    "-m",
                    "prefect_kubeflow.backends.node",
                    str(node_log(job_dir, rank)),
                    str(node_exit_file(job_dir, rank)),
                    record.job_id,
                    "--",
                    *argv,
                ]
                # A keeper is silent unless it crashes; its traceback then lands beside ours
                # (in supervisor.log when the job runs detached).
                started.append(
                    subprocess.Popen(
                        keeper_argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        env=env,
                        cwd=record.workdir if Path(record.workdir).is_dir() else job_dir,
                    )
                )
        except (OSError, BackendError) as exc:
            (job_dir / _ERROR_FILE).write_text(str(exc))
            self.stop_job(name)
            for keeper in self._started.pop(name, []):
                keeper.wait()
            raise BackendError(f"TrainJob {name!r} could not start: {exc}") from exc

    def wait_node(self, name: str, node_index: int) -> int:
        """Block until the node ends and its log is complete; its exit code."""
        keeper = self._started[name][node_index]
        code = keeper.wait()
        exit_file = node_exit_file(self._dir(name), node_index)
        if not exit_file.exists():  # the keeper itself was killed
            write_json_atomic(exit_file, {"code": code, "orphaned": False})
        return code

    def stop_job(self, name: str) -> None:
        """Stop every process of the job (torchrun agents and their workers)."""
        processes.kill_marked(self._load(name)[0].job_id, self.grace_period)

    # -- reading -----------------------------------------------------------------------------

    def get_job(self, name: str) -> TrainJob:
        """The job as its files and processes show it now."""
        return self._to_trainjob(*self._load(name))

    def list_jobs(self) -> list[TrainJob]:
        """Every job under `jobs_dir`, oldest first."""
        jobs = []
        for name in self._names():
            try:
                jobs.append(self.get_job(name))
            except (JobNotFoundError, FileNotFoundError):
                continue  # deleted while we listed
        return sorted(jobs, key=lambda job: job.creation_timestamp)

    def _to_trainjob(self, record: _Record, job_dir: Path) -> TrainJob:
        exits: dict[int, int] = {}
        orphaned = False
        for rank in range(record.num_nodes):
            exit_file = node_exit_file(job_dir, rank)
            if exit_file.exists():
                ended = json.loads(exit_file.read_text())
                exits[rank] = ended["code"]
                orphaned = orphaned or ended["orphaned"]
        supervisor_alive = owner_alive(job_dir)
        error = job_dir / _ERROR_FILE
        steps = []
        for rank in range(record.num_nodes):
            if rank in exits:
                status = constants.STEP_SUCCEEDED if exits[rank] == 0 else constants.STEP_FAILED
            elif not supervisor_alive:
                status = constants.STEP_FAILED
            elif (node_log(job_dir, rank)).exists():
                status = constants.STEP_RUNNING
            else:
                status = constants.STEP_PENDING
            steps.append(
                Step(
                    name=f"{constants.NODE}-{rank}",
                    status=status,
                    pod_name=f"{record.name}-{constants.NODE}-{rank}",
                    device=record.device,
                    device_count=str(record.nproc_per_node),
                )
            )
        statuses = {step.status for step in steps}
        message = None
        if error.exists() or constants.STEP_FAILED in statuses:
            status = constants.TRAINJOB_FAILED
            if error.exists():
                message = error.read_text()
            elif orphaned or (not supervisor_alive and not any(exits.values())):
                pid = (read_owner(job_dir) or {}).get("pid")
                message = f"the process supervising the job (pid {pid}) died"
            else:
                message = self._failure(record, job_dir, exits)
        elif statuses == {constants.STEP_SUCCEEDED}:
            status = constants.TRAINJOB_COMPLETE
        elif constants.STEP_RUNNING in statuses:
            status = constants.TRAINJOB_RUNNING
        else:
            status = constants.TRAINJOB_CREATED
        trainer = RuntimeTrainer(
            trainer_type=TrainerType.CUSTOM_TRAINER,
            framework=record.runtime["framework"],
            image=record.runtime["image"],
            num_nodes=record.runtime["num_nodes"],
            device=record.device,
            device_count=str(record.nproc_per_node),
        )
        return TrainJob(
            name=record.name,
            runtime=Runtime(
                name=record.runtime["name"], trainer=trainer, origin=record.runtime.get("origin")
            ),
            steps=steps,
            num_nodes=record.num_nodes,
            creation_timestamp=datetime.fromisoformat(record.created),
            status=status,
            message=message,
        )

    def _failure(self, record: _Record, job_dir: Path, exits: dict[int, int]) -> str:
        """Why the job failed: the first node to fail, with its last error lines."""
        failed = [r for r, code in exits.items() if code != 0]
        rank = min(failed, key=lambda r: node_exit_file(job_dir, r).stat().st_mtime_ns)
        return node_failure(job_dir, rank, exits[rank], record.nproc_per_node)

    def node_logs(
        self, name: str, node_index: int, follow: bool, tail_lines: int | None
    ) -> Iterator[LogLine]:
        """One node's lines from its log file; with `follow`, until the node has ended."""
        job_dir = self._dir(name)
        exit_file = node_exit_file(job_dir, node_index)
        keepers = self._started.get(name)

        def done() -> bool:
            if keepers is not None and keepers[node_index].poll() is not None:
                return True  # this process's own keeper ended, even one killed before its exit
            return exit_file.exists() or not job_dir.exists() or not owner_alive(job_dir)

        return read_node_log(node_log(job_dir, node_index), follow, done, tail_lines)

    # -- deleting ----------------------------------------------------------------------------

    def delete_job(self, name: str) -> None:
        """Stop the supervisor and every node process, then remove the job's directory."""
        record, job_dir = self._load(name)
        running = self._to_trainjob(record, job_dir).status in (
            constants.TRAINJOB_CREATED,
            constants.TRAINJOB_RUNNING,
        )
        stop_supervisor(
            job_dir,
            running,
            self.grace_period,
            lambda: processes.kill_marked(record.job_id, self.grace_period),
        )
        for keeper in self._started.pop(name, []):
            keeper.wait()
        shutil.rmtree(job_dir)
