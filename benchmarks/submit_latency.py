"""Submit -> first line printed by the user function, vs bare torchrun of the same function.

Target (issue 2): ours <= bare + 1.0 s. Uses the embedded default (no PREFECT_API_URL): the
first job also starts the shared local Prefect server, reported separately.

    python benchmarks/submit_latency.py [repeats]
"""

from __future__ import annotations

import inspect
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bare_torchrun_first_line, isolated_home, summary


def first_line_then_torch():
    print("first line", flush=True)
    import torch

    print(torch.ones(2).sum().item())


def ours_first_line(client, trainer) -> tuple[float, str]:
    start = time.perf_counter()
    name = client.train(trainer=trainer)
    for _ in client.get_job_logs(name, step="node-0", follow=True):
        return time.perf_counter() - start, name
    raise RuntimeError("no line")


def main(repeats: int) -> None:
    with isolated_home():
        from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
        from prefect_kubeflow.flows import server

        source = textwrap.dedent(inspect.getsource(first_line_then_torch))
        script = Path(tempfile.mkdtemp()) / "bare.py"
        script.write_text(source + "\nfirst_line_then_torch()\n")
        client = TrainerClient(LocalProcessBackendConfig())
        trainer = CustomTrainer(func=first_line_then_torch)

        cold, name = ours_first_line(client, trainer)
        client.wait_for_job_status(name, timeout=300, polling_interval=0.1)
        started = time.perf_counter()
        while server.running_server_url() is None and time.perf_counter() - started < 120:
            time.sleep(0.2)
        ours, bare = [], []
        for _ in range(repeats):
            bare.append(bare_torchrun_first_line(script))
            latency, name = ours_first_line(client, trainer)
            ours.append(latency)
            client.wait_for_job_status(name, timeout=300, polling_interval=0.1)
        for job in client.list_jobs():
            client.delete_job(job.name)
        extra = statistics.median(ours) - statistics.median(bare)
        print(f"bare torchrun, start -> first line:   {summary(bare)}")
        print(f"prefect-kubeflow, submit -> first line: {summary(ours)}")
        print(f"first job (starts the embedded Prefect server too): {cold:.3f} s")
        print(f"overhead vs bare: +{extra:.3f} s (target <= +1.0 s); ratio "
              f"{statistics.median(ours) / statistics.median(bare):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
