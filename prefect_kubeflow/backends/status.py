"""A job's status from its nodes, once for every backend: each node's phase rolls up to the
job's (any Failed fails it, all Succeeded complete it), a failed attempt with restarts left
reads Running, and a Failed job says why from the node that failed first."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prefect_kubeflow import constants
from prefect_kubeflow.backends.base import JobRecord
from prefect_kubeflow.types import Restart, Runtime, RuntimeTrainer, Step, TrainerType, TrainJob


@dataclass(frozen=True)
class NodeState:
    """One node as its backend sees it: its phase (a ``STEP_*`` constant) and, once it ended,
    when (any clock the backend's nodes share; only the order matters)."""

    phase: str
    ended_at: float = float("inf")

    @classmethod
    def ended(cls, exit_code: int, at: float) -> NodeState:
        """A node that exited with `exit_code` at `at`: Succeeded on 0, else Failed."""
        ok = exit_code == 0
        return cls(constants.STEP_SUCCEEDED if ok else constants.STEP_FAILED, at)


def exit_header(node_index: int, code: int) -> str:
    """How a node ended, for a failure message: ``node-1 exited with 1``, or ``node-1 was
    killed by SIGKILL`` (a negative code, or a shell's and an engine's 128 + signal)."""
    if code > 128 and code - 128 in {s.value for s in signal.Signals}:
        code = -(code - 128)
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    return f"{constants.NODE}-{node_index} {how}"


_ACTIVE = (constants.TRAINJOB_CREATED, constants.TRAINJOB_RUNNING)


def roll_up(phases: Sequence[str]) -> str:
    """The job's status from its nodes' phases: any Failed fails it, all Succeeded complete it,
    any Running runs it, else it is Created."""
    found = set(phases)
    if constants.STEP_FAILED in found:
        return constants.TRAINJOB_FAILED
    if found == {constants.STEP_SUCCEEDED}:
        return constants.TRAINJOB_COMPLETE
    if constants.STEP_RUNNING in found or constants.STEP_SUCCEEDED in found:
        return constants.TRAINJOB_RUNNING
    return constants.TRAINJOB_CREATED


def is_active(status: str) -> bool:
    """Whether a job of this status may still have running nodes."""
    return status in _ACTIVE


RESTARTING = "\nrestarting: attempt {next} of {total} comes next"


def attempt_failure(job: TrainJob) -> str:
    """Why the job's current attempt failed: its message without the note that it restarts."""
    return (job.message or "no reason recorded").split(RESTARTING.split("{", 1)[0], 1)[0]


def restart_pending(job: TrainJob) -> bool:
    """Whether the job's current attempt failed, every node of it has ended, and a gang
    restart is due (restarts remain): the moment to call `Backend.restart`."""
    ended = {constants.STEP_SUCCEEDED, constants.STEP_FAILED}
    return (
        job.status == constants.TRAINJOB_RUNNING
        and all(step.status in ended for step in job.steps)
        and any(step.status == constants.STEP_FAILED for step in job.steps)
    )


def to_trainjob(
    record: JobRecord,
    nodes: Sequence[NodeState],
    failure: Callable[[int], str],
    restarts: Sequence[Restart] = (),
    no_restart: str | None = None,
    cancelled: str | None = None,
) -> TrainJob:
    """The `TrainJob` every backend returns: steps from `nodes`, the rolled-up status, and for a
    Failed job the message `failure(index)` of the node that failed first. A failed attempt
    with restarts left (`record.max_restarts` > the `restarts` so far) reads Running: the job
    is restarting, and says why; unless `no_restart` says why none will come. A job
    `cancelled` (why: `Backend.cancel`'s message) is never restarted, and its message starts
    with why it was cancelled."""
    steps = [
        Step(
            name=f"{constants.NODE}-{index}",
            status=node.phase,
            pod_name=f"{record.name}-{constants.NODE}-{index}",
            device=record.device,
            device_count=str(record.nproc_per_node),
        )
        for index, node in enumerate(nodes)
    ]
    status = roll_up([node.phase for node in nodes])
    message = None
    if status == constants.TRAINJOB_FAILED:
        failed = [i for i, node in enumerate(nodes) if node.phase == constants.STEP_FAILED]
        message = failure(min(failed, key=lambda i: nodes[i].ended_at))
        if cancelled is not None:
            message = f"{cancelled}; {message}"
        elif len(restarts) < record.max_restarts and no_restart is not None:
            message = f"not restarted: {no_restart}; {message}"
        elif len(restarts) < record.max_restarts:
            status = constants.TRAINJOB_RUNNING
            message += RESTARTING.format(next=len(restarts) + 2, total=record.max_restarts + 1)
    trainer = RuntimeTrainer(
        trainer_type=TrainerType.CUSTOM_TRAINER,
        framework=record.framework,
        image=record.image,
        num_nodes=record.runtime_num_nodes,
        device=record.device,
        device_count=str(record.nproc_per_node),
    )
    return TrainJob(
        name=record.name,
        runtime=Runtime(name=record.runtime_name, trainer=trainer, origin=record.runtime_origin),
        steps=steps,
        num_nodes=record.num_nodes,
        creation_timestamp=datetime.fromisoformat(record.created),
        status=status,
        message=message,
        labels=dict(record.labels),
        annotations=dict(record.annotations),
        restarts=list(restarts),
        image_digest=record.image_digest,
        uid=record.uid or None,
    )
