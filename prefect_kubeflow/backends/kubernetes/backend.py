"""Kubernetes backend: each job is a Kubeflow Trainer ``TrainJob`` in one namespace.

The TrainJob carries the job's record (an annotation) and our label; its pods, which the
Trainer operator makes (one per node, the completion index being the node), carry the label too
through a runtime patch. Every read is a label-selected list or a get: a namespace's other pods
are never listed. Gang teardown on a node's failure is the operator's (JobSet's failure policy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from prefect_kubeflow import constants, options
from prefect_kubeflow.backends.base import Backend, JobRecord, JobSpec
from prefect_kubeflow.backends.kubernetes import trainjob as tj
from prefect_kubeflow.backends.kubernetes.api import Cluster, connect
from prefect_kubeflow.backends.kubernetes.podlogs import follow_pod_log, read_pod_log
from prefect_kubeflow.backends.kubernetes.settings import KubernetesSettings
from prefect_kubeflow.backends.logfile import LogLine
from prefect_kubeflow.backends.status import to_trainjob
from prefect_kubeflow.backends.torchrun import resolve_nproc_per_node
from prefect_kubeflow.errors import BackendError, RuntimeNotFoundError, UnsupportedOptionError
from prefect_kubeflow.progress import TrainerStatus
from prefect_kubeflow.runtimes.parsing import RuntimeSpec, runtimes_from
from prefect_kubeflow.types import Event, TrainJob

FAILURE_LOG_LINES = 20
logger = logging.getLogger(__name__)


class KubernetesBackend(Backend):
    """Runs each job as a TrainJob; the cluster's objects are the job records."""

    supported_options = options.COMMON | options.KUBERNETES_ONLY
    gang_restarts = False
    restarts_hint = (
        "a cluster restarts a gang by its runtime's JobSet failurePolicy.maxRestarts, which a "
        "TrainJob cannot set (its runtimePatches do not reach failurePolicy); train on a "
        "ClusterTrainingRuntime that sets it"
    )

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self._cluster: Cluster | None = None
        self._lock = threading.Lock()

    @property
    def cluster(self) -> Cluster:
        """The cluster, connected on first use."""
        with self._lock:
            if self._cluster is None:
                self._cluster = Cluster(connect(self.settings), self.settings)
            return self._cluster

    # -- creating ----------------------------------------------------------------------------

    def create(self, spec: JobSpec) -> None:
        """Create the TrainJob (one call: nothing is left behind when it fails).

        Raises:
            RuntimeNotFoundError: the cluster has no ClusterTrainingRuntime of the spec's name.
            NameConflictError: a TrainJob of this name exists.
        """
        runtime = self.cluster.read_runtime(spec.runtime_name)
        if runtime is None:
            known = [item["metadata"]["name"] for item in self.cluster.list_runtimes()]
            raise RuntimeNotFoundError(
                spec.runtime_name,
                known,
                hint=f" on the cluster at {self.cluster.host}: install it as a "
                f"{tj.RUNTIME_KIND} (kubectl apply -f) or train on one of those",
            )
        if spec.custom_image and spec.trainer_command is None and _runtime_command(runtime):
            raise UnsupportedOptionError(
                f"runtime {spec.runtime_name!r} gives its node the command "
                f"{_runtime_command(runtime)!r}, which would run instead of image "
                f"{spec.image!r}'s own: give the command with the TrainerCommand option"
            )
        nproc, device = resolve_nproc_per_node(spec.num_proc_per_node, spec.resources_per_node, 0)
        image = spec.image if spec.custom_image else _runtime_image(runtime) or spec.image
        record = JobRecord.for_spec(spec, image, nproc, device)
        self.cluster.create_trainjob(
            tj.build_trainjob(spec, record, self.settings.rendezvous_timeout)
        )

    def record_flow_run(self, name: str, flow_run_id: str) -> None:
        """Label and annotate the TrainJob with its Prefect flow run."""
        value = tj.label_value(flow_run_id)
        self.cluster.patch_trainjob(
            name,
            {
                "metadata": {
                    "labels": {tj.FLOW_RUN_KEY: value},
                    "annotations": {tj.FLOW_RUN_KEY: flow_run_id},
                }
            },
        )

    def cancel(self, name: str, message: str) -> None:
        """Annotate the TrainJob with why it is cancelled, then stop it (suspended, unless a
        node failed already)."""
        trainjob = self._ours(name)
        if trainjob is None:
            return  # deleted: nothing left to cancel
        if tj.CANCELLED_KEY not in (trainjob["metadata"].get("annotations") or {}):
            patch = {"metadata": {"annotations": {tj.CANCELLED_KEY: message}}}  # the first why
            self.cluster.patch_trainjob(name, patch)
        super().cancel(name, message)

    def record_event(self, name: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event about the TrainJob; a failure to is logged."""
        trainjob = self._ours(name)
        if trainjob is None:
            return
        involved = {
            "apiVersion": constants.API_VERSION,
            "kind": tj.KIND,
            "name": name,
            "uid": trainjob["metadata"].get("uid", ""),
        }
        try:
            self.cluster.create_event(involved, reason, message)
        except BackendError as exc:
            logger.warning("could not record event %s of TrainJob %s: %s", reason, name, exc)

    def cancelled(self, name: str) -> str | None:
        """Why the job was cancelled, from its TrainJob's annotation."""
        trainjob = self._ours(name)
        annotations = (trainjob or {}).get("metadata", {}).get("annotations") or {}
        return annotations.get(tj.CANCELLED_KEY)

    # -- reading -----------------------------------------------------------------------------

    def _ours(self, name: str) -> dict[str, Any] | None:
        """The TrainJob `name` if it is one of ours and not being deleted."""
        trainjob = self.cluster.read_trainjob(name)
        if trainjob is None or tj.is_deleting(trainjob):
            return None
        if constants.JOB_RECORD_KEY not in (trainjob["metadata"].get("annotations") or {}):
            return None  # made by someone else: not a job of this backend
        return trainjob

    def _pods(self, name: str) -> list[dict[str, Any]]:
        return self.cluster.list_pods(f"{tj.JOBSET_LABEL}={name}")

    def describe(self, name: str) -> TrainJob | None:
        """The job as its TrainJob and pods show it now."""
        trainjob = self._ours(name)
        if trainjob is None:
            return None
        return self._to_trainjob(trainjob, self._pods(name), read_logs=True)

    def list_jobs(self) -> list[TrainJob]:
        """The namespace's TrainJobs of this backend, oldest first: two label-selected lists
        (TrainJobs, their pods), whatever the number of jobs. A TrainJob whose record this
        version cannot read is skipped with a warning."""
        ours = tj.selector({constants.BACKEND_VERSION_LABEL: ""})
        trainjobs = self.cluster.list_trainjobs(ours)
        if not trainjobs:
            self.cluster.check_namespace()  # a list in a missing namespace is merely empty
        pods: dict[str, list[dict[str, Any]]] = {}
        for pod in self.cluster.list_pods(ours) if trainjobs else []:
            job = pod["metadata"].get("labels", {}).get(tj.JOBSET_LABEL)
            pods.setdefault(str(job), []).append(pod)
        jobs = []
        for trainjob in trainjobs:
            if tj.is_deleting(trainjob):
                continue
            name = trainjob["metadata"]["name"]
            try:
                jobs.append(self._to_trainjob(trainjob, pods.get(name, []), read_logs=False))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "skipping %s: its record is not one this version reads (%s)", name, exc
                )
        return sorted(jobs, key=lambda job: job.creation_timestamp)

    def _to_trainjob(
        self, trainjob: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], read_logs: bool
    ) -> TrainJob:
        """The job from its TrainJob (record, verdict) and pods (steps); never from its
        runtime, which may have been deleted since."""
        record = tj.record_of(trainjob)
        by_index = tj.pods_by_index(pods)
        verdict = tj.verdict(trainjob)
        states = tj.node_states(by_index, record.num_nodes, verdict)

        def failure(index: int) -> str:
            pod = by_index.get(index)
            tail = ""
            if read_logs and pod is not None and not (tj.terminated(pod) or {}).get("message"):
                tail = self._log_tail(pod["metadata"]["name"])
            return tj.failure_message(index, pod, tail)

        job = to_trainjob(record, states, failure)
        job.image_digest = tj.image_digest(by_index)
        # Reported through the Trainer's status server (update_trainjob_status).
        job.trainer_status = TrainerStatus.from_api(
            (trainjob.get("status") or {}).get("trainerStatus")
        )
        job.steps = [
            replace(step, pod_name=by_index[index]["metadata"]["name"])
            if index in by_index
            else step
            for index, step in enumerate(job.steps)
        ]
        if verdict is not None and job.status != verdict:
            # The operator has decided (pods may be gone): its word is final.
            job.status = verdict
            if verdict == constants.TRAINJOB_FAILED and job.message is None:
                job.message = _condition_message(trainjob, verdict)
        cancelled = (trainjob["metadata"].get("annotations") or {}).get(tj.CANCELLED_KEY)
        if cancelled is not None and job.status != constants.TRAINJOB_COMPLETE:
            # Suspended: the operator removes its pods, whatever they were doing.
            stopped = job.message if job.status == constants.TRAINJOB_FAILED else None
            job.status = constants.TRAINJOB_FAILED
            job.message = f"{cancelled}; {stopped or 'its nodes were stopped'}"
            job.steps = [
                step
                if step.status == constants.STEP_SUCCEEDED
                else replace(step, status=constants.STEP_FAILED)
                for step in job.steps
            ]
        return job

    def _log_tail(self, pod: str) -> str:
        try:
            return "\n".join(
                line.text for line in read_pod_log(self.cluster, pod, FAILURE_LOG_LINES)
            )
        except BackendError as exc:
            logger.warning("could not read the log of pod %s: %s", pod, exc)
            return ""

    def node_logs(
        self, name: str, node_index: int, follow: bool = False, tail_lines: int | None = None
    ) -> Iterator[LogLine]:
        """The node's pod log; with `follow`, from its container's start to its end, resuming
        after interruptions."""
        if self._ours(name) is None:
            raise self.not_found(name)
        if follow:
            return follow_pod_log(
                self.cluster,
                lambda: self._pod_state(name, node_index),
                tail_lines,
                self.settings.log_idle_timeout,
                self.settings.poll_interval,
            )
        pod = tj.pods_by_index(self._pods(name)).get(node_index)
        if pod is None or not _started(pod):
            return iter(())
        return read_pod_log(self.cluster, pod["metadata"]["name"], tail_lines)

    def result(self, name: str) -> bytes | None:
        """Rank 0's pickled return value, from node 0's pod."""
        if self._ours(name) is None:
            raise self.not_found(name)
        return tj.result_of(tj.pods_by_index(self._pods(name)).get(0))

    def _pod_state(self, name: str, node_index: int) -> tuple[str, bool] | None:
        """The node's pod once its container has started, and whether it has ended; None
        when the job is gone (or ended without the pod ever starting)."""
        while True:
            trainjob = self._ours(name)
            if trainjob is None:
                return None
            pod = tj.pods_by_index(self._pods(name)).get(node_index)
            if pod is not None and _started(pod):
                return pod["metadata"]["name"], tj.terminated(pod) is not None
            if tj.verdict(trainjob) is not None or trainjob["spec"].get("suspend"):
                return None
            time.sleep(self.settings.poll_interval)

    def events(self, name: str) -> list[Event]:
        """Kubernetes events about the job, oldest first: its TrainJob and JobSet (which share
        its name), the node Job the JobSet runs, and its pods."""
        if self._ours(name) is None:
            raise self.not_found(name)
        involved = [name, f"{name}-{constants.NODE}-0"]
        involved += [pod["metadata"]["name"] for pod in self._pods(name)]
        events = []
        for object_name in involved:
            for item in self.cluster.list_events(f"involvedObject.name={object_name}"):
                events.append(_event(item))
        return sorted(events, key=lambda event: event.event_time)

    def restart(self, name: str) -> None:
        """Not here: max_restarts is refused for this backend before a job is created."""
        raise BackendError(f"the Kubernetes backend does not restart TrainJob {name!r}")

    def runtimes(self) -> list[RuntimeSpec]:
        """The cluster's ClusterTrainingRuntimes (one that cannot be read is skipped)."""
        specs = []
        for item in self.cluster.list_runtimes():
            name = item.get("metadata", {}).get("name")
            origin = f"cluster:{self.cluster.host}/{tj.RUNTIME_KIND}/{name}"
            try:
                specs.extend(runtimes_from([item], origin))
            except (BackendError, ValueError) as exc:
                logger.warning("skipping runtime %s of the cluster: %s", name, exc)
        return specs

    # -- stopping and deleting ---------------------------------------------------------------

    def stop(self, name: str) -> None:
        """Stop every node: once a node failed, the operator's failure policy does; otherwise
        the TrainJob is suspended (the operator then removes its pods)."""
        trainjob = self._ours(name)
        if trainjob is None or tj.verdict(trainjob) is not None:
            return
        if any(tj.node_state(pod).phase == constants.STEP_FAILED for pod in self._pods(name)):
            return
        self.cluster.patch_trainjob(name, {"spec": {"suspend": True}})

    def delete(self, name: str) -> bool:
        """Delete the TrainJob, its pods first (foreground), and wait until it is gone."""
        existed = self.cluster.delete_trainjob(name)
        deadline = time.monotonic() + self.settings.delete_timeout
        while existed and self.cluster.read_trainjob(name) is not None:
            if time.monotonic() > deadline:
                logger.warning(
                    "TrainJob %s is still being deleted after %.0f s; the cluster finishes it",
                    name,
                    self.settings.delete_timeout,
                )
                break
            time.sleep(self.settings.poll_interval)
        return existed


