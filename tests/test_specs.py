"""The pure builders: processes per node and the node command, without running anything."""

from pathlib import Path

import pytest

from prefect_kubeflow.backends.torchrun import ENTRYPOINT, resolve_nproc_per_node, torchrun_argv
from prefect_kubeflow.errors import InvalidInputError


@pytest.mark.parametrize(
    ("value", "resources", "visible", "expected"),
    [
        (4, {}, 0, (4, "cpu")),
        (2, {"gpu": 2}, 0, (2, "gpu")),
        ("auto", {}, 0, (1, "cpu")),
        ("auto", {}, 8, (8, "gpu")),
        ("auto", {"cpu": 2}, 0, (2, "cpu")),
        ("auto", {"cpu": "1500m"}, 0, (1, "cpu")),
        ("auto", {"cpu": "0.5"}, 0, (1, "cpu")),
        ("auto", {"cpu": 4, "nvidia.com/gpu": 2}, 8, (2, "gpu")),
        ("auto", {"cpu": 3}, 8, (3, "cpu")),
        ("cpu", {"gpu": 2, "cpu": 6}, 0, (6, "cpu")),
        ("gpu", {}, 4, (4, "gpu")),
        ("gpu", {}, 0, (1, "cpu")),
    ],
)
def test_processes_per_node(value, resources, visible, expected):
    assert resolve_nproc_per_node(value, resources, visible) == expected


def test_an_unknown_policy_is_refused():
    with pytest.raises(InvalidInputError, match="numProcPerNode 'many' is invalid"):
        resolve_nproc_per_node("many", {}, 0)


def test_the_node_command_is_an_argv_list():
    argv = torchrun_argv("/py", 3, 2, 4, "127.0.0.1", 29500, ENTRYPOINT, Path("/jobs/a b; rm"))
    assert argv == [
        "/py", "-m", "torch.distributed.run", "--nnodes", "3", "--node_rank", "2",
        "--nproc_per_node", "4", "--master_addr", "127.0.0.1", "--master_port", "29500",
        str(ENTRYPOINT), "/jobs/a b; rm",
    ]  # fmt: skip
