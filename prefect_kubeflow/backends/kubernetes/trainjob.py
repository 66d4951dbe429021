"""A TrainJob as the Trainer CRD expects it, and its pods read back as nodes. Pure functions:
every body the backend would send is checked in a test with no cluster.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect_kubeflow import constants
from prefect_kubeflow._version import __version__
from prefect_kubeflow.backends.base import JobRecord, JobSpec
from prefect_kubeflow.backends.kubernetes import bootstrap
from prefect_kubeflow.backends.status import NodeState, exit_header
from prefect_kubeflow.backends.torchrun import ENTRYPOINT, pip_install_command
from prefect_kubeflow.errors import BackendError, InvalidInputError
from prefect_kubeflow.options import RESERVED_MANAGER
from prefect_kubeflow.resources import gpu_count

KIND = "TrainJob"
RUNTIME_KIND = "ClusterTrainingRuntime"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
FLOW_RUN_KEY = constants.LABEL_PREFIX + "flow-run-id"
CANCELLED_KEY = constants.LABEL_PREFIX + "cancelled"  # why Backend.cancel stopped it
PATCH_MANAGER = RESERVED_MANAGER
PYTHON = "python3"


def compact_source(source: str) -> str:
    """`source` without docstrings and comments: it travels in every TrainJob and pod object
    (listing a thousand jobs reads them all), and stays plain Python a person can read."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


BOOTSTRAP = compact_source(Path(__file__).with_name("bootstrap.py").read_text())
WORKER_ENTRYPOINT = compact_source(ENTRYPOINT.read_text())
MAX_COMMAND_ITEM_BYTES = 1024 * 1024  # the CRD's limit on one command item
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")
_STOP_EXIT_CODE = 128 + 15  # SIGTERM: how a gang's other nodes are stopped


def label_value(text: str) -> str:
    """`text` as a valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric ends)."""
    return _LABEL_VALUE.sub("-", text)[:63].strip("-._")


def backend_labels() -> dict[str, str]:
    """The label every TrainJob and pod of this backend carries (server-side selection)."""
    return {constants.BACKEND_VERSION_LABEL: label_value(__version__)}


def selector(labels: Mapping[str, str]) -> str:
    """A label selector matching `labels`; a key with an empty value only has to exist."""
    return ",".join(f"{key}={value}" if value else key for key, value in labels.items())


def node_command(spec: JobSpec, rendezvous_timeout: int | None) -> list[str]:
    """The node container's command: the bootstrap program and its payload, two argv items.

    Raises:
        InvalidInputError: the payload is over the CRD's 1 MiB per command item.
    """
    payload = json.dumps(
        {
            "name": spec.function_name,
            "args": spec.func_args,
            "source": spec.function_source,
            "entrypoint": WORKER_ENTRYPOINT,
            "packages": list(spec.packages_to_install),
            "rendezvous_timeout": rendezvous_timeout,
        }
    )
    if len(payload.encode()) > MAX_COMMAND_ITEM_BYTES:
        raise InvalidInputError(
            f"the function {spec.function_name!r} with its func_args is "
            f"{len(payload.encode())} bytes; a TrainJob command item holds at most "
            f"{MAX_COMMAND_ITEM_BYTES} (pass large data by path or URL instead)"
        )
    return [PYTHON, "-c", BOOTSTRAP, payload]


