"""`TrainJobTaskRunner`: every task a flow submits runs as one TrainJob on N nodes.

The task's function runs on every rank; its task run resolves to rank 0's return value. Each
task run's TrainJob flow run (with its ``node-<i>`` task runs and their logs) is that task
run's child in the Prefect UI. Futures among the parameters, and ``wait_for``, are resolved by
Prefect's task engine before the job is created; a retry is a new job, so a whole gang is
retried, never rank 0 alone.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from prefect import get_client, get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import PrefectHTTPStatusError
from prefect.futures import PrefectConcurrentFuture, PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_kubeflow.backends.base import Backend, JobSpec
from prefect_kubeflow.backends.status import is_active
from prefect_kubeflow.blocks import LocalProcessBackendConfig, TrainingBackendConfig
from prefect_kubeflow.errors import BackendError, InvalidInputError, JobFailedError
from prefect_kubeflow.flows.trainjob import run_trainjob
from prefect_kubeflow.types import CustomTrainer, Runtime

if TYPE_CHECKING:
    from prefect.tasks import Task

    from prefect_kubeflow.client import TrainerClient

# Jobs mostly wait on their nodes: the limit is the machine's (or cluster's) room, not threads.
DEFAULT_MAX_CONCURRENT_JOBS = 64
logger = logging.getLogger(__name__)


def _placeholder() -> None:
    """Stands for the task's function when the runner's own fields are checked."""


class TrainJobTaskRunner(ThreadPoolTaskRunner):
    """A Prefect task runner that runs each submitted task as a TrainJob on `num_nodes` nodes.

    ``@flow(task_runner=TrainJobTaskRunner(backend_config=ContainerBackendConfig(),
    num_nodes=4))``: every ``task.submit(...)`` and ``task.map(...)`` of that flow is one
    TrainJob, the task's function running on every rank under torchrun; the future resolves to
    rank 0's return value. A failing rank fails the task run with that rank's traceback
    (``.result()`` raises `JobFailedError`). Leaving the flow on an error stops the jobs still
    running.

    Args:
        backend_config: Where the nodes run (any backend block); the local backend by default.
        num_nodes: Nodes per job (default: the runtime's).
        resources_per_node: ``cpu``, ``memory``, ``gpu`` per node, as `CustomTrainer`'s.
        packages_to_install: pip requirements installed on every node first.
        pip_index_urls: The index to install from, then extra ones.
        env: Environment variables for every rank.
        runtime: The training runtime's name or `Runtime` (default ``torch-distributed``).
        max_concurrent_jobs: How many of this flow's jobs run at once.

    Raises:
        InvalidInputError: A field is invalid (checked here, before any flow runs).
    """

    def __init__(
        self,
        backend_config: TrainingBackendConfig | None = None,
        num_nodes: int | None = None,
        resources_per_node: dict[str, Any] | None = None,
        packages_to_install: list[str] | None = None,
        pip_index_urls: list[str] | None = None,
        env: dict[str, str] | None = None,
        runtime: str | Runtime | None = None,
        max_concurrent_jobs: int = DEFAULT_MAX_CONCURRENT_JOBS,
    ) -> None:
        if backend_config is not None and not isinstance(backend_config, TrainingBackendConfig):
            raise InvalidInputError(
                "backend_config must be a backend configuration block such as "
                f"LocalProcessBackendConfig or ContainerBackendConfig, got {backend_config!r}"
            )
        if isinstance(max_concurrent_jobs, bool) or not isinstance(max_concurrent_jobs, int):
            raise InvalidInputError(
                f"max_concurrent_jobs must be an int >= 1, got {max_concurrent_jobs!r}"
            )
        if max_concurrent_jobs < 1:
            raise InvalidInputError(
                f"max_concurrent_jobs must be an int >= 1, got {max_concurrent_jobs!r}"
            )
        self.backend_config = backend_config or LocalProcessBackendConfig()
        self.trainer_options: dict[str, Any] = {
            "num_nodes": num_nodes,
            "resources_per_node": resources_per_node,
            "packages_to_install": packages_to_install,
            "pip_index_urls": pip_index_urls,
            "env": env,
        }
        self._trainer(_placeholder, {}).validate()
        if runtime is not None and not isinstance(runtime, (str, Runtime)):
            raise InvalidInputError(f"runtime must be a name or a Runtime, got {runtime!r}")
        self.runtime = runtime
        self.max_concurrent_jobs = max_concurrent_jobs
        super().__init__(max_workers=max_concurrent_jobs)
        self._client: TrainerClient | None = None
        self._lock = threading.Lock()
        self._running: dict[UUID, str] = {}  # task run -> its job, while the task runs
        self._closing = False  # the flow is leaving on an error: start no more jobs
        self._flow_run_id: UUID | None = None

    def _trainer(self, func: Callable[..., Any], func_args: dict[str, Any]) -> CustomTrainer:
        options = {k: v for k, v in self.trainer_options.items() if v is not None}
        return CustomTrainer(func=func, func_args=func_args, **options)

    def duplicate(self) -> TrainJobTaskRunner:
        """A runner with the same configuration (Prefect starts one per flow run)."""
        return type(self)(
            backend_config=self.backend_config,
            runtime=self.runtime,
            max_concurrent_jobs=self.max_concurrent_jobs,
            **self.trainer_options,
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TrainJobTaskRunner)
            and other.backend_config == self.backend_config
            and other.trainer_options == self.trainer_options
            and other.runtime == self.runtime
            and other.max_concurrent_jobs == self.max_concurrent_jobs
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_client=None, _running={}, _lock=None, _closing=False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> TrainerClient:
        """The client building each job's spec (created once, on first use)."""
        with self._lock:
            if self._client is None:
                from prefect_kubeflow.client import TrainerClient

                self._client = TrainerClient(backend_config=self.backend_config)
            return self._client

    def submit(
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, Any] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        """Run `task` as one TrainJob; the future resolves to rank 0's return value."""
        if task.isasync or inspect.isgeneratorfunction(task.fn):
            kind = "async" if task.isasync else "a generator"
            raise InvalidInputError(
                f"task {task.name!r} is {kind}; TrainJobTaskRunner runs a plain synchronous "
                "function on every rank"
            )
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            self._flow_run_id = context.flow_run.id
        return super().submit(self._as_trainjob(task), parameters, wait_for, dependencies)

    def _as_trainjob(self, task: Task[Any, Any]) -> Task[Any, Any]:
        """`task`, its function replaced by one that runs it as a TrainJob (same signature,
        name, retries and every other option)."""
        func = task.fn
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run_as_trainjob(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            spec = self.client.build_spec(
                self._trainer(func, _keyword_arguments(signature, bound)), self.runtime
            )
            task_run = TaskRunContext.get()
            assert task_run is not None  # the task engine calls this in its task run
            task_run_id = task_run.task_run.id
            with self._lock:  # registered before it exists: a closing flow sees every job
                if self._closing:
                    raise JobFailedError(spec.name, "the flow is ending on an error: not started")
                self._running[task_run_id] = spec.name
            try:
                return self._run(spec, task_run_id)
            finally:
                with self._lock:
                    self._running.pop(task_run_id, None)

        wrapped = copy.copy(task)
        wrapped.fn = run_as_trainjob
        return wrapped

    def _run(self, spec: JobSpec, task_run_id: UUID) -> Any:
        """Create the job and run its flow as the task run's child; rank 0's value."""
        # Created first, as `TrainerClient.train()` does: the nodes start while Prefect
        # records the job's flow run.
        backend = self.client.backend
        backend.create(spec)
        get_run_logger().info(
            "running as TrainJob %s on %d nodes (its flow run is this task run's child)",
            spec.name,
            spec.num_nodes,
        )
        try:
            return run_trainjob(spec.name, self.backend_config, parent_task_run_id=task_run_id)
        finally:  # whatever ended the task, its job does not go on without it
            _stop_if_running(backend, spec.name)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            with self._lock:
                running = list(self._running.values())
            # Prefect's flow engine handles the flow's error before its task runner exits:
            # the flow run's state tells whether the flow is leaving on an error.
            if running and not self._flow_completed():
                with self._lock:
                    self._closing = True
                    running = list(self._running.values())
                backend = self.backend_config.get_backend()
                for name in running:
                    self.logger.warning("the flow is ending on an error: stopping %s", name)
                    _stop_if_running(backend, name)
        finally:
            super().__exit__(exc_type, exc_value, traceback)

    def _flow_completed(self) -> bool:
        """Whether the flow run this runner serves has completed; no when it cannot be told."""
        if self._flow_run_id is None:
            return False
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(self._flow_run_id).state
        except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
            self.logger.warning("could not read the flow run's state (%s)", exc)
            return False
        return state is not None and state.is_completed()


def _stop_if_running(backend: Backend, name: str) -> None:
    """Stop job `name`'s nodes if any still run; a failure to is logged."""
    try:
        job = backend.describe(name)
    except BackendError as exc:
        logger.warning("could not read TrainJob %s to stop it: %s", name, exc)
        return
    if job is not None and is_active(job.status):
        try:
            backend.cancel(name, "its task runner's flow run ended before it")
        except BackendError as exc:
            logger.warning("stopping the nodes of TrainJob %s failed: %s", name, exc)


def _keyword_arguments(
    signature: inspect.Signature, bound: inspect.BoundArguments
) -> dict[str, Any]:
    """The call's arguments as keywords (how a TrainJob passes them to the function)."""
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise InvalidInputError(
                    f"*{name} cannot be passed to a TrainJob, which calls its function with "
                    "keyword arguments only"
                )
        elif kind is inspect.Parameter.POSITIONAL_ONLY:
            raise InvalidInputError(
                f"parameter {name!r} is positional-only; a TrainJob calls its function with "
                "keyword arguments"
            )
        else:
            arguments[name] = value
    return arguments
