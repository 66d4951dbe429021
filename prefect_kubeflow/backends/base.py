"""The contract every backend implements: nine operations, and the invariants they share.

A backend knows where nodes run and nothing of Prefect or of the client: waiting, polling, log
interleaving, input validation and flow runs live once above it. State is always read back from
the backend's own records (files, container labels, the TrainJob object), never kept in memory,
so any process sees the same jobs.

Subclasses implement `create`, `describe`, `list_jobs`, `node_logs`, `result`, `stop`,
`delete`, `restart` (a failed gang's next attempt) and `events`; the base adds `get` (unknown
name: `JobNotFoundError`) and an idempotent `ensure_created`. A job being deleted is gone at
once (as a Kubernetes object with a deletion timestamp): its watchers then know it was deleted
rather than failed. Node phases roll up to a job status in `status.py`, once for all.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from prefect_kubeflow import constants, options
from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.errors import JobNotFoundError, JobResultError, NameConflictError
from prefect_kubeflow.types import Event, TrainJob

if TYPE_CHECKING:
    from prefect_kubeflow.runtimes.parsing import RuntimeSpec


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to create a TrainJob, already validated by the client.

    Plain fields only: a spec is also a flow run parameter (a deployment or a task runner runs a
    TrainJob by handing the ``trainjob`` flow a spec).
    """

    name: str
    runtime_name: str
    framework: str
    image: str
    num_nodes: int
    num_proc_per_node: int | str
    function_name: str = ""  # empty for a CustomTrainerContainer
    function_source: str = ""
    runtime_origin: str | None = None
    func_args: dict[str, Any] = field(default_factory=dict)
    packages_to_install: list[str] = field(default_factory=list)
    pip_index_urls: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    resources_per_node: dict[str, Any] = field(default_factory=dict)
    runtime_num_nodes: int = 1
    max_restarts: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # A CustomTrainerContainer: the nodes run `image`'s own command, no shipped function.
    custom_image: bool = False
    # What only Kubernetes honours (`prefect_kubeflow.options`).
    runtime_patches: list[dict[str, Any]] = field(default_factory=list)
    trainer_command: list[str] | None = None
    trainer_args: list[str] | None = None
    # Tells this spec's job from another of the same name (a `Name` option used twice).
    uid: str = ""


