"""TrainJobTaskRunner overhead and concurrency, local backend, embedded Prefect server.

1. One ``.submit(...).result()`` of a 2-node job, vs ``client.train()`` +
   ``wait_for_job_status`` of the same job (issue 11 target: ratio <= 1.10).
2. ``.map`` over 8 inputs (2-node jobs) vs 8 submits one after the other, each awaited: the
   map runs its jobs at once.

    python benchmarks/task_runner.py [repeats] [--no-map]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import isolated_home, summary


def two_node_step(seconds: float = 0.0) -> int:
    """A gloo all-reduce over the 2 nodes (then `seconds` of "training"); rank 0's sum."""
    import time

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    dist.destroy_process_group()
    time.sleep(seconds)
    return int(total.item())


def main(repeats: int) -> None:
    with isolated_home():
        import os

        from prefect_kubeflow.flows import server
        from prefect_kubeflow.flows.logs import drain

        os.environ["PREFECT_API_URL"] = server.ensure_server()
        from prefect import flow, task

        from prefect_kubeflow import (
            CustomTrainer,
            LocalProcessBackendConfig,
            TrainerClient,
            TrainJobTaskRunner,
        )

        config = LocalProcessBackendConfig()
        client = TrainerClient(config)
        step = task(two_node_step)

        def by_client() -> float:
            start = time.perf_counter()
            name = client.train(trainer=CustomTrainer(func=two_node_step, num_nodes=2))
            client.wait_for_job_status(name, timeout=300, polling_interval=0.05)
            return time.perf_counter() - start

        @flow(task_runner=TrainJobTaskRunner(backend_config=config, num_nodes=2))
        def by_task_runner() -> float:
            start = time.perf_counter()
            assert step.submit().result() == 3
            return time.perf_counter() - start

        @flow(task_runner=TrainJobTaskRunner(backend_config=config, num_nodes=2))
        def mapped(count: int, seconds: float) -> float:
            start = time.perf_counter()
            assert [f.result() for f in step.map([seconds] * count)] == [3] * count
            return time.perf_counter() - start

        @flow(task_runner=TrainJobTaskRunner(backend_config=config, num_nodes=2))
        def one_after_another(count: int, seconds: float) -> float:
            start = time.perf_counter()
            for _ in range(count):
                assert step.submit(seconds).result() == 3
            return time.perf_counter() - start

        by_client(), by_task_runner()  # warm: imports, the server's first writes
        ours, baseline = [], []
        for _ in range(repeats):
            baseline.append(by_client())
            ours.append(by_task_runner())
        ratio = statistics.median(ours) / statistics.median(baseline)
        print(f"client.train + wait_for_job_status: {summary(baseline)}")
        print(f"TrainJobTaskRunner .submit().result(): {summary(ours)}")
        print(f"ratio task runner / client: {ratio:.2f} (target <= 1.10)")
        drain(timeout=60)  # the flows' last logs, before the server stops
        for job in client.list_jobs():
            client.delete_job(job.name)

        # Each job trains 20 s: what the jobs overlap is what the map saves.
        if "--no-map" in sys.argv:
            return
        together = mapped(8, 20.0)
        apart = one_after_another(8, 20.0)
        print(f".map over 8 inputs (2-node jobs, 20 s each): {together:.1f} s")
        print(f"8 submits one after another, each awaited: {apart:.1f} s")
        print(f"speed-up of the map: {apart / together:.1f}x")
        drain(timeout=60)
        for job in client.list_jobs():
            client.delete_job(job.name)


if __name__ == "__main__":
    numbers = [arg for arg in sys.argv[1:] if arg.isdigit()]
    main(int(numbers[0]) if numbers else 5)
