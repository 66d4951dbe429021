"""`TrainerClient`: the Kubeflow SDK's client API, every TrainJob a Prefect flow run."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

from prefect.context import FlowRunContext

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import JobSpec
from prefect_kubeflow.backends.status import is_active
from prefect_kubeflow.blocks import LocalProcessBackendConfig, TrainingBackendConfig
from prefect_kubeflow.errors import (
    BackendError,
    InvalidInputError,
    InvalidStatusError,
    JobFailedError,
    JobTimeoutError,
    StepNotFoundError,
    UnsupportedOptionError,
)
from prefect_kubeflow.flows import runs, supervisor
from prefect_kubeflow.flows.gang import cancel_job
from prefect_kubeflow.flows.trainjob import run_trainjob
from prefect_kubeflow.interleave import interleave
from prefect_kubeflow.jobspecs import build_spec
from prefect_kubeflow.runtimes import RuntimeCatalog
from prefect_kubeflow.types import (
    CustomTrainer,
    CustomTrainerContainer,
    Event,
    Runtime,
    TrainJob,
)

logger = logging.getLogger(__name__)
# How long a supervisor started for a job whose one died gets to take over its flow run.
ADOPT_AGAIN_SECONDS = 60.0
# How long a job's flow run gets to end by itself when the job is deleted.
DELETE_SETTLE_SECONDS = 30.0


class TrainerClient:
    """Create, watch and delete Kubeflow TrainJobs; each one runs as a Prefect flow run.

    Args:
        backend_config: Where nodes run: `LocalProcessBackendConfig` (the default),
            `ContainerBackendConfig`, or any other `TrainingBackendConfig` block.

    Raises:
        InvalidInputError: `backend_config` is not a backend configuration block.
    """

    def __init__(self, backend_config: TrainingBackendConfig | None = None) -> None:
        self.backend_config = backend_config or LocalProcessBackendConfig()
        if not isinstance(self.backend_config, TrainingBackendConfig):
            raise InvalidInputError(
                "backend_config must be a backend configuration block such as "
                f"LocalProcessBackendConfig or ContainerBackendConfig, got {backend_config!r}"
            )
        self.backend = self.backend_config.get_backend()
        self._adopting: dict[str, float] = {}  # job -> when a supervisor was started for it
        source = self.backend_config.runtime_source
        self.runtimes = source.get_catalog() if source is not None else RuntimeCatalog()
        self.runtimes.first = self.backend.runtimes  # a cluster's runtimes come first

    # -- runtimes ----------------------------------------------------------------------------

    def list_runtimes(self, refresh: bool = False) -> list[Runtime]:
        """The available training runtimes: the backend's own (a cluster's
        ClusterTrainingRuntimes), the backend config's `runtime_source` in order, then the
        built-in ones; each `Runtime.origin` says where it was read from.

        A source that fails is skipped with a `RuntimeSourceWarning` (a stale cached copy
        serves if there is one). `refresh` fetches remote sources even when cached.
        """
        return [spec.runtime for spec in self.runtimes.list_runtimes(refresh)]

    def get_runtime(self, name: str, refresh: bool = False) -> Runtime:
        """The runtime called `name` (the first source defining it wins).

        Raises:
            RuntimeNotFoundError: No runtime has this name (the message lists the known ones
                and any source that failed to load).
        """
        return self.runtimes.get(name, refresh).runtime

    # -- jobs --------------------------------------------------------------------------------

    def build_spec(
        self,
        trainer: CustomTrainer | CustomTrainerContainer | None,
        runtime: str | Runtime | None = None,
        options: list[Any] | None = None,
    ) -> JobSpec:
        """The validated spec of a TrainJob running `trainer` on `runtime` with `options`;
        nothing is created (`prefect_kubeflow.jobspecs.build_spec`, which lists its errors).
        `train()` creates it; a deployment or a task runner hands it to the ``trainjob`` flow.
        """
        return build_spec(self.backend, self.runtimes, trainer, runtime, options)

    def train(
        self,
        runtime: str | Runtime | None = None,
        initializer: Any = None,
        trainer: CustomTrainer | CustomTrainerContainer | None = None,
        options: list[Any] | None = None,
    ) -> str:
        """Create a TrainJob running `trainer` on `runtime` (default ``torch-distributed``).

        Outside a Prefect flow the job runs detached, in its own supervising process, and this
        returns as soon as it is recorded. Inside a flow it runs as a subflow and this returns
        when it has completed.

        Args:
            runtime: A runtime name or `Runtime` (default ``torch-distributed``).
            initializer: Not supported (dataset and model initializers are Kubernetes jobs).
            trainer: A `CustomTrainer` (a function), or a `CustomTrainerContainer` (an image,
                on the container and Kubernetes backends).
            options: Job options from `prefect_kubeflow.options`: `Name`, `Labels`,
                `Annotations` everywhere; `RuntimePatch`, `TrainerCommand`, `TrainerArgs` on
                Kubernetes.

        Returns:
            The name of the TrainJob (also the name of its flow run).

        Raises:
            InvalidInputError: An argument is invalid; nothing was created.
            UnsupportedOptionError: This backend cannot honour an option or the trainer.
            NameConflictError: A job of the `Name` option's name exists.
            RuntimeNotFoundError: `runtime` names no known runtime.
            InvalidRuntimeError: `runtime` cannot run a CustomTrainer on this backend (a
                built-in trainer, or an ML policy other than torch).
            JobFailedError: (inside a flow) the job failed.
        """
        if initializer is not None:
            raise UnsupportedOptionError(
                "initializer is not supported by prefect-kubeflow's backends: initialize "
                "datasets and models inside the training function"
            )
        spec = self.build_spec(trainer, runtime, options)
        # Created here, so that the backend's errors (engine, image, name) reach the caller and
        # nothing is left of a job that could not start; the flow then finds it made.
        self.backend.create(spec)
        if FlowRunContext.get() is not None:
            run_trainjob(spec.name, self.backend_config)
            return spec.name
        try:
            supervisor.launch(spec.name, self.backend_config, runs.api_url() or "")
        except OSError as exc:
            self.backend.delete(spec.name)
            raise BackendError(f"the supervisor of TrainJob {spec.name!r} could not start") from exc
        return spec.name

    def list_jobs(
        self, runtime: Runtime | None = None, labels: dict[str, str] | None = None
    ) -> list[TrainJob]:
        """Every TrainJob of this backend, oldest first; only `runtime`'s if given, and only
        those carrying every one of `labels` (a `Labels` option's) if given."""
        if labels is not None and not isinstance(labels, dict):
            raise InvalidInputError(f"labels must be a dict of str to str, got {labels!r}")
        jobs = self.backend.list_jobs()
        self._adopt_lost_flow_runs([job.name for job in jobs])
        if runtime is not None:
            jobs = [job for job in jobs if job.runtime.name == runtime.name]
        if labels:
            wanted = labels.items()
            jobs = [job for job in jobs if wanted <= job.labels.items()]
        return jobs

    def get_job(self, name: str) -> TrainJob:
        """The TrainJob `name`, with its steps and status as they are now. If the process
        running its flow run died, a new one is started to settle it (forwarding the lines
        the API lacks, then ending it in the job's true state).

        Raises:
            JobNotFoundError: No TrainJob has this name.
        """
        job = self.backend.get(name)
        self._adopt_lost_flow_runs([name])
        return job

    def _adopt_lost_flow_runs(self, names: list[str]) -> None:
        """Start a supervisor for each job whose flow run's process died: it delivers the
        lines the API lacks and ends the flow run in the job's true state."""
        for name in runs.lost_flow_runs(names):
            launched = self._adopting.get(name)
            if launched is not None and time.monotonic() - launched < ADOPT_AGAIN_SECONDS:
                continue  # the one started a moment ago has not labelled the run yet
            try:
                supervisor.launch(name, self.backend_config, runs.api_url() or "", resume=True)
                self._adopting[name] = time.monotonic()
            except OSError as exc:
                logger.warning("could not start a supervisor for TrainJob %s: %s", name, exc)

    def get_job_result(self, name: str) -> Any:
        """What rank 0's training function returned in the completed TrainJob `name` (None if
        it returned None).

        The value is pickled with cloudpickle in the node and unpickled here: return plain
        values, and move tensors to the CPU first (``tensor.cpu()``). A value that cannot be
        pickled fails rank 0, naming its type. On Kubernetes it travels in node 0's
        termination message, which holds 4 KiB compressed.

        Raises:
            JobNotFoundError: No TrainJob has this name.
            JobResultError: The job has not completed, or its value cannot be read here.
        """
        return self.backend.job_result(name)

    def get_job_events(self, name: str) -> list[Event]:
        """What happened to the TrainJob `name` and its nodes, oldest first, as its backend
        records it (on Kubernetes: the cluster's events about the TrainJob and its pods).

        Raises:
            JobNotFoundError: No TrainJob has this name.
            BackendError: The backend records no events.
        """
        return self.backend.events(name)

    def get_job_logs(
        self,
        name: str,
        step: str | None = None,
        follow: bool = False,
        node_index: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[str]:
        """The log lines of one node, or of all nodes each prefixed ``[node-<i>]``.

        Lines are read lazily from the node's own log, so memory stays flat on any log size.
        With `follow`, lines come as they are written until the node(s) end; all nodes are then
        interleaved as their lines arrive.

        Args:
            name: The TrainJob.
            step: ``node-<i>``; or give `node_index`. With neither, all nodes.
            follow: Keep streaming new lines until the node(s) end.
            node_index: The node's index, instead of `step`.
            tail_lines: Only the last this many lines (per node) of what is written so far.

        Raises:
            JobNotFoundError: No TrainJob has this name.
            StepNotFoundError: The job has no such step.
        """
        job = self.backend.get(name)
        steps = [s.name for s in job.steps]
        if step is not None and node_index is not None:
            raise InvalidInputError("give step or node_index, not both")
        if node_index is not None:
            step = f"{constants.NODE}-{node_index}"
        if tail_lines is not None and (isinstance(tail_lines, bool) or tail_lines < 0):
            raise InvalidInputError(f"tail_lines must be an int >= 0, got {tail_lines!r}")
        if step is not None:
            if step not in steps:
                raise StepNotFoundError(step, steps)
            index = steps.index(step)
            lines = self.backend.node_logs(name, index, follow, tail_lines)
            return (line.text + "\n" for line in lines)
        return self._all_node_logs(name, len(steps), follow, tail_lines)

    def _all_node_logs(
        self, name: str, num_nodes: int, follow: bool, tail_lines: int | None
    ) -> Iterator[str]:
        def node(index: int) -> Iterator[str]:
            for line in self.backend.node_logs(name, index, follow, tail_lines):
                yield f"[{constants.NODE}-{index}] {line.text}\n"

        if not follow:  # nothing to wait for: one node after the other
            return (line for index in range(num_nodes) for line in node(index))
        return interleave([functools.partial(node, index) for index in range(num_nodes)])

    def wait_for_job_status(
        self,
        name: str,
        status: set[str] | None = None,
        timeout: float = 600,
        polling_interval: float = 2,
    ) -> TrainJob:
        """Wait until the TrainJob reaches one of `status` (default: Complete).

        Raises:
            InvalidStatusError: `status` holds a value outside the four TrainJob statuses.
            InvalidInputError: `timeout` < 0 or `polling_interval` <= 0.
            JobFailedError: The job failed (and Failed was not awaited); the message carries
                the failing node's last error lines.
            JobTimeoutError: The job did not reach `status` within `timeout` seconds.
        """
        wanted = {constants.TRAINJOB_COMPLETE} if status is None else set(status)
        unknown = wanted - constants.TRAINJOB_STATUSES
        if unknown or not wanted:
            raise InvalidStatusError(
                f"status {sorted(unknown) or wanted!r} is invalid; allowed: "
                f"{sorted(constants.TRAINJOB_STATUSES)}"
            )
        if isinstance(timeout, bool) or timeout < 0:
            raise InvalidInputError(f"timeout must be >= 0 seconds, got {timeout!r}")
        if isinstance(polling_interval, bool) or polling_interval <= 0:
            raise InvalidInputError(
                f"polling_interval must be > 0 seconds, got {polling_interval!r}"
            )
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if job.status in wanted:
                return job
            if job.status == constants.TRAINJOB_FAILED:
                raise JobFailedError(name, job.message or "no reason recorded")
            if job.status == constants.TRAINJOB_COMPLETE:
                raise JobFailedError(name, f"it completed without reaching any of {sorted(wanted)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeoutError(
                    f"TrainJob {name!r} is {job.status}, not in {sorted(wanted)}, after {timeout} s"
                )
            time.sleep(min(polling_interval, remaining))

    def delete_job(self, name: str) -> None:
        """Stop the TrainJob if it runs (every node of it), remove its records, and let its
        flow run end Cancelled. An ended job's flow run first gets to finish forwarding its
        logs (up to `DELETE_SETTLE_SECONDS`), so it keeps its final state.

        Raises:
            JobNotFoundError: No TrainJob has this name.
        """
        job = self.backend.get(name)
        flow_run = runs.find_flow_runs([name]).get(name)
        if is_active(job.status):  # stopped as a cancel from Prefect stops it: one path
            cancel_job(self.backend, name, "deleted by delete_job")
        elif flow_run is not None:
            # Ended: its flow run may still be forwarding the last lines; let it finish.
            flow_run = runs.await_final(flow_run, timeout=DELETE_SETTLE_SECONDS)
        self.backend.delete(name)
        if flow_run is not None:
            runs.await_deleted(flow_run, timeout=DELETE_SETTLE_SECONDS)
        supervisor.log_path(name).unlink(missing_ok=True)
