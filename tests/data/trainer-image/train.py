"""A training image's own script: torchrun finds its peers from the PET_* environment."""

import os
import sys

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
total = torch.tensor([rank + 1])
dist.all_reduce(total)
attempt = os.environ.get("PREFECT_KUBEFLOW_RESTART_COUNT")
# One write per line: two ranks share the node's pipe (print writes text and newline apart).
sys.stdout.write(f"image rank={rank} world={world} sum={int(total)} attempt={attempt}\n")
sys.stdout.flush()
dist.destroy_process_group()
