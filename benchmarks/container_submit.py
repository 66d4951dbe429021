"""4-node job: submit -> the first line of every node, ours vs raw parallel `docker run` /
`podman run` of the same image and torchrun command on a network (target: ratio <= TARGET).
Also the memory of our supervising process (peak RSS) while its flow follows the nodes' logs.

    python benchmarks/container_submit.py [repeats] [docker|podman ...]

Needs the engines running and the test image (scripts/start-container-engines.sh,
scripts/build-test-image.sh).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import isolated_home, supervisor_of

# Submit -> every node's first line, ours over raw (issue: one backend contract).
TARGET = 1.10

IMAGE = "localhost/prefect-kubeflow-test:debian12-torch1.13"
NODES = 4
MARKER = "first-line-of-node"


def print_first_line():
    import os

    print(f"first-line-of-node {os.environ['GROUP_RANK']}", flush=True)


def raw_run(engine: str, script_dir: Path) -> float:
    """Seconds from launching NODES `engine run` in parallel (after creating their network) to
    the first line of every one of them."""
    tag = uuid.uuid4().hex[:8]
    network = f"raw-{tag}-net"
    start = time.perf_counter()
    subprocess.run([engine, "network", "create", network], check=True, capture_output=True)
    runs = []
    for rank in range(NODES):
        command = [
            engine, "run", "--rm", "--name", f"raw-{tag}-node-{rank}", "--network", network,
            "-v", f"{script_dir}:/bench:ro", IMAGE,
            "python3", "-m", "torch.distributed.run", "--nnodes", str(NODES),
            "--node_rank", str(rank), "--nproc_per_node", "1",
            "--master_addr", f"raw-{tag}-node-0", "--master_port", "29500", "/bench/line.py",
        ]  # fmt: skip
        runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    firsts = []
    for run in runs:
        assert run.stdout is not None
        for line in run.stdout:
            if MARKER.encode() in line:
                firsts.append(time.perf_counter() - start)
                break
    for run in runs:
        run.wait()
    subprocess.run([engine, "network", "rm", network], check=True, capture_output=True)
    return max(firsts)


def ours(client: Any) -> tuple[float, float]:
    """Seconds from train() to the first line of every node, and the supervising process's
    peak RSS in MiB while it ran the job's flow (following every node's log)."""
    from prefect_kubeflow import CustomTrainer
    from prefect_kubeflow.backends import processes

    start = time.perf_counter()
    name = client.train(trainer=CustomTrainer(func=print_first_line, num_nodes=NODES))
    peak = [0]

    def sample() -> None:
        pid, started, _ = supervisor_of(name)
        status = Path(f"/proc/{pid}/status")
        while processes.is_alive(pid, started):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                break
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seen: set[str] = set()
    elapsed = 0.0
    for line in client.get_job_logs(name, follow=True):
        if MARKER in line:
            seen.add(line.split("]")[0])
            if len(seen) == NODES:
                elapsed = time.perf_counter() - start
                break
    client.wait_for_job_status(name, timeout=300)
    # The supervisor ends once its flow run has every line: the next run starts on a quiet
    # machine, as the raw runs do.
    sampler.join(timeout=600)
    client.delete_job(name)
    return elapsed, peak[0] / 1024


def main(repeats: int, engines: list[str]) -> None:
    with isolated_home() as home:
        # Imported here: Prefect reads its settings from the isolated home.
        from prefect_kubeflow import ContainerBackendConfig, TrainerClient

        script_dir = Path(tempfile.mkdtemp(dir=home))
        (script_dir / "line.py").write_text(
            "import os\nprint(f'" + MARKER + ' {os.environ["GROUP_RANK"]}\', flush=True)\n'
        )
        for engine in engines:
            client = TrainerClient(
                backend_config=ContainerBackendConfig(
                    container_runtime=engine,
                    image=IMAGE,
                    pull_policy="Never",
                    jobs_dir=str(home / "jobs"),
                )
            )
            ours(client)  # warm-up: starts the embedded Prefect server once, waits for its end
            raw_run(engine, script_dir)
            raw_times, our_times, peaks = [], [], []
            for _ in range(repeats):  # interleaved, so that both see the same machine
                raw_times.append(raw_run(engine, script_dir))
                elapsed, peak = ours(client)
                our_times.append(elapsed)
                peaks.append(peak)
            raw_median, our_median = statistics.median(raw_times), statistics.median(our_times)
            print(f"{engine}: {NODES} nodes, submit -> first line of every node, {repeats} runs")
            print(f"  raw parallel {engine} run: median {raw_median:.2f} s  {_all(raw_times)}")
            print(f"  prefect-kubeflow:         median {our_median:.2f} s  {_all(our_times)}")
            verdict = "meets" if our_median / raw_median <= TARGET else "MISSES"
            print(f"  ratio {our_median / raw_median:.2f} ({verdict} the target of {TARGET})")
            peak = statistics.median(peaks)
            print(
                f"  supervising process peak RSS while following {NODES} nodes: median "
                f"{peak:.0f} MiB = {peak / NODES:.0f} MiB per node"
            )


def _all(times: list[float]) -> str:
    return "(" + ", ".join(f"{t:.2f}" for t in times) + ")"


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    main(count, sys.argv[2:] or ["docker", "podman"])