def _started(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's node container has started (its log can be read)."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if status.get("name") == constants.NODE and ("running" in state or "terminated" in state):
            return True
    return False


def _runtime_image(runtime: Mapping[str, Any]) -> str | None:
    """The node container's image in a ClusterTrainingRuntime object."""
    try:
        [spec] = runtimes_from([dict(runtime)], "cluster")
    except (ValueError, BackendError):
        return None
    return spec.runtime.trainer.image or None


def _runtime_command(runtime: Mapping[str, Any]) -> list[str]:
    """The command a ClusterTrainingRuntime gives its node container (empty: the image's)."""
    try:
        [spec] = runtimes_from([dict(runtime)], "cluster")
    except (ValueError, BackendError):
        return []
    return list(spec.runtime.trainer.command)


def _condition_message(trainjob: Mapping[str, Any], kind: str) -> str:
    for condition in trainjob.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("message") or condition.get("reason") or kind)
    return kind


def _event(item: Mapping[str, Any]) -> Event:
    """A Kubernetes Event as the Kubeflow SDK's `Event`."""
    involved = item.get("involvedObject") or {}
    when = (
        item.get("lastTimestamp")
        or item.get("eventTime")
        or item["metadata"].get("creationTimestamp")
    )
    return Event(
        involved_object_kind=str(involved.get("kind", "")),
        involved_object_name=str(involved.get("name", "")),
        message=str(item.get("message", "")),
        reason=str(item.get("reason", "")),
        event_time=datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        if when
        else datetime.now(timezone.utc),
    )
