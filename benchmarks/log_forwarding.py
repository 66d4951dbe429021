"""Log forwarding under load: a 1-node job writes lines at 100, 1,000 and 5,000 lines/s for
`seconds` each; how long after its last line was written is that line in the Prefect API
(target: within 2 s at 1,000 lines/s on the embedded server), and how many lines arrived
(each once). The baseline is the server's own ingestion rate, measured in the same run by
posting logs to it directly in batches of the size the forwarder uses.

    python -u benchmarks/log_forwarding.py [seconds] [rates...]
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import isolated_home


def emit(rate: int = 1000, seconds: float = 10.0):
    """`rate` numbered lines a second for `seconds` (each flushed as written)."""
    import time

    count = int(rate * seconds)
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        print(f"line {i}", flush=True)


def server_ingestion_rate(client, batch: int, total: int) -> float:
    """Logs/s the server stores when sent `total` logs in batches of `batch` (one client)."""
    flow_run_id = str(uuid.uuid4())
    logs = [
        {
            "name": "benchmark",
            "level": 20,
            "message": f"line {i}",
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "flow_run_id": flow_run_id,
        }
        for i in range(total)
    ]
    start = time.perf_counter()
    for offset in range(0, total, batch):
        client.create_logs(logs[offset : offset + batch])
    return total / (time.perf_counter() - start)


def _node_task_run(client, name: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from prefect_kubeflow.flows.runs import find_flow_runs

    run = find_flow_runs([name]).get(name)
    if run is None:
        return None
    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
    task_runs = client.read_task_runs(flow_run_filter=only_this_run)
    return task_runs[0] if task_runs else None


def _node_lines(client, task_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    lines, offset = [], 0
    while True:
        page = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])),
            limit=200,
            offset=offset,
        )
        lines += [log.message for log in page if log.message.startswith("line ")]
        offset += len(page)
        if len(page) < 200:
            return lines


def measure(client, rate: int, seconds: float) -> tuple[float, int, int]:
    """(lag of the last line in s, lines in the API, lines written) for one job: polled
    from its start, the moment the last line is in the API minus the time it was written
    (its log's timestamp)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.client.schemas.sorting import LogSort

    from prefect_kubeflow import CustomTrainer, LocalProcessBackendConfig, TrainerClient

    trainer_client = TrainerClient(LocalProcessBackendConfig())
    trainer = CustomTrainer(func=emit, func_args={"rate": rate, "seconds": seconds})
    name = trainer_client.train(trainer=trainer)
    written = int(rate * seconds)
    task_run, lag = None, None
    while lag is None:
        time.sleep(0.05)
        if task_run is None:
            task_run = _node_task_run(client, name)
            continue
        newest = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run.id])),
            limit=10,  # the task run's own "Finished" log may come after the lines
            sort=LogSort.TIMESTAMP_DESC,
        )
        for log in newest:
            if log.message == f"line {written - 1}":
                lag = time.time() - log.timestamp.timestamp()
    trainer_client.wait_for_job_status(name, timeout=600, polling_interval=0.5)
    lines = _node_lines(client, task_run.id)
    assert lines == [f"line {i}" for i in range(written)], "a line was lost, repeated or moved"
    trainer_client.delete_job(name)
    return lag, len(lines), written


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    rates = [int(r) for r in sys.argv[2:]] or [100, 1000, 5000]
    with isolated_home():
        from prefect import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from prefect_kubeflow.flows.logs import BATCH_LINES
        from prefect_kubeflow.flows.server import ensure_server

        url = ensure_server()
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            baseline = server_ingestion_rate(client, BATCH_LINES, 20_000)
            print(f"server ingestion (baseline): {baseline:,.0f} logs/s")
            print("rate (lines/s) | lag of the last line | lines in the API | of the baseline")
            for rate in rates:
                lag, count, written = measure(client, rate, seconds)
                print(
                    f"{rate:>14,} | {lag:>17.2f} s | {count:>7,}/{written:<7,} | "
                    f"{rate / baseline:.2f}x"
                )


if __name__ == "__main__":
    main()
