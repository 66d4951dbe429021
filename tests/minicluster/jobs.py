"""Trainer + JobSet + Job controllers and the garbage collector, for TrainJobs.

Per TrainJob: resolve its runtime once (kept as Trainer's runtime snapshot, so deleting the
runtime later changes nothing), build the trainer Job, then act as the Job controller
(indexed pods, `backoffLimit` counting failed pods plus container restarts, replacement pods
after 10 s-doubling back-off, suspension), as JobSet (Completed / Failed with
`FailedJobs`, `replicatedJobsStatus`) and as Trainer (`Suspended`, `Complete`/`Failed`
conditions copied from the JobSet, `jobsStatus`, `activeDeadlineSeconds`). Deleted TrainJobs
have their pods deleted gracefully (foreground: the TrainJob stays until they are gone).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from . import errors as E
from .dockerops import DockerOps
from .events import EventRecorder, object_ref
from .registry import ORPHANED, SNAPSHOTS, Registry
from .store import PODS, Store
from .trainer import TRACKING_FINALIZER, build_job, make_pod
from .trainjobstatus import JobRun, active, restarts, trainjob_status
from .util import dig, new_uid, random_suffix, rfc3339
from .webhooks import find_runtime

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


class JobController:
    """Reconciles every TrainJob once per operator tick."""

    def __init__(
        self, store: Store, registry: Registry, recorder: EventRecorder, ops: DockerOps
    ) -> None:
        self.store = store
        self.registry = registry
        self.events = recorder
        self.ops = ops
        self.runs: dict[str, JobRun] = {}

    def sync(self) -> None:
        """One pass: live TrainJobs, then the leftovers of deleted ones."""
        live = {t["metadata"]["uid"]: t for t in self.store.list_objects("trainjobs")}
        for uid, trainjob in live.items():
            meta = trainjob["metadata"]
            run = self.runs.setdefault(uid, JobRun(meta["namespace"], meta["name"], uid))
            self._reconcile(trainjob, run)
        for uid, run in list(self.runs.items()):
            if uid not in live:
                self._collect(run)

    # -- references for events -------------------------------------------------------------
    def _job_ref(self, run: JobRun) -> dict[str, Any]:
        assert run.job is not None
        return {
            "kind": "Job",
            "namespace": run.namespace,
            "name": run.job.job_name,
            "uid": run.job_uid,
            "apiVersion": "batch/v1",
        }

    def _jobset_ref(self, run: JobRun) -> dict[str, Any]:
        return {
            "kind": "JobSet",
            "namespace": run.namespace,
            "name": run.name,
            "uid": run.jobset_uid,
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
        }

    def _job_event(self, run: JobRun, type_: str, reason: str, message: str) -> None:
        self.events.legacy(self._job_ref(run), type_, reason, message, "job-controller")

    def _jobset_event(self, run: JobRun, type_: str, reason: str, message: str) -> None:
        self.events.modern(self._jobset_ref(run), type_, reason, message, "jobset", "Reconciling")

    # -- reconcile ---------------------------------------------------------------------------
    def pods(self, run: JobRun) -> list[dict[str, Any]]:
        """The pods of the run's Job."""
        return [
            p
            for p in self.store.list_objects("pods", run.namespace)
            if p["metadata"].get("labels", {}).get("batch.kubernetes.io/controller-uid")
            == run.job_uid
        ]

    def _reconcile(self, trainjob: dict[str, Any], run: JobRun) -> None:
        if (
            dig(trainjob, "spec", "managedBy", default="trainer.kubeflow.org/trainjob-controller")
            != "trainer.kubeflow.org/trainjob-controller"
        ):
            return
        if run.job is None and not self._build(trainjob, run):
            return
        pods = self.pods(run)
        self._account(run, pods)
        if trainjob["metadata"].get("deletionTimestamp"):
            self._foreground(trainjob, run, pods)
        else:
            self._suspension(trainjob, run, pods)
            self._deadline(trainjob, run, pods)
            if not run.suspended and run.finished is None:
                self._job_step(run, pods)
        self._write_status(trainjob, run, self.pods(run))

    def _build(self, trainjob: dict[str, Any], run: JobRun) -> bool:
        snapshot = self.store.get(SNAPSHOTS, run.namespace, run.name)
        if snapshot is not None and snapshot["owner"] == run.uid:
            runtime = snapshot["runtime"]
        else:
            runtime = find_runtime(self.store, trainjob)
            if runtime is None:
                self._runtime_missing(trainjob, run)
                return False
            self.store.put(
                SNAPSHOTS,
                {
                    "metadata": {"name": run.name, "namespace": run.namespace},
                    "owner": run.uid,
                    "runtime": runtime,
                },
            )
        run.job = build_job(trainjob, runtime, run.jobset_uid, run.job_uid)
        run.suspended = bool(dig(trainjob, "spec", "suspend"))
        run.started = time.time()
        if run.job is None:
            self._runtime_missing(trainjob, run, "the runtime has no trainer replicated job")
            return False
        return True

    def _runtime_missing(self, trainjob: dict[str, Any], run: JobRun, why: str = "") -> None:
        if time.time() - run.warned_at < 10:
            return
        run.warned_at = time.time()
        name = dig(trainjob, "spec", "runtimeRef", "name", default="")
        detail = why or (
            f"not found ClusterTrainingRuntime specified in TrainJob: "
            f'ClusterTrainingRuntime.trainer.kubeflow.org "{name}" not found'
        )
        self.events.modern(
            object_ref(trainjob),
            "Warning",
            "TrainJobResourcesCreationFailed",
            f"TrainJob resources reconciliation failed: {detail}",
            "trainjob-controller",
            "Reconciling",
        )

    def _delete_pods(
        self,
        run: JobRun,
        pods: list[dict[str, Any]],
        excuse: bool = False,
        terminal_too: bool = False,
    ) -> None:
        for pod in pods:
            terminal = pod["status"].get("phase") in ("Succeeded", "Failed")
            if not pod["metadata"].get("deletionTimestamp") and (terminal_too or not terminal):
                if excuse:
                    run.excused.add(pod["metadata"]["uid"])
                meta = pod["metadata"]
                with contextlib.suppress(E.ApiError):  # already gone or replaced
                    self.registry.delete(
                        PODS, run.namespace, meta["name"], {"preconditions": {"uid": meta["uid"]}}
                    )
                if run.job is not None and not terminal:
                    self._job_event(
                        run, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}"
                    )

    def _suspension(
        self, trainjob: dict[str, Any], run: JobRun, pods: list[dict[str, Any]]
    ) -> None:
        want = bool(dig(trainjob, "spec", "suspend"))
        if want and not run.suspended:
            run.suspended = True
            self._delete_pods(run, [p for p in pods if active(p)], excuse=True)
            self._job_event(run, "Normal", "Suspended", "Job suspended")
            self._jobset_event(run, "Normal", "SuspendedJobs", "jobset is suspended")
        elif not want and run.suspended:
            runtime = (self.store.get(SNAPSHOTS, run.namespace, run.name) or {}).get("runtime")
            if runtime is not None:
                run.job = build_job(trainjob, runtime, run.jobset_uid, run.job_uid) or run.job
            run.suspended, run.started = False, time.time()
            self._job_event(run, "Normal", "Resumed", "Job resumed")
            self._jobset_event(run, "Normal", "ResumeJobs", "jobset is resumed")

    def _deadline(self, trainjob: dict[str, Any], run: JobRun, pods: list[dict[str, Any]]) -> None:
        seconds = dig(trainjob, "spec", "activeDeadlineSeconds")
        if not seconds or run.finished or run.suspended:
            return
        if time.time() > run.started + seconds:
            run.finished = "DeadlineExceeded"
            self._delete_pods(run, pods)

    def _account(self, run: JobRun, pods: list[dict[str, Any]]) -> None:
        """Count finished pods once, then release their tracking finalizer.

        A pod deleted before it was scheduled never gets a kubelet: it counts as failed (as
        `isPodFailed` has it) and goes as soon as its finalizer is released.
        """
        for pod in pods:
            meta, phase = pod["metadata"], pod["status"].get("phase")
            unscheduled = bool(meta.get("deletionTimestamp")) and not pod["spec"].get("nodeName")
            if phase not in ("Succeeded", "Failed") and not unscheduled:
                continue
            if meta["uid"] not in run.counted:
                run.counted.add(meta["uid"])
                if phase == "Succeeded":
                    run.succeeded.add(int(meta["labels"][INDEX_LABEL]))
                elif meta["uid"] not in run.excused:
                    run.failed += 1
                    run.last_failure = time.monotonic()
            self.store.drop_finalizer(
                "pods", run.namespace, meta["name"], meta["uid"], TRACKING_FINALIZER,
                remove_if_deleted=unscheduled,
            )  # fmt: skip

    def _job_step(self, run: JobRun, pods: list[dict[str, Any]]) -> None:
        """The Job controller: fail or complete, create missing pods."""
        job = run.job
        assert job is not None
        running = [p for p in pods if active(p)]
        restarted = sum(
            restarts(p) for p in running if p["spec"].get("restartPolicy") == "OnFailure"
        )
        if not run.failure_target and run.failed + restarted > job.backoff_limit:
            run.failure_target = True
            self._delete_pods(run, running)
        terminating = [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]
        if run.failure_target:
            if not terminating:
                self._fail(run)
            return
        if len(run.succeeded) >= job.completions:
            if not terminating:
                self._complete(run)
            return
        self._create_missing(run, running)

    def _create_missing(self, run: JobRun, running: list[dict[str, Any]]) -> None:
        job = run.job
        assert job is not None
        if run.failed:
            delay = min(10.0 * 2 ** (run.failed - 1), 600.0)
            if time.monotonic() < run.last_failure + delay:
                return
        busy = {int(p["metadata"]["labels"][INDEX_LABEL]) for p in running}
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job.job_name,
            "uid": job.job_uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        for index in range(job.completions):
            if index in run.succeeded or index in busy:
                continue
            pod = make_pod(job, index, random_suffix(), owner)
            meta = pod["metadata"]
            meta.update(uid=new_uid(), creationTimestamp=rfc3339(), generation=1)
            self.store.put("pods", pod)
            self._job_event(run, "Normal", "SuccessfulCreate", f"Created pod: {meta['name']}")

    def _fail(self, run: JobRun) -> None:
        assert run.job is not None
        run.finished = "Failed"
        self._job_event(
            run, "Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        )
        message = (
            f"jobset failed due to one or more job failures (first failed job: {run.job.job_name})"
        )
        run.conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "FailedJobs",
                "message": message,
                "lastTransitionTime": rfc3339(),
            }
        )
        self._jobset_event(run, "Warning", "FailedJobs", message)

    def _complete(self, run: JobRun) -> None:
        run.finished = "Complete"
        self._job_event(run, "Normal", "Completed", "Job completed")
        run.conditions.append(
            {
                "type": "Complete",
                "status": "True",
                "reason": "AllJobsCompleted",
                "message": "jobset completed successfully",
                "lastTransitionTime": rfc3339(),
            }
        )
        self._jobset_event(run, "Normal", "AllJobsCompleted", "jobset completed successfully")

    # -- status ------------------------------------------------------------------------------
    def _write_status(
        self, trainjob: dict[str, Any], run: JobRun, pods: list[dict[str, Any]]
    ) -> None:
        status = trainjob_status(trainjob, run, pods)
        if status != (trainjob.get("status") or {}):
            meta = trainjob["metadata"]
            self.store.mutate(
                "trainjobs",
                meta["namespace"],
                meta["name"],
                meta["uid"],
                lambda obj: obj.__setitem__("status", status),
            )

    # -- deletion ----------------------------------------------------------------------------
    def _gc_pods(self, run: JobRun, pods: list[dict[str, Any]]) -> bool:
        """Delete the run's pods as the garbage collector does; True once none is left."""
        for pod in pods:
            meta = pod["metadata"]
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                self.store.drop_finalizer(
                    "pods",
                    run.namespace,
                    meta["name"],
                    meta["uid"],
                    TRACKING_FINALIZER,
                    remove_if_deleted=False,
                )
        self._delete_pods(run, self.pods(run), terminal_too=True)
        if self.pods(run):
            return False
        self.ops.remove_network(run.namespace, run.name)
        return True

    def _foreground(
        self, trainjob: dict[str, Any], run: JobRun, pods: list[dict[str, Any]]
    ) -> None:
        """The garbage collector for an owner deleted with `foregroundDeletion`."""
        meta = trainjob["metadata"]
        if "foregroundDeletion" in (meta.get("finalizers") or []) and self._gc_pods(run, pods):
            self.store.drop_finalizer(
                "trainjobs", meta["namespace"], meta["name"], meta["uid"], "foregroundDeletion"
            )

    def _collect(self, run: JobRun) -> None:
        """After the TrainJob is gone: delete its pods (unless orphaned), then its network."""
        if self.store.get(ORPHANED, "", run.uid) is not None:
            if run.job is not None:
                self._account(run, self.pods(run))
                if run.finished is None and not run.suspended:
                    self._job_step(run, self.pods(run))
            return
        if run.job is None or self._gc_pods(run, self.pods(run)):
            snapshot = self.store.get(SNAPSHOTS, run.namespace, run.name)
            if snapshot is not None and snapshot["owner"] == run.uid:
                self.store.remove(SNAPSHOTS, run.namespace, run.name)
            del self.runs[run.uid]
