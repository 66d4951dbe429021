"""Controller state of one TrainJob, and the TrainJob status Trainer derives from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .trainer import JobSpec
from .util import new_uid, rfc3339


@dataclass
class JobRun:
    """Controller state of one TrainJob's JobSet and Job."""

    namespace: str
    name: str
    uid: str
    jobset_uid: str = field(default_factory=new_uid)
    job_uid: str = field(default_factory=new_uid)
    job: JobSpec | None = None
    counted: set[str] = field(default_factory=set)
    succeeded: set[int] = field(default_factory=set)
    failed: int = 0
    last_failure: float = 0.0
    failure_target: bool = False
    finished: str | None = None  # "Complete" | "Failed" | "DeadlineExceeded"
    conditions: list[dict[str, Any]] = field(default_factory=list)
    suspended: bool = False
    started: float = field(default_factory=time.time)
    warned_at: float = 0.0
    excused: set[str] = field(default_factory=set)  # deleted on suspension: not failures


def active(pod: dict[str, Any]) -> bool:
    """Pending or running, and not being deleted (the Job controller's `active`)."""
    return pod["status"].get("phase") not in ("Succeeded", "Failed") and not pod["metadata"].get(
        "deletionTimestamp"
    )


def ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod["status"].get("conditions") or []
    )


def restarts(pod: dict[str, Any]) -> int:
    """Container restarts of the pod."""
    return sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or [])


def trainjob_status(
    trainjob: dict[str, Any], run: JobRun, pods: list[dict[str, Any]]
) -> dict[str, Any]:
    """Trainer's status: its `Suspended` condition, the JobSet's terminal one, `jobsStatus`."""
    job = run.job
    assert job is not None
    status = dict(trainjob.get("status") or {})
    conditions = list(status.get("conditions") or [])
    suspended_condition(conditions, run.suspended)
    for cond in run.conditions:
        set_condition(conditions, cond)
    if run.finished == "DeadlineExceeded":
        set_condition(
            conditions,
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "TrainJob exceeded its active deadline",
            },
        )
    running = [p for p in pods if active(p)]
    done = sum(1 for p in running if ready(p)) + len(run.succeeded)
    jobs_status = {
        "name": job.replicated_job,
        "ready": int(bool(running) and done >= job.completions),
        "succeeded": int(run.finished == "Complete"),
        "failed": int(run.finished == "Failed"),
        "active": int(bool(running) and run.finished is None),
        "suspended": int(run.suspended),
    }
    if conditions:
        status["conditions"] = conditions
    if run.finished != "DeadlineExceeded":
        status["jobsStatus"] = [jobs_status]
    return status


def set_condition(conditions: list[dict[str, Any]], cond: dict[str, Any]) -> None:
    """`meta.SetStatusCondition`: keep lastTransitionTime unless the status changes."""
    for index, current in enumerate(conditions):
        if current["type"] == cond["type"]:
            when = (
                current["lastTransitionTime"]
                if current["status"] == cond["status"]
                else (cond.get("lastTransitionTime") or rfc3339())
            )
            conditions[index] = {**cond, "lastTransitionTime": when}
            return
    conditions.append({**cond, "lastTransitionTime": cond.get("lastTransitionTime") or rfc3339()})


def suspended_condition(conditions: list[dict[str, Any]], suspended: bool) -> None:
    """Trainer's `setSuspendedCondition`."""
    current = next((c for c in conditions if c["type"] == "Suspended"), None)
    if suspended:
        set_condition(
            conditions,
            {
                "type": "Suspended",
                "status": "True",
                "reason": "Suspended",
                "message": "TrainJob is suspended",
            },
        )
    elif current is not None and current["status"] == "True":
        set_condition(
            conditions,
            {
                "type": "Suspended",
                "status": "False",
                "reason": "Resumed",
                "message": "TrainJob is resumed",
            },
        )
