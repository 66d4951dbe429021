"""The contract every backend implements, and the plain request it receives.

Waiting, polling, log interleaving and input validation live once above this protocol (in the
client and the flow), never in a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.types import Runtime, TrainJob


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to create a TrainJob, already validated."""

    name: str
    runtime: Runtime
    num_nodes: int
    num_proc_per_node: int | str
    function_name: str
    function_source: str
    func_args: dict[str, Any] = field(default_factory=dict)
    packages_to_install: list[str] = field(default_factory=list)
    pip_index_urls: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    resources_per_node: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SupervisorCommand:
    """How to start a job's supervising process: its argv, and what it reads on stdin (the
    backend settings: an argv is readable by every user of the machine, stdin is not)."""

    argv: list[str]
    stdin: bytes = b""


class Backend(Protocol):
    """Where TrainJob nodes run. State is always read back from the backend's own records."""

    def create_job(self, spec: JobSpec, supervisor: SupervisorCommand | None) -> None:
        """Record the job. With `supervisor`, start it detached to run the job;
        without, the calling process runs it (`start_job`)."""

    def start_job(self, name: str) -> None:
        """Start the job's nodes in this process; a no-op if this process already did."""

    def wait_node(self, name: str, node_index: int) -> int:
        """Block until the node ends and its log is complete; return its exit code."""

    def stop_job(self, name: str) -> None:
        """Stop every node of the job now (gang teardown); keep its records."""

    def set_flow_run(self, name: str, flow_run_id: str, closed: bool = False) -> None:
        """Remember the Prefect flow run that runs the job; `closed` once its run is over."""

    def get_job(self, name: str) -> TrainJob:
        """The job as its records show it now."""

    def flow_run_id(self, name: str) -> str | None:
        """The id of the Prefect flow run that runs the job, once known."""

    def lost_flow_run_id(self, name: str) -> str | None:
        """The flow run of a job whose supervising process died before closing it."""

    def list_jobs(self) -> list[TrainJob]:
        """Every job on this backend, oldest first."""

    def node_logs(
        self, name: str, node_index: int, follow: bool, tail_lines: int | None
    ) -> Iterator[LogLine]:
        """One node's log lines; with `follow`, until the node ends."""

    def delete_job(self, name: str) -> None:
        """Stop the job if it runs and remove every trace of it."""
