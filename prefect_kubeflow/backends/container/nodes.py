"""The node containers of the container backend's jobs, as the engine lists them: one list
call, labels and states, exit codes of ended ones; and what those labels and the job's folder
say of a job (its attempt, whether it is being deleted); and removing all of a job."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from docker.errors import DockerException

from prefect_kubeflow.backends.container.engine import Engine, engine_errors, is_not_found
from prefect_kubeflow.backends.container.specs import (
    ATTEMPT_LABEL,
    BACKEND_LABEL,
    JOB_DIR_LABEL,
    JOB_LABEL,
)
from prefect_kubeflow.files import remove_tree

CREATED_FILE = "created"  # the last attempt of which every node exists
DELETING_FILE = "deleting"  # the job is being deleted: it no longer reads as a job
# Engine states of a container that has not ended (Podman names more than Docker); any other
# (exited, dead, stopped) has, and is inspected for its exit code.
PENDING_STATES = ("created", "configured", "initialized")
RUNNING_STATES = ("running", "paused", "restarting", "stopping", "removing")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?")


@dataclass(frozen=True)
class Node:
    """A node's container as the engine lists it; the exit code once it has exited."""

    id: str
    labels: dict[str, str]
    state: str
    exit_code: int | None = None
    finished_at: float = float("inf")
    oom_killed: bool = False


def list_nodes(engine: Engine, name: str | None = None) -> list[Node]:
    """The node containers of job `name` (of every job without), from one list call;
    only exited ones are inspected (for their exit code). Light on purpose: a full
    inspect of every container, polled while nodes start, slows the engine's starts."""
    labels = [BACKEND_LABEL] + ([f"{JOB_LABEL}={name}"] if name else [])
    api = engine.client.api
    with engine_errors("listing containers"):
        rows = api.containers(all=True, filters={"label": labels})
    nodes = []
    for row in rows:
        node = Node(row["Id"], dict(row.get("Labels") or {}), str(row.get("State") or ""))
        if node.state not in RUNNING_STATES and node.state not in PENDING_STATES:
            with engine_errors(f"inspecting container {row['Id'][:12]}"):
                try:
                    details = api.inspect_container(row["Id"])["State"]
                except DockerException as exc:
                    if is_not_found(exc):
                        continue  # removed while we listed
                    raise
            node = Node(
                node.id,
                node.labels,
                node.state,
                int(details["ExitCode"]),
                epoch(str(details["FinishedAt"])),
                bool(details.get("OOMKilled")),
            )
        nodes.append(node)
    return nodes


def attempt_of(node: Node) -> int:
    """The attempt of the gang a node container belongs to."""
    return int(node.labels.get(ATTEMPT_LABEL) or 0)


def created_attempt(job_dir: Path) -> int | None:
    """The last attempt whose containers were all created; None before the first."""
    try:
        return int((job_dir / CREATED_FILE).read_text() or 0)
    except (OSError, ValueError):
        return None


def deleting(nodes: list[Node]) -> bool:
    """Whether the job of these nodes is being deleted."""
    return (Path(nodes[0].labels[JOB_DIR_LABEL]) / DELETING_FILE).exists()


def by_job(nodes: list[Node]) -> dict[str, list[Node]]:
    """Node containers grouped by their job."""
    grouped: dict[str, list[Node]] = {}
    for node in nodes:
        grouped.setdefault(node.labels[JOB_LABEL], []).append(node)
    return grouped


def epoch(timestamp: str) -> float:
    """An engine's RFC 3339 time (nanoseconds, UTC) as Unix seconds; far future if unparsable."""
    match = _RFC3339.match(timestamp)
    if match is None:
        return float("inf")
    whole = datetime.fromisoformat(match[1]).replace(tzinfo=timezone.utc).timestamp()
    return whole + float(match[2] or 0)


def remove_job(engine: Engine, name: str, job_dir: Path, only_this_folder: bool = False) -> bool:
    """Remove every container, the network and the folder of the job; whatever exists.
    Whether anything did."""
    api = engine.client.api
    labels = [f"{JOB_LABEL}={name}", BACKEND_LABEL]
    if only_this_folder:
        labels.append(f"{JOB_DIR_LABEL}={job_dir}")
    label = {"label": labels}
    with engine_errors(f"listing what is left of {name}"):
        containers = api.containers(all=True, filters=label)
        networks = api.networks(filters=label)
    existed = bool(containers or networks) or job_dir.is_dir()
    for container in containers:
        with engine_errors(f"removing a container of {name}"):
            try:
                api.remove_container(container["Id"], force=True)
            except DockerException as exc:
                if not is_not_found(exc):
                    raise
    for network in networks:
        with engine_errors(f"removing network {network['Name']}"):
            try:
                api.remove_network(network["Id"])
            except DockerException as exc:
                if not is_not_found(exc):
                    raise
    remove_tree(job_dir, f"the folder of job {name}")
    return existed
