"""The Kubernetes backend against a cluster in miniature (tests/minicluster: a loopback API
server whose pods are Docker containers), beside the container backend on the same job:

- `list_jobs` over 1,000 TrainJobs in the namespace (target: <= 0.5 s), and the Kubeflow SDK's
  way (one pod list per job) in the same run as the baseline;
- submit -> the first line of every node (2 nodes), Kubernetes / container;
- a node's failure -> the job reads Failed, Kubernetes / container.

    python benchmarks/kubernetes_backend.py [repeats]

Needs Docker and the test image (scripts/start-container-engines.sh,
scripts/build-test-image.sh).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import isolated_home

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

LIST_TARGET = 0.5
SDK_SAMPLE = 50
JOBS = int(__import__("os").environ.get("PK_BENCH_JOBS", "1000"))
NODES = 2
IMAGE = "localhost/prefect-kubeflow-test:debian12-torch1.13"
MARKER = "first-line-of-node"


def print_first_line():
    import os

    print(f"first-line-of-node {os.environ['GROUP_RANK']}", flush=True)


def fail_on_node_1():
    import os
    import time

    if os.environ["GROUP_RANK"] == "1":
        print(f"failing at {time.time():.6f}", flush=True)
        raise SystemExit(3)
    time.sleep(600)


def list_benchmark(cluster: Any, config: Any) -> None:
    """Seconds for list_jobs over JOBS TrainJobs (each with its NODES pods), and for the
    Kubeflow SDK's way: one label-selected pod list per TrainJob."""
    from prefect_kubeflow import CustomTrainer, TrainerClient
    from prefect_kubeflow.backends.kubernetes import trainjob as tj

    client = TrainerClient(backend_config=config)
    backend = client.backend
    spec = client.build_spec(CustomTrainer(func=print_first_line, num_nodes=NODES))
    cluster.pause_operator()  # the jobs stay as created: a thousand jobs would not run here
    for number in range(JOBS):
        name = f"bench-{number:04d}"
        job = tj.build_trainjob(
            type(spec)(**{**spec.__dict__, "name": name}),
            tj.JobRecord.for_spec(spec, IMAGE, 1, "cpu"),
        )
        # The first through the API (which validates it); the rest stored directly.
        created = backend.cluster.create_trainjob(job) if number == 0 else cluster.add_trainjob(job)
        for index in range(NODES):
            cluster.add_finished_pod(created, index)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        jobs = backend.list_jobs()
        runs.append(time.perf_counter() - start)
        assert len(jobs) == JOBS and all(j.status == "Complete" for j in jobs), jobs[:1]
    # The Kubeflow SDK's way, one pod list per job, timed on SDK_SAMPLE jobs of the same
    # namespace and scaled to all of them (each call filters every pod of the namespace).
    trainjobs = backend.cluster.list_trainjobs("")
    start = time.perf_counter()
    for trainjob in trainjobs[:SDK_SAMPLE]:
        backend.cluster.list_pods(f"{tj.JOBSET_LABEL}={trainjob['metadata']['name']}")
    sdk = (time.perf_counter() - start) / SDK_SAMPLE * len(trainjobs)
    ours = statistics.median(runs)
    verdict = "meets" if ours <= LIST_TARGET else "MISSES"
    print(f"list_jobs over {JOBS} TrainJobs x {NODES} pods: median {ours:.3f} s {_all(runs)}")
    print(f"  {verdict} the target of {LIST_TARGET} s")
    print(f"  one pod list per job (the Kubeflow SDK's way): {sdk:.1f} s = {sdk / ours:.0f}x")


def first_lines(client: Any) -> float:
    """Seconds from train() to the first line of every node."""
    from prefect_kubeflow import CustomTrainer

    start = time.perf_counter()
    name = client.train(trainer=CustomTrainer(func=print_first_line, num_nodes=NODES))
    seen: set[str] = set()
    elapsed = 0.0
    for line in client.get_job_logs(name, follow=True):
        if MARKER in line:
            seen.add(line.split("]")[0])
            if len(seen) == NODES:
                elapsed = time.perf_counter() - start
                break
    client.wait_for_job_status(name, timeout=300)
    client.delete_job(name)
    return elapsed


def failure_to_failed(client: Any) -> float:
    """Seconds from node-1's failure (the time it printed) to the job reading Failed."""
    from prefect_kubeflow import CustomTrainer
    from prefect_kubeflow.errors import JobFailedError

    name = client.train(trainer=CustomTrainer(func=fail_on_node_1, num_nodes=NODES))
    try:
        client.wait_for_job_status(name, timeout=300, polling_interval=0.05)
    except JobFailedError:
        failed = time.time()
    else:
        raise AssertionError("the job did not fail")
    [line] = [
        line for line in client.get_job_logs(name, step="node-1") if line.startswith("failing at")
    ]
    client.delete_job(name)
    return failed - float(line.split()[-1])


def main(repeats: int) -> None:
    with isolated_home() as home:
        from minicluster import MiniCluster

        from prefect_kubeflow import (
            ContainerBackendConfig,
            KubernetesBackendConfig,
            TrainerClient,
        )

        cluster = MiniCluster(Path(tempfile.mkdtemp(dir=home)), image=IMAGE).start()
        try:
            cluster.install_crds()
            cluster.install_default_runtime(backoff_limit=0, restart_policy="Never")  # fail-fast
            kube = TrainerClient(
                backend_config=KubernetesBackendConfig(config_file=str(cluster.kubeconfig_path))
            )
            container = TrainerClient(
                backend_config=ContainerBackendConfig(
                    container_runtime="docker", image=IMAGE, pull_policy="Never",
                    jobs_dir=str(home / "jobs"), stop_grace_period_seconds=5,
                )
            )  # fmt: skip
            first_lines(container)  # warm-up: starts the embedded Prefect server once
            first_lines(kube)
            results: dict[str, dict[str, list[float]]] = {"submit": {}, "failure": {}}
            for _ in range(repeats):  # interleaved: both see the same machine
                for label, client in (("kubernetes", kube), ("container", container)):
                    results["submit"].setdefault(label, []).append(first_lines(client))
                    results["failure"].setdefault(label, []).append(failure_to_failed(client))
            for what, title in (
                ("submit", f"submit -> first line of every node ({NODES} nodes)"),
                ("failure", "a node's failure -> job Failed"),
            ):
                k8s = statistics.median(results[what]["kubernetes"])
                ctr = statistics.median(results[what]["container"])
                print(f"{title}, {repeats} runs:")
                for label, median in (("container (docker)", ctr), ("kubernetes", k8s)):
                    runs = _all(results[what][label.split()[0]])
                    print(f"  {label + ' backend:':27} median {median:.2f} s {runs}")
                print(f"  ratio kubernetes / container: {k8s / ctr:.2f}")
            list_benchmark(cluster, kube.backend_config)
        finally:
            cluster.stop()


def _all(times: list[float]) -> str:
    return "(" + ", ".join(f"{t:.2f}" for t in times) + ")"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