def node_resources(resources: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``resourcesPerNode``: requests equal to limits, ``gpu`` as ``nvidia.com/gpu``."""
    wanted: dict[str, str] = {}
    for key in (constants.CPU_LABEL, constants.MEMORY_LABEL):
        if key in resources:
            wanted[key] = str(resources[key])
    if gpu_count(resources):
        wanted[constants.GPU_LABEL] = str(gpu_count(resources))
    return {"requests": dict(wanted), "limits": dict(wanted)} if wanted else {}


def node_env(spec: JobSpec) -> list[dict[str, str]]:
    """The trainer's env, plus where pip finds packages when there are any to install."""
    env = dict(spec.env)
    if spec.packages_to_install:
        index_urls = list(spec.pip_index_urls or constants.DEFAULT_PIP_INDEX_URLS)
        env.update(pip_install_command(PYTHON, [], index_urls)[1])
    return [{"name": key, "value": value} for key, value in env.items()]


def build_trainjob(
    spec: JobSpec, record: JobRecord, rendezvous_timeout: int | None = None
) -> dict[str, Any]:
    """The TrainJob running `spec`: its runtime by reference, the nodes' command (or a
    `CustomTrainerContainer`'s image, command and args), env and resources, the user's and our
    labels on it and (through a runtime patch) ours on its pods, the record in an annotation,
    and the user's runtime patches."""
    labels = {**backend_labels(), constants.TRAINJOB_NAME_LABEL: spec.name}
    trainer: dict[str, Any] = {"numNodes": spec.num_nodes, "numProcPerNode": record.nproc_per_node}
    if spec.custom_image:  # the image's own command, unless the options override it
        trainer["image"] = spec.image
        if spec.trainer_command is not None:
            trainer["command"] = list(spec.trainer_command)
        if spec.trainer_args is not None:
            trainer["args"] = list(spec.trainer_args)
    else:
        trainer["command"] = node_command(spec, rendezvous_timeout)
    if env := node_env(spec):
        trainer["env"] = env
    if resources := node_resources(spec.resources_per_node):
        trainer["resourcesPerNode"] = resources
    pod_metadata = {"labels": labels}
    node_patch = {
        "name": constants.NODE,
        "template": {"spec": {"template": {"metadata": pod_metadata}}},
    }
    return {
        "apiVersion": constants.API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "labels": {**spec.labels, **labels},
            "annotations": {**spec.annotations, constants.JOB_RECORD_KEY: record.to_json()},
        },
        "spec": {
            "runtimeRef": {
                "apiGroup": constants.GROUP,
                "kind": RUNTIME_KIND,
                "name": spec.runtime_name,
            },
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_patch]}}},
                },
                *spec.runtime_patches,
            ],
        },
    }


def record_of(trainjob: Mapping[str, Any]) -> JobRecord:
    """The record kept in the TrainJob's annotation."""
    return JobRecord.from_json(trainjob["metadata"]["annotations"][constants.JOB_RECORD_KEY])


def is_deleting(trainjob: Mapping[str, Any]) -> bool:
    """Whether the TrainJob is being deleted (it then no longer reads as a job)."""
    return bool(trainjob["metadata"].get("deletionTimestamp"))


