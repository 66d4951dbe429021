"""Training functions the tests ship to nodes (each must be self-contained)."""


def print_streams(count: int = 3):
    import sys

    for i in range(count):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)
    sys.stdout.write("progress 10%\rprogress 50%\rprogress 100%\n")
    sys.stdout.flush()


def wait_for_file(path: str, text: str = "waiting"):
    import os
    import time

    print(text)
    while not os.path.exists(path):
        time.sleep(0.05)
    print("released")


def fail_on_rank(rank_to_fail: int = 1, sleep_others: float = 300.0):
    import os
    import time

    rank = int(os.environ["RANK"])
    if rank == rank_to_fail:
        raise ValueError(f"boom on rank {rank}")
    print(f"rank {rank} sleeping")
    time.sleep(sleep_others)


def sleep_forever(seconds: float = 600.0):
    import os
    import time

    print(f"rank {os.environ['RANK']} pid {os.getpid()} started")
    time.sleep(seconds)


def print_env(name: str = "PK_TEST_VAR"):
    import os

    print(f"{name}={os.environ.get(name)} PATH_SET={bool(os.environ.get('PATH'))}")


def import_package(module: str = "tinypkg"):
    import importlib

    mod = importlib.import_module(module)
    print(f"{module} {mod.VALUE} from {mod.__file__}")


def many_lines(count: int = 1000):
    for i in range(count):
        print(f"line {i}")


def takes_two(a: int, b: str = "x"):
    print(a, b)


def rank_env(name: str = "PK_TEST_VAR"):
    import os

    print(
        f"rank={os.environ['RANK']} local_world={os.environ['LOCAL_WORLD_SIZE']} "
        f"{name}={os.environ.get(name)}"
    )


def ddp_report(marker: str = "sum"):
    """A 2x2-able DDP step that also writes to stderr and draws a progress bar."""
    import sys

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    print(f"rank={rank} world={world} {marker}={total.item():.0f}")
    print(f"warning from rank={rank}", file=sys.stderr)
    if rank == 0:
        sys.stdout.write("progress 10%\rprogress 50%\rprogress 100%\n")
        sys.stdout.flush()
    dist.barrier()
    dist.destroy_process_group()


def ddp_result(scale: int = 1):
    """A 2-node DDP step whose every rank returns a value; rank 0's is the job's result."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    print(f"rank={rank} returns")
    dist.destroy_process_group()
    return {"rank": rank, "world": world, "sum": total * scale}


def returns_local_class(label: str = "best"):
    """A value of a class defined in the function: only cloudpickle (by value) can ship it."""
    import os
    from dataclasses import dataclass

    @dataclass
    class Checkpoint:
        label: str
        rank: int

    return Checkpoint(label, int(os.environ["RANK"]))


def returns_unpicklable():
    """A generator cannot be pickled: rank 0 fails, naming its type."""
    return (i for i in range(3))


def fails_first_attempt(rank_to_fail: int = 1):
    import os
    import time

    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    rank = int(os.environ["RANK"])
    print(f"attempt {attempt} rank {rank} started")
    if attempt == 0:
        if rank == rank_to_fail:
            raise ValueError(f"first attempt fails on rank {rank}")
        time.sleep(300)  # until the gang is torn down
    return attempt


def paced_lines(count: int = 100, seconds: float = 15.0):
    """`count` numbered lines evenly over `seconds`, each flushed at once."""
    import os
    import time

    rank = os.environ["RANK"]
    for i in range(count):
        print(f"rank {rank} line {i}", flush=True)
        time.sleep(seconds / count)


def paced_lines_of(messages: list[str], rank: int) -> list[str]:
    """The lines `paced_lines` wrote on `rank`, in the order given: torch's own chatter (a
    missing-NumPy warning, an agent's shutdown error) is not the function's and may vary."""
    return [message for message in messages if message.startswith(f"rank {rank} line ")]


def reports_progress():
    """Reports progress twice (a third report, too soon after the first, is throttled)."""
    import os
    import time

    from prefect_kubeflow import update_trainjob_status

    first = update_trainjob_status(50, 6, {"loss": 0.5})
    throttled = update_trainjob_status(60)
    time.sleep(5.5)
    last = update_trainjob_status(100, 0, {"loss": 0.25, "step": 10})
    print(f"rank {os.environ['RANK']} reported {first} {throttled} {last}", flush=True)
