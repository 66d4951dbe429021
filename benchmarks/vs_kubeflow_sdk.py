"""Submit -> Complete of one torch job: the Kubeflow SDK 0.5 LocalProcessBackend vs ours.

The Kubeflow SDK builds a venv and pip-installs torch for every job (its local runtime needs
torch in `packages_to_install`, or torchrun is missing); we reuse a cached venv.

    python benchmarks/vs_kubeflow_sdk.py [pinned|latest]

pinned (default): both ask for torch==2.13.0 (CPU, from the machine's wheel folder).
latest: the Kubeflow SDK job asks for plain "torch", as its users write it: pip then installs
the newest allowed build (a multi-GB CUDA one), which is what makes its job take minutes.
Target (issue 2): ours >= 20x faster on a warm cache.
"""

from __future__ import annotations

import os
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
    name = client.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(func=train, packages_to_install=[TORCH]),
    )
    job = client.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=1800,
                                      polling_interval=1)
    print("KUBEFLOW", job.status, time.perf_counter() - start)
    if job.status != "Complete":
        for line in client.get_job_logs(name):
            print("LOG", line)
    """
)


def train():
    import torch

    print("sum", torch.ones(4).sum().item())


def kubeflow_seconds(folder: Path, torch_spec: str) -> float:
    venv = folder / "kubeflow-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "kubeflow==0.5.0"], check=True)
    env = dict(os.environ)
    if torch_spec != "torch":  # keep pip on the pinned CPU build, not a CUDA one
        (folder / "constraints.txt").write_text(f"{torch_spec}\n")
        env["PIP_CONSTRAINT"] = str(folder / "constraints.txt")
    driver = folder / "driver.py"
    driver.write_text(KUBEFLOW_DRIVER.replace("[TORCH]", repr([torch_spec])))
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(driver)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1900,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("KUBEFLOW"))
    _, status, seconds = line.split()
    if status != "Complete":
        raise RuntimeError(f"the Kubeflow SDK job ended {status}:\n{result.stdout[-3000:]}")
    return float(seconds)


def main(mode: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pk-vs-kubeflow-"))
    kubeflow = kubeflow_seconds(folder, "torch==2.13.0" if mode == "pinned" else "torch")
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
    print(
        f"Kubeflow SDK 0.5 LocalProcessBackend ({mode} torch), submit -> Complete: {kubeflow:.1f} s"
    )
    print(f"prefect-kubeflow, cold venv cache: {timings[0]:.2f} s")
    print(f"prefect-kubeflow, warm venv cache: {warm:.2f} s")
    print(f"speed-up (warm): {kubeflow / warm:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "pinned")