def verdict(trainjob: Mapping[str, Any]) -> str | None:
    """Complete or Failed when a condition of that type is True; else None (still going)."""
    for condition in trainjob.get("status", {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in (
            constants.TRAINJOB_COMPLETE,
            constants.TRAINJOB_FAILED,
        ):
            return str(condition["type"])
    return None


def pods_by_index(pods: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """The job's newest pod of each node index."""
    newest: dict[int, Mapping[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        index = pod["metadata"].get("labels", {}).get(INDEX_LABEL)
        if index is not None and str(index).isdigit():
            newest[int(index)] = pod
    return newest


def image_digest(pods: Mapping[int, Mapping[str, Any]]) -> str | None:
    """The digest of the image the nodes ran, from a node container's ``imageID`` (the
    kubelet's: ``docker-pullable://repo@sha256:…``, ``repo@sha256:…`` or ``docker://sha256:…``);
    None before any node container started."""
    for pod in pods.values():
        for status in pod.get("status", {}).get("containerStatuses") or []:
            image_id = str(status.get("imageID") or "")
            if status.get("name") == constants.NODE and image_id:
                reference = image_id.rpartition("://")[2]  # without the runtime's scheme
                return reference.rpartition("@")[2] or None
    return None


def terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The node container's terminated state; None while it has not ended."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == constants.NODE:
            ended: Mapping[str, Any] | None = (status.get("state") or {}).get("terminated")
            return ended
    return None


def node_state(pod: Mapping[str, Any] | None, verdict: str | None = None) -> NodeState:
    """A pod as a node: its phase; once ended, when (a node SIGTERMed by the gang's stop
    ranks after a failure in the same second: pod times have one-second precision). Once the
    job has its verdict, a node without an ended pod ended with it (a failed Job deletes its
    other pods)."""
    phase = (pod or {}).get("status", {}).get("phase")
    if verdict is not None and phase not in (constants.STEP_SUCCEEDED, constants.STEP_FAILED):
        return NodeState(
            constants.STEP_SUCCEEDED
            if verdict == constants.TRAINJOB_COMPLETE
            else constants.STEP_FAILED
        )
    if pod is None or phase not in (constants.STEP_SUCCEEDED, constants.STEP_FAILED):
        running = phase == constants.STEP_RUNNING
        return NodeState(constants.STEP_RUNNING if running else constants.STEP_PENDING)
    ended = terminated(pod) or {}
    code = int(ended.get("exitCode", 0 if phase == constants.STEP_SUCCEEDED else 1))
    at = _epoch(ended.get("finishedAt")) + (0.5 if code == _STOP_EXIT_CODE else 0.0)
    return NodeState.ended(code, at)


def node_states(
    by_index: Mapping[int, Mapping[str, Any]], num_nodes: int, verdict: str | None
) -> list[NodeState]:
    """Every node's state. Once a node has failed, a node whose pod is gone or being deleted
    was stopped by the failure policy: it reads Failed at once, not Running or Pending until
    the kubelet and the controllers catch up."""
    states = [node_state(by_index.get(index), verdict) for index in range(num_nodes)]
    if any(state.phase == constants.STEP_FAILED for state in states):
        ended = (constants.STEP_SUCCEEDED, constants.STEP_FAILED)
        states = [
            NodeState(constants.STEP_FAILED)
            if state.phase not in ended
            and (index not in by_index or by_index[index]["metadata"].get("deletionTimestamp"))
            else state
            for index, state in enumerate(states)
        ]
    return states


def result_of(pod: Mapping[str, Any] | None) -> bytes | None:
    """Rank 0's pickled return value, from node 0's termination message; None without one.

    Raises:
        BackendError: the value was over what a termination message holds, or is garbled.
    """
    message = str(((terminated(pod) or {}) if pod else {}).get("message") or "")
    if message.startswith(bootstrap.RESULT_TOO_LARGE_MARK):
        size = message[len(bootstrap.RESULT_TOO_LARGE_MARK) :]
        raise BackendError(
            f"rank 0's return value was {size} bytes pickled; on Kubernetes a result travels in "
            f"the pod's termination message, which holds {bootstrap.TERMINATION_LIMIT} bytes "
            "compressed: return less, or write it to storage and return its path"
        )
    if not message.startswith(bootstrap.RESULT_MARK):
        return None
    try:
        return zlib.decompress(base64.b64decode(message[len(bootstrap.RESULT_MARK) :]))
    except (ValueError, zlib.error) as exc:  # binascii.Error is a ValueError
        raise BackendError(f"node 0's termination message holds no readable result: {exc}") from exc


def failure_message(index: int, pod: Mapping[str, Any] | None, log_tail: str = "") -> str:
    """Why a node failed: how it ended, an out-of-memory kill, then the failing rank's
    traceback (the termination message) or, without one, the node's last lines."""
    if pod is None:
        return f"{constants.NODE}-{index}: its pod was removed (the job had failed)"
    ended = terminated(pod) or {}
    message = exit_header(index, int(ended.get("exitCode", 1)))
    if ended.get("reason") == "OOMKilled":
        message += " (OOMKilled: out of memory; raise resources_per_node['memory'])"
    detail = str(ended.get("message") or "").rstrip() or log_tail.rstrip()
    if detail:
        separator = "; " if detail.startswith("rank ") else "\n"
        message += separator + detail
    return message


def _epoch(timestamp: str | None) -> float:
    """A Kubernetes RFC 3339 time as Unix seconds; far future when absent."""
    if not timestamp:
        return float("inf")
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
