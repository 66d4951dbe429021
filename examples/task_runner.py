"""A learning-rate sweep as a Prefect flow: each task run is a 2-node TrainJob on local
processes, the map runs them at once, and each future is rank 0's return value.

    python examples/task_runner.py

With no PREFECT_API_URL set, the flow uses the embedded Prefect server (started once, reused).
"""

import os

from prefect_kubeflow.flows import server

# Before Prefect reads its settings: otherwise it would start a throw-away server of its own.
os.environ.setdefault("PREFECT_API_URL", server.ensure_server())

from prefect import flow, task

from prefect_kubeflow import LocalProcessBackendConfig, TrainJobTaskRunner


@task(retries=1)
def fit(lr: float, steps: int = 20) -> dict:
    """Fit y = 2x with DDP; runs on every rank, rank 0's dict is the task's result."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    inputs = torch.linspace(-1, 1, 64).unsqueeze(1)[rank::world]
    loss = torch.tensor(0.0)
    for step in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), 2 * inputs)
        loss.backward()
        optimizer.step()
        print(f"rank {rank}/{world} lr {lr} step {step} loss {loss.item():.4f}")
    weight = model.module.weight.item()
    dist.destroy_process_group()
    return {"lr": lr, "loss": loss.item(), "weight": weight}


@flow(task_runner=TrainJobTaskRunner(backend_config=LocalProcessBackendConfig(), num_nodes=2))
def sweep(rates: list[float]) -> dict:
    """Train once per learning rate, all at once; the best run's result."""
    results = [future.result() for future in fit.map(rates)]
    for result in results:
        print(f"lr {result['lr']}: loss {result['loss']:.5f}, weight {result['weight']:.3f}")
    return min(results, key=lambda result: result["loss"])


if __name__ == "__main__":
    best = sweep([0.05, 0.2, 0.5])
    print(f"best: {best}")
    print(f"the flow runs, with a TrainJob under each task run: {server.ensure_server()[:-4]}/runs")
