"""A 2-node PyTorch DDP TrainJob on the local process backend, its logs followed live.

    python examples/train_local.py

No Prefect server to start: the first job starts an embedded one and later jobs reuse it.
"""

import os

from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
from prefect_kubeflow.constants import constants
from prefect_kubeflow.flows import server


def train_model(lr: float = 0.1, steps: int = 5):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        x = torch.randn(32, 8)
        loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"rank {rank}/{world} step {step} loss {loss.item():.4f}")
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    print(f"rank {rank}: all_reduce of ranks = {total.item():.0f}")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    client = TrainerClient(backend_config=LocalProcessBackendConfig())
    job = client.train(
        trainer=CustomTrainer(
            func=train_model,
            func_args={"lr": 0.05},
            num_nodes=2,
            resources_per_node={"cpu": 2},
        )
    )
    print(f"TrainJob {job} submitted; following all nodes:")
    for line in client.get_job_logs(job, follow=True):
        print(line, end="")
    finished = client.wait_for_job_status(job, status={constants.TRAINJOB_COMPLETE}, timeout=600)
    print(
        f"{finished.name}: {finished.status}, steps {[(s.name, s.status) for s in finished.steps]}"
    )
    print("jobs:", [(j.name, j.status) for j in client.list_jobs()][-3:])
    if not os.environ.get("PREFECT_API_URL"):
        # The embedded default: one local Prefect server, reused by every job. The first job
        # starts it, which can take a minute on a fresh machine: wait for it here.
        print("waiting for the embedded Prefect server...")
        ui = server.ensure_server()
        print(f"flow run {job} in the Prefect UI: {ui.removesuffix('/api')}/runs")
    print(f"keep it, or delete it with TrainerClient().delete_job({job!r})")


if __name__ == "__main__":
    main()
