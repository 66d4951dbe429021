"""How a node runs torchrun: processes per node, and the command. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect_kubeflow import constants
from prefect_kubeflow.errors import InvalidInputError
from prefect_kubeflow.resources import gpu_count, quantity

# The script each torchrun worker runs: it loads the shipped function and calls it.
ENTRYPOINT = Path(__file__).with_name("entrypoint.py")


def resolve_nproc_per_node(
    value: int | str, resources: Mapping[str, Any], visible_gpus: int
) -> tuple[int, str]:
    """Processes per node and their device (``cpu``/``gpu``), as Kubeflow Trainer resolves
    ``numProcPerNode``: an int as is; ``auto``: the GPUs asked for in `resources`, else the CPUs
    asked for, else the visible GPUs, else 1; ``cpu``/``gpu``: that device's count."""
    gpus = gpu_count(resources)
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 1), "gpu" if gpus else "cpu"
    if value not in constants.NPROC_POLICIES:
        raise InvalidInputError(
            f"numProcPerNode {value!r} is invalid; use an int or one of {constants.NPROC_POLICIES}"
        )
    if value != "cpu" and (gpus or (value == "gpu" and visible_gpus)):
        return gpus or visible_gpus, "gpu"
    if value != "gpu" and constants.CPU_LABEL in resources:
        return max(int(quantity(resources[constants.CPU_LABEL])), 1), "cpu"
    if value == "auto" and visible_gpus:
        return visible_gpus, "gpu"
    return 1, "cpu"


def torchrun_argv(
    python: str,
    num_nodes: int,
    node_rank: int,
    nproc_per_node: int,
    master_addr: str,
    master_port: int,
    entrypoint: Path,
    job_dir: Path,
    rendezvous_timeout: int | None = None,
) -> list[str]:
    """One node's torchrun command (static rendezvous at `master_addr`, node rank = index):
    an argv list, never a shell string. With `rendezvous_timeout`, a node gives up waiting for
    the others (and node 0's store) after that many seconds instead of torch's 600."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(num_nodes),
        "--node_rank",
        str(node_rank),
        "--nproc_per_node",
        str(nproc_per_node),
        "--master_addr",
        master_addr,
        "--master_port",
        str(master_port),
        *(["--rdzv_conf", f"timeout={rendezvous_timeout}"] if rendezvous_timeout else []),
        str(entrypoint),
        str(job_dir),
    ]


def pip_install_command(
    python: str, packages: list[str], index_urls: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The pip command installing `packages` from `index_urls` (the first is the index, the
    others extra ones), and the environment it needs. The URLs go in the environment, not the
    argv: they may carry credentials, and any user of the machine can read an argv. A
    plain-HTTP index the user named is trusted as such."""
    argv = [python, "-m", "pip", "install", "--no-input", *packages]
    env = {"PIP_INDEX_URL": index_urls[0]}
    if index_urls[1:]:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(index_urls[1:])
    insecure = [urlsplit(u).hostname for u in index_urls if urlsplit(u).scheme == "http"]
    if any(insecure):
        env["PIP_TRUSTED_HOST"] = " ".join(host for host in insecure if host)
    return argv, env


def redact_url(url: str) -> str:
    """`url` without the user and password it may carry, for messages and logs."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
