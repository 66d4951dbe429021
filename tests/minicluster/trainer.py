"""TrainJob + runtime -> JobSet -> Job -> pod objects (Trainer torch/plainml, JobSet, Job).

Mirrors kubeflow/trainer @8c0f505 (`newRuntimeInfo`, torch `EnforceMLPolicy`, jobset
`Builder`), JobSet's webhook defaults and `labelAndAnnotateObject`, and the Job controller's
indexed pods. Only the replicated job whose template carries
`trainer.kubeflow.org/trainjob-ancestor-step: trainer` (the `node` job) is run; initializer
jobs of other runtimes are not.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .patches import strategic_merge
from .util import deep, dig, parse_quantity, quantity_value

ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"
MASTER_PORT = 29500  # constants.ContainerTrainerPort
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
INDEX_PATH = f"metadata.annotations['{INDEX_ANNOTATION}']"
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
DEFAULT_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]


@dataclass
class JobSpec:
    """The child Job of the trainer replicated job, with its pod template."""

    jobset: str
    namespace: str
    replicated_job: str
    job_name: str
    job_uid: str
    jobset_uid: str
    completions: int
    backoff_limit: int
    pod_template: dict[str, Any]


def upsert(items: list[dict[str, Any]], item: dict[str, Any], key: str = "name") -> None:
    """`apply.UpsertEnvVars`/`UpsertPort`: replace by key in place, else append."""
    for index, current in enumerate(items):
        if current.get(key) == item.get(key):
            items[index] = item
            return
    items.append(item)


def _merge_patches(trainjob: dict[str, Any], template: dict[str, Any]) -> None:
    """`mergeRuntimePatches`: strategic-merge each replicated-job patch into its Job template."""
    jobs = dig(template, "spec", "replicatedJobs", default=[]) or []
    for patch in dig(trainjob, "spec", "runtimePatches", default=[]) or []:
        for job_patch in (
            dig(patch, "trainingRuntimeSpec", "template", "spec", "replicatedJobs", default=[])
            or []
        ):
            if job_patch.get("template") is None:
                continue
            for job in jobs:
                if job.get("name") == job_patch.get("name"):
                    job["template"] = strategic_merge(
                        job.get("template") or {}, job_patch["template"]
                    )


def _cpu_count(resources: dict[str, Any]) -> int:
    """torch `getNumCPUPerNode`: requests.cpu, else limits.cpu, rounded up."""
    request = dig(resources, "requests", "cpu")
    if request is None or parse_quantity(request) == 0:
        limit = dig(resources, "limits", "cpu")
        return quantity_value(limit) if limit is not None else 0
    return quantity_value(request)


def _gpu_count(resources: dict[str, Any]) -> int:
    for section in ("requests", "limits"):
        for name, value in (resources.get(section) or {}).items():
            if "gpu" in name.lower() and quantity_value(value) > 0:
                return quantity_value(value)
    return 0


def _enforce_torch(trainjob: dict[str, Any], node: dict[str, Any], count: int) -> None:
    """torch `EnforceMLPolicy`: trainer env, PET_* env and the rendezvous port."""
    trainer = dig(trainjob, "spec", "trainer", default={}) or {}
    nproc: str = "auto"
    if trainer.get("numProcPerNode") is not None:
        nproc = str(trainer["numProcPerNode"])
    resources = trainer.get("resourcesPerNode") or node.get("resources") or {}
    if nproc == "auto" and _gpu_count(resources) == 0:
        nproc = str(max(1, _cpu_count(resources)))
    env = node.setdefault("env", [])
    if dig(trainjob, "spec", "trainer") is not None:
        for var in trainer.get("env") or []:
            upsert(env, deep(var))
    name = trainjob["metadata"]["name"]
    for var in (
        {"name": "PET_NNODES", "value": str(count)},
        {"name": "PET_NPROC_PER_NODE", "value": nproc},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": INDEX_PATH}}},
        {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
        {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
    ):
        upsert(env, var)
    upsert(node.setdefault("ports", []), {"containerPort": MASTER_PORT}, key="containerPort")


def _apply_trainer(trainjob: dict[str, Any], node: dict[str, Any]) -> None:
    """jobset `Builder.Trainer`: image, command, args and env from `spec.trainer`."""
    trainer = dig(trainjob, "spec", "trainer")
    if trainer is None:
        return
    for key in ("image", "command", "args"):
        if trainer.get(key) is not None:
            node[key] = deep(trainer[key])
    for var in trainer.get("env") or []:
        upsert(node.setdefault("env", []), deep(var))


def build_job(
    trainjob: dict[str, Any], runtime: dict[str, Any], jobset_uid: str, job_uid: str
) -> JobSpec | None:
    """The trainer Job for a TrainJob (None when the runtime has no trainer job)."""
    template = deep(dig(runtime, "spec", "template", default={}) or {})
    _merge_patches(trainjob, template)
    jobs = dig(template, "spec", "replicatedJobs", default=[]) or []
    job = next(
        (j for j in jobs if dig(j, "template", "metadata", "labels", ANCESTOR) == "trainer"), None
    )
    if job is None:
        return None
    ml_policy = dig(runtime, "spec", "mlPolicy")
    count = dig(job, "template", "spec", "parallelism", default=1)
    if isinstance(ml_policy, dict):
        count = ml_policy.get("numNodes", 1)
    ml_policy = ml_policy or {}
    trainer = dig(trainjob, "spec", "trainer", default={}) or {}
    if trainer.get("numNodes") is not None:
        count = trainer["numNodes"]
    pod_spec = (
        job["template"].setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    )
    node = next((c for c in pod_spec.get("containers", []) if c.get("name") == "node"), None)
    if node is not None:
        if trainer.get("resourcesPerNode") is not None:
            node["resources"] = deep(trainer["resourcesPerNode"])
        if "torch" in ml_policy:
            _enforce_torch(trainjob, node, count)
        _apply_trainer(trainjob, node)
    name, namespace = trainjob["metadata"]["name"], trainjob["metadata"]["namespace"]
    job_spec = job["template"]["spec"]
    pod_spec.setdefault("restartPolicy", "OnFailure")  # JobSet webhook default
    return JobSpec(
        jobset=name,
        namespace=namespace,
        replicated_job=job["name"],
        job_name=f"{name}-{job['name']}-0",
        job_uid=job_uid,
        jobset_uid=jobset_uid,
        completions=int(count),
        backoff_limit=int(job_spec.get("backoffLimit", 6)),
        pod_template=_label_template(job, name, namespace, jobset_uid, job_uid),
    )


def _label_template(
    job: dict[str, Any], jobset: str, namespace: str, jobset_uid: str, job_uid: str
) -> dict[str, Any]:
    """JobSet's `labelAndAnnotateObject` plus the Job controller's selector labels."""
    template = deep(job["template"]["spec"]["template"])
    job_name = f"{jobset}-{job['name']}-0"
    common = {
        "jobset.sigs.k8s.io/jobset-name": jobset,
        "jobset.sigs.k8s.io/jobset-uid": jobset_uid,
        "jobset.sigs.k8s.io/replicatedjob-name": job["name"],
        "jobset.sigs.k8s.io/restart-attempt": "0",
        "jobset.sigs.k8s.io/replicatedjob-replicas": "1",
        "jobset.sigs.k8s.io/global-replicas": "1",
        "jobset.sigs.k8s.io/job-index": "0",
        "jobset.sigs.k8s.io/job-key": hashlib.sha1(f"{namespace}/{job_name}".encode()).hexdigest(),
        "jobset.sigs.k8s.io/job-global-index": "0",
        "jobset.sigs.k8s.io/group-name": "default",
        "jobset.sigs.k8s.io/group-replicas": "1",
        "jobset.sigs.k8s.io/job-group-index": "0",
    }
    meta = template.setdefault("metadata", {})
    meta["labels"] = {
        **(meta.get("labels") or {}),
        **common,
        "batch.kubernetes.io/controller-uid": job_uid,
        "batch.kubernetes.io/job-name": job_name,
        "controller-uid": job_uid,
        "job-name": job_name,
    }
    meta["annotations"] = {**(meta.get("annotations") or {}), **common}
    return template


def _pull_policy(image: str) -> str:
    name = image.split("@")[0]
    tag = name.rsplit(":", 1)[1] if re.search(r":[^/]+$", name) else ""
    return "Always" if "@" not in image and tag in ("", "latest") else "IfNotPresent"


def default_container(container: dict[str, Any]) -> None:
    """API-server defaults of a container."""
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", _pull_policy(container.get("image", "")))
    resources = container.setdefault("resources", {})
    for name, value in (resources.get("limits") or {}).items():
        resources.setdefault("requests", {}).setdefault(name, value)
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def make_pod(job: JobSpec, index: int, suffix: str, owner: dict[str, Any]) -> dict[str, Any]:
    """The pod the Job controller creates for one completion index."""
    template = deep(job.pod_template)
    meta = template.get("metadata", {})
    labels = {**meta.get("labels", {}), INDEX_ANNOTATION: str(index)}
    annotations = {**meta.get("annotations", {}), INDEX_ANNOTATION: str(index)}
    spec = template.get("spec", {})
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        default_container(container)
        upsert(
            container.setdefault("env", []),
            {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": INDEX_PATH}}},
        )
    spec.update(hostname=f"{job.job_name}-{index}", subdomain=job.jobset)
    for key, value in (
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
        ("securityContext", {}),
        ("serviceAccountName", "default"),
        ("enableServiceLinks", True),
        ("preemptionPolicy", "PreemptLowerPriority"),
        ("priority", 0),
    ):
        spec.setdefault(key, value)
    spec["serviceAccount"] = spec["serviceAccountName"]
    spec.setdefault("tolerations", []).extend(
        t for t in DEFAULT_TOLERATIONS if t not in spec["tolerations"]
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job.job_name}-{index}-{suffix}",
            "generateName": f"{job.job_name}-{index}-",
            "namespace": job.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
            "finalizers": [TRACKING_FINALIZER],
        },
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": qos_class(spec)},
    }


def qos_class(spec: dict[str, Any]) -> str:
    """`BestEffort`, `Guaranteed` or `Burstable`."""
    containers = spec.get("containers", [])
    resources = [c.get("resources") or {} for c in containers]
    if all(not r.get("requests") and not r.get("limits") for r in resources):
        return "BestEffort"
    for res in resources:
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or parse_quantity(limits[name]) != parse_quantity(
                requests.get(name, limits[name])
            ):
                return "Burstable"
    return "Guaranteed"
