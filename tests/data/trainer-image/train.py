"""A training image's own script: torchrun finds its peers from the PET_* environment."""

import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
total = torch.tensor([rank + 1])
dist.all_reduce(total)
attempt = os.environ.get("PREFECT_KUBEFLOW_RESTART_COUNT")
print(f"image rank={rank} world={world} sum={int(total)} attempt={attempt}", flush=True)
dist.destroy_process_group()
