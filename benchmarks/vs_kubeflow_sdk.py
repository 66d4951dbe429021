"""Submit -> Complete of one torch job: the Kubeflow SDK 0.5 LocalProcessBackend vs ours.

The Kubeflow SDK builds a venv and pip-installs torch for every job; we reuse a cached venv.
Both install the same torch (2.13.0, CPU, from the machine's wheel folder: a constraint file
keeps pip from choosing a multi-GB CUDA build). Target (issue 2): ours >= 20x faster, warm cache.

    python benchmarks/vs_kubeflow_sdk.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import isolated_home

KUBEFLOW_DRIVER = textwrap.dedent(
    """
    import time
    from kubeflow.trainer import CustomTrainer, LocalProcessBackendConfig, TrainerClient

    def train():
        import torch
        print("sum", torch.ones(4).sum().item())

    client = TrainerClient(backend_config=LocalProcessBackendConfig())
    start = time.perf_counter()
    name = client.train(trainer=CustomTrainer(func=train))
    job = client.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=1800,
                                      polling_interval=1)
    print("KUBEFLOW", job.status, time.perf_counter() - start)
    """
)


def train():
    import torch

    print("sum", torch.ones(4).sum().item())


def kubeflow_seconds(folder: Path) -> float:
    venv = folder / "kubeflow-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "kubeflow==0.5.0"], check=True)
    constraints = folder / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    driver = folder / "driver.py"
    driver.write_text(KUBEFLOW_DRIVER)
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(driver)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PIP_CONSTRAINT": str(constraints)},
        timeout=1900,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("KUBEFLOW"))
    _, status, seconds = line.split()
    if status != "Complete":
        raise RuntimeError(f"the Kubeflow SDK job ended {status}:\n{result.stderr[-2000:]}")
    return float(seconds)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="pk-vs-kubeflow-"))
    kubeflow = kubeflow_seconds(folder)
    with isolated_home():
        from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient

        client = TrainerClient(LocalProcessBackendConfig())
        trainer = CustomTrainer(func=train, packages_to_install=["torch==2.13.0"])
        timings = []
        for _ in range(3):  # the first builds the venv (and the embedded server), then warm
            start = time.perf_counter()
            name = client.train(trainer=trainer)
            client.wait_for_job_status(name, timeout=600, polling_interval=0.1)
            timings.append(time.perf_counter() - start)
        for job in client.list_jobs():
            client.delete_job(job.name)
    warm = min(timings[1:])
    print(f"Kubeflow SDK 0.5 LocalProcessBackend, submit -> Complete: {kubeflow:.1f} s")
    print(f"prefect-kubeflow, cold venv cache: {timings[0]:.2f} s")
    print(f"prefect-kubeflow, warm venv cache: {warm:.2f} s")
    print(f"speed-up (warm): {kubeflow / warm:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
