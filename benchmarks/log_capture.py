"""Log capture: one rank prints 200,000 lines.

Prints lines/s written to the node file, how many lines reached the Prefect API (target: 0 lost),
and the training function's own time under prefect-kubeflow vs under bare torchrun writing to a
file (target: <= 1.10x).

    python benchmarks/log_capture.py [lines]
"""

from __future__ import annotations

import inspect
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import isolated_home


def chatty(lines: int = 200_000):
    import sys
    import time

    start = time.perf_counter()
    for i in range(lines):
        print(f"step {i} loss 0.{i % 997:03d} lr 0.001 throughput 1234.5 samples/s")
    print(f"FUNCTION_SECONDS {time.perf_counter() - start:.4f}", file=sys.stderr)


def _function_seconds(text: str) -> float:
    return float(text.split("FUNCTION_SECONDS ")[1].split()[0])


def bare(lines: int) -> float:
    folder = Path(tempfile.mkdtemp())
    script = folder / "bare.py"
    script.write_text(textwrap.dedent(inspect.getsource(chatty)) + f"\nchatty({lines})\n")
    with open(folder / "out.log", "wb") as out:
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--node_rank", "0",
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", "29544",
             str(script)],
            stdout=out, stderr=subprocess.PIPE, text=True, check=True,
        )  # fmt: skip
    return _function_seconds(result.stderr)


def api_count(home: Path, flow_run_id: str) -> int:
    with sqlite3.connect(home / "prefect-home" / "prefect.db") as db:
        query = "select count(*) from log where flow_run_id = ? and name like 'prefect_kubeflow%'"
        return int(db.execute(query, (flow_run_id.replace("-", ""),)).fetchone()[0]) or int(
            db.execute(query, (flow_run_id,)).fetchone()[0]
        )


def main(lines: int) -> None:
    with isolated_home() as home:
        from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient

        config = LocalProcessBackendConfig()
        client = TrainerClient(config)
        # Warm-up job: starts the embedded Prefect server, so it is not timed below.
        warm = client.train(trainer=CustomTrainer(func=chatty, func_args={"lines": 10}))
        client.wait_for_job_status(warm, timeout=300, polling_interval=0.1)

        bare_seconds = bare(lines)
        start = time.perf_counter()
        name = client.train(trainer=CustomTrainer(func=chatty, func_args={"lines": lines}))
        client.wait_for_job_status(name, timeout=600, polling_interval=0.1)
        captured_seconds = time.perf_counter() - start
        node_lines = sum(1 for _ in client.get_job_logs(name, step="node-0"))
        ours_seconds = _function_seconds("\n".join(client.get_job_logs(name, step="node-0")))
        job_dir = Path(config.jobs_dir or home / "data" / "prefect-kubeflow" / "jobs") / name
        flow_run_id = json.loads((job_dir / "flow_run.json").read_text())["id"]
        owner = json.loads((job_dir / "owner.json").read_text())["pid"]
        upload_start = time.perf_counter()
        while os.path.exists(f"/proc/{owner}") and time.perf_counter() - upload_start < 900:
            time.sleep(0.5)  # the supervisor exits once every log is uploaded
        upload_seconds = time.perf_counter() - start
        in_api = api_count(home, flow_run_id)
        for job in client.list_jobs():
            client.delete_job(job.name)

    print(f"lines printed by the function:     {lines}")
    print(f"lines in the node file:            {node_lines} (includes torchrun's own lines)")
    print(f"node file capture:                 {node_lines / captured_seconds:,.0f} lines/s "
          f"(submit -> Complete {captured_seconds:.1f} s)")  # fmt: skip
    print(f"lines in the Prefect API:          {in_api} (lost: {node_lines - in_api}); "
          f"all uploaded {upload_seconds:.1f} s after submit")  # fmt: skip
    print(f"function time, bare torchrun:      {bare_seconds:.3f} s")
    print(f"function time, prefect-kubeflow:   {ours_seconds:.3f} s")
    print(f"ratio: {ours_seconds / bare_seconds:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
