"""A training function the deployments run by default: two nodes of gloo DDP, on the CPU."""


def ddp_train(steps: int = 5) -> dict:
    """Fit y = 2x with DistributedDataParallel; rank 0 returns the final loss and weight."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(1, 1, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.linspace(-1, 1, 32).unsqueeze(1)[rank::world]
    loss = torch.tensor(0.0)
    for step in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), 2 * inputs)
        loss.backward()
        optimizer.step()
        print(f"rank={rank} step={step} loss={loss.item():.4f}")
    weight = model.module.weight.item()
    dist.destroy_process_group()
    return {"world_size": world, "loss": loss.item(), "weight": weight}
