"""Log capture: one rank prints 200,000 lines.

Prints lines/s written to the node file, how many lines reached the Prefect API (target: 0 lost),
and the training function's own time under prefect-kubeflow vs under bare torchrun writing to a
file (target: <= 1.10x), as medians over the repeats. The function first waits `settle`
seconds, so the job's one-off flow-run start-up does not overlap the timed part; the uploads
of earlier repeats still run during later ones (a busy Prefect server on the same 2 cores).
The baseline is the fastest bare run: stdout block-buffered into a file (no PYTHONUNBUFFERED).

    python benchmarks/log_capture.py [lines] [repeats] [settle_seconds]
"""

from __future__ import annotations

import inspect
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import isolated_home, supervisor_of


def chatty(lines: int = 200_000, settle: float = 0.0):
    import sys
    import time

    time.sleep(settle)
    start = time.perf_counter()
    for i in range(lines):
        print(f"step {i} loss 0.{i % 997:03d} lr 0.001 throughput 1234.5 samples/s")
    print(f"FUNCTION_SECONDS {time.perf_counter() - start:.4f}", file=sys.stderr)


def _function_seconds(text: str) -> float:
    return float(text.split("FUNCTION_SECONDS ")[1].split()[0])


def bare(lines: int, settle: float) -> float:
    folder = Path(tempfile.mkdtemp())
    script = folder / "bare.py"
    script.write_text(textwrap.dedent(inspect.getsource(chatty)) + f"\nchatty({lines}, {settle})\n")
    with open(folder / "out.log", "wb") as out:
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node_rank", "0",
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", "29544",
             str(script)],
            stdout=out, stderr=subprocess.PIPE, text=True, check=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )  # fmt: skip
    return _function_seconds(result.stderr)


def api_count(home: Path, flow_run_id: str) -> int:
    query = "select count(*) from log where flow_run_id = ? and name like 'prefect_kubeflow%'"
    with sqlite3.connect(home / "prefect-home" / "prefect.db") as db:
        return max(int(db.execute(query, (key,)).fetchone()[0]) for key in
                   (flow_run_id, flow_run_id.replace("-", "")))  # fmt: skip


def main(lines: int, repeats: int, settle: float) -> None:
    with isolated_home() as home:
        from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient
        from prefect_kubeflow.backends import processes

        jobs_dir = home / "jobs"
        client = TrainerClient(LocalProcessBackendConfig(jobs_dir=str(jobs_dir)))
        # Warm-up job: starts the embedded Prefect server, so it is not timed below.
        warm = client.train(trainer=CustomTrainer(func=chatty, func_args={"lines": 10}))
        client.wait_for_job_status(warm, timeout=300, polling_interval=0.1)

        bare_times, our_times, rates, names = [], [], [], []
        for _ in range(repeats):
            bare_times.append(bare(lines, settle))
            start = time.perf_counter()
            name = client.train(
                trainer=CustomTrainer(func=chatty, func_args={"lines": lines, "settle": settle})
            )
            client.wait_for_job_status(name, timeout=900, polling_interval=0.1)
            node_lines = sum(1 for _ in client.get_job_logs(name, step="node-0"))
            rates.append(node_lines / (time.perf_counter() - start - settle))
            our_times.append(_function_seconds("\n".join(client.get_job_logs(name, step="node-0"))))
            names.append((name, node_lines))

        lost = 0
        upload_start = time.perf_counter()
        for name, node_lines in names:  # each supervisor exits once all its logs are uploaded
            pid, started, flow_run_id = supervisor_of(name)
            while processes.is_alive(pid, started):
                time.sleep(0.5)
            lost += node_lines - api_count(home, flow_run_id)
        upload_wait = time.perf_counter() - upload_start
        for job in client.list_jobs():
            client.delete_job(job.name)

    ratios = [ours / bare for ours, bare in zip(our_times, bare_times, strict=True)]
    print(f"lines printed per job:             {lines} x {repeats} jobs")
    print(f"node file capture (submit->end):   {statistics.median(rates):,.0f} lines/s")
    print(f"lines lost on the way to the API:  {lost} (waited {upload_wait:.0f} s after the "
          "last job for uploads)")  # fmt: skip
    print(f"function time, bare torchrun:      {[round(t, 3) for t in bare_times]}")
    print(f"function time, prefect-kubeflow:   {[round(t, 3) for t in our_times]}")
    print(f"ratio: median {statistics.median(ratios):.2f}x, each {[round(r, 2) for r in ratios]} "
          "(target <= 1.10x)")  # fmt: skip


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 200_000,
        int(args[1]) if len(args) > 1 else 3,
        float(args[2]) if len(args) > 2 else 8.0,
    )