@dataclass(frozen=True)
class JobRecord:
    """What `get_job` shows that the engine does not know, kept with the job by every backend
    (a file, a container label, a TrainJob annotation) as one JSON document."""

    name: str
    created: str
    runtime_name: str
    runtime_origin: str | None
    framework: str
    image: str
    runtime_num_nodes: int
    num_nodes: int
    nproc_per_node: int
    device: str
    max_restarts: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    image_digest: str | None = None
    custom_image: bool = False
    uid: str = ""

    @classmethod
    def for_spec(
        cls,
        spec: JobSpec,
        image: str,
        nproc_per_node: int,
        device: str,
        image_digest: str | None = None,
    ) -> JobRecord:
        """The record of a job created now from `spec`, with what its backend resolved."""
        return cls(
            name=spec.name,
            created=datetime.now(timezone.utc).isoformat(),
            runtime_name=spec.runtime_name,
            runtime_origin=spec.runtime_origin,
            framework=spec.framework,
            image=image,
            runtime_num_nodes=spec.runtime_num_nodes,
            num_nodes=spec.num_nodes,
            nproc_per_node=nproc_per_node,
            device=device,
            max_restarts=spec.max_restarts,
            labels=dict(spec.labels),
            annotations=dict(spec.annotations),
            image_digest=image_digest,
            custom_image=spec.custom_image,
            uid=spec.uid,
        )

    def to_json(self) -> str:
        """The record as one JSON document."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        """The record written by `to_json`."""
        return cls(**json.loads(text))


class Backend(ABC):
    """Where TrainJob nodes run: create, read back, follow logs, stop, delete."""

    #: The job options (`prefect_kubeflow.options`) this backend honours.
    supported_options: frozenset[str] = options.COMMON
    #: Whether a `CustomTrainerContainer` (a user's image) runs here.
    runs_images: bool = True
    #: Whether `max_restarts` > 0 is honoured (the watcher calls `restart`), and if not, why
    #: and what to do instead.
    gang_restarts: bool = True
    restarts_hint: str = ""

    @abstractmethod
    def create(self, spec: JobSpec) -> None:
        """Create the job and start its nodes; nothing is left behind when this raises.

        Raises:
            NameConflictError: something of the job's name already exists.
        """

    @abstractmethod
    def describe(self, name: str) -> TrainJob | None:
        """The job as its records show it now; None when there is no such job, or it is being
        deleted."""

    @abstractmethod
    def list_jobs(self) -> list[TrainJob]:
        """Every job of this backend, oldest first."""

    @abstractmethod
    def node_logs(
        self, name: str, node_index: int, follow: bool = False, tail_lines: int | None = None
    ) -> Iterator[LogLine]:
        """One node's lines, oldest first; with `follow`, until the node has ended and its log
        is complete (or the job is deleted).

        Raises:
            JobNotFoundError: there is no such job.
        """

    @abstractmethod
    def result(self, name: str) -> bytes | None:
        """Rank 0's pickled return value, as the job's node 0 left it; None when it returned
        None (or has not returned yet).

        Raises:
            JobNotFoundError: there is no such job.
        """

    @abstractmethod
    def stop(self, name: str) -> None:
        """Stop every node of the job now (gang teardown); its records stay readable."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Stop the job if it runs and remove whatever exists of it; safe to call again (also
        after a delete that was interrupted). Whether there was anything to remove."""

    @abstractmethod
    def restart(self, name: str) -> None:
        """Start attempt n+1 of a job whose attempt n failed and has fully stopped: archive the
        attempt's node files and why it ended, then start every node again with a fresh
        rendezvous and ``TORCHELASTIC_RESTART_COUNT`` = n+1. The job's watcher calls it when
        `restart_pending` says so.

        Raises:
            JobNotFoundError: there is no such job.
            BackendError: a node of the job still runs.
        """

    @abstractmethod
    def events(self, name: str) -> list[Event]:
        """What happened to the job and its nodes, oldest first, as the backend keeps it
        (readable from any process, and after the job was deleted).

        Raises:
            JobNotFoundError: there is no such job, and no record of one.
        """

    def cancel(self, name: str, message: str) -> None:
        """Stop every node of the job for good, recording why: no gang restart follows."""
        self.record_event(name, "Cancelled", message)
        self.stop(name)

    def cancelled(self, name: str) -> str | None:
        """Why the job was cancelled (`cancel`'s message); None if it was not, or is gone."""
        return None

    def record_watcher(self, name: str) -> None:
        """Record this process as the job's watcher, where the engine keeps the job: once it
        is gone, a failed attempt reads Failed instead of waiting for a restart (engines that
        restart gangs themselves keep none)."""
        return None

    def record_event(self, name: str, reason: str, message: str) -> None:
        """Add an event about the job (a gang teardown, a cancellation) to its record; a
        failure to is logged, never raised: events tell, they do not decide."""
        return None

    # -- what some engines offer -------------------------------------------------------------

    def record_flow_run(self, name: str, flow_run_id: str) -> None:
        """Keep the id of the job's Prefect flow run with the job where the engine lets a job's
        metadata change (a TrainJob's labels). Engines whose labels are fixed at creation keep
        none: the flow run's own label links it to its job."""
        return None

    def runtimes(self) -> list[RuntimeSpec]:
        """Runtimes the engine itself serves (a cluster's ClusterTrainingRuntimes), listed
        before the configured sources; an engine with none serves none."""
        return []

    # -- the invariants, once ----------------------------------------------------------------

    def get(self, name: str) -> TrainJob:
        """The job `name`.

        Raises:
            JobNotFoundError: there is no such job (the message lists the known ones).
        """
        job = self.describe(name)
        if job is None:
            raise self.not_found(name)
        return job

    def not_found(self, name: str) -> JobNotFoundError:
        """The error for a job `name` that does not exist, naming those that do."""
        return JobNotFoundError(name, [known.name for known in self.list_jobs()])

    def job_result(self, name: str) -> Any:
        """Rank 0's return value of the completed job `name` (None if it returned None).

        Raises:
            JobNotFoundError: there is no such job.
            JobResultError: the job has not completed, or its value cannot be unpickled here
                (a class this interpreter cannot import, a tensor saved on a GPU).
        """
        job = self.get(name)
        if job.status != constants.TRAINJOB_COMPLETE:
            raise JobResultError(
                f"TrainJob {name!r} is {job.status}: only a Complete job has a result"
            )
        data = self.result(name)
        if data is None:
            return None
        import cloudpickle  # here: a node's keeper imports this module too, and needs none

        try:
            return cloudpickle.loads(data)
        except Exception as exc:
            raise JobResultError(
                f"rank 0's return value of TrainJob {name!r} cannot be unpickled here ({exc}): "
                "return values this interpreter can import, and tensors moved to the CPU"
            ) from exc

    def ensure_created(self, spec: JobSpec) -> bool:
        """Create the job unless this spec's job exists already; whether this call created it.

        Raises:
            NameConflictError: another job of the spec's name exists.
        """
        existing = self.describe(spec.name)
        if existing is None:
            self.create(spec)
            return True
        if spec.uid and existing.uid != spec.uid:
            raise NameConflictError(
                f"a TrainJob {spec.name!r} exists already, made from another spec: delete it, or "
                "name this job differently"
            )
        return False
