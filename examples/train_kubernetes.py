"""A 4-node PyTorch DDP TrainJob on a Kubernetes cluster running Kubeflow Trainer.

    python examples/train_kubernetes.py [--namespace kubeflow] [--context NAME]

Needs a kubeconfig ($KUBECONFIG or ~/.kube/config) for a cluster with Kubeflow Trainer and its
``torch-distributed`` ClusterTrainingRuntime installed. Not run in CI (no cluster there): the
tests run the same code against a loopback API server playing the operator.
"""

import argparse

from prefect_kubeflow import CustomTrainer, KubernetesBackendConfig, TrainerClient
from prefect_kubeflow.constants import constants


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
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="kubeflow")
    parser.add_argument("--context", default=None)
    args = parser.parse_args()
    backend_config = KubernetesBackendConfig(namespace=args.namespace, context=args.context)
    client = TrainerClient(backend_config=backend_config)
    print("runtimes:", [(r.name, r.origin) for r in client.list_runtimes()][:5])
    trainer = CustomTrainer(func=train_model, num_nodes=4, resources_per_node={"cpu": 2})
    job_name = client.train(trainer=trainer)
    print(f"TrainJob {job_name} created in namespace {args.namespace}; following all nodes:")
    for line in client.get_job_logs(job_name, follow=True):
        print(line, end="")
    job = client.wait_for_job_status(job_name, status={constants.TRAINJOB_COMPLETE}, timeout=1800)
    print(f"{job.name}: {job.status}, steps {[(s.name, s.status, s.pod_name) for s in job.steps]}")
    for event in client.get_job_events(job_name)[-5:]:
        print(f"event {event.involved_object_name}: {event.reason} {event.message}")
    print(f"delete it with: TrainerClient(backend_config=...).delete_job({job_name!r})")


if __name__ == "__main__":
    main()
