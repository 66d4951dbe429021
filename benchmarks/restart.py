"""Gang restart latency vs a fresh submit, on the local backend (or Docker/Podman).

Fresh: ``client.train()`` of a 2-node job -> its first line (the function prints the time it
starts). Restart: the same job's node 1 fails on attempt 0; from the node's failure (its
``Failed`` event: the node's torchrun agent exited non-zero) to the first line of attempt 1.
Also printed: from the rank's error (it prints the time just before raising), which adds
torchrun's own detection of the failed worker. One clock (this machine's) throughout. Issue 13
target: restart <= 1.2x fresh.

    python -u benchmarks/restart.py [repeats] [--backend local|docker|podman]
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import isolated_home

IMAGE = "localhost/prefect-kubeflow-test:debian12-torch1.13"


def fails_once() -> None:
    """Attempt 0: node 1 fails after 8 s of "training" (its job's flow is watching by then:
    a supervisor's start is not part of a restart); attempt 1 completes. Each prints when it
    starts."""
    import os
    import time

    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    rank = int(os.environ["RANK"])
    print(f"started at {time.time():.6f} attempt {attempt} rank {rank}", flush=True)
    if attempt == 0:
        if rank == 1:
            time.sleep(8)
            print(f"failing at {time.time():.6f}", flush=True)
            raise SystemExit(3)
        time.sleep(300)


def stamp(lines: list[str], pattern: str) -> float | None:
    for line in lines:
        found = re.search(pattern, line)
        if found:
            return float(found.group(1))
    return None


def main(repeats: int, backend: str) -> None:
    with isolated_home():
        import os

        from prefect_kubeflow.flows import server

        os.environ["PREFECT_API_URL"] = server.ensure_server()
        from prefect_kubeflow import (
            ContainerBackendConfig,
            CustomTrainer,
            LocalProcessBackendConfig,
            TrainerClient,
        )

        config = (
            LocalProcessBackendConfig()
            if backend == "local"
            else ContainerBackendConfig(container_runtime=backend, image=IMAGE, pull_policy="Never")
        )
        client = TrainerClient(backend_config=config)
        fresh, restart, from_error = [], [], []
        for round_ in range(repeats + 1):  # round 0 warms up (venvs, imports, page cache)
            trainer = CustomTrainer(func=fails_once, num_nodes=2, max_restarts=1)
            submitted = time.time()
            name = client.train(trainer=trainer)
            job = client.wait_for_job_status(name, timeout=600, polling_interval=0.2)
            assert job.status == "Complete" and job.attempt == 1, job.message
            first = stamp(list(client.get_job_logs(name)), r"\] started at (\S+) attempt 1 rank 0")
            # The first attempt's files were archived at the restart: read them there.
            first_attempt = _first_attempt_lines(config, name)
            started0 = stamp(first_attempt, r"started at (\S+) attempt 0 rank 0")
            failed = stamp(first_attempt, r"failing at (\S+)")
            assert first is not None and started0 is not None and failed is not None
            [node_failed] = [
                e.event_time.timestamp()
                for e in client.get_job_events(name)
                if e.reason == "Failed" and e.involved_object_name.endswith("-node-1")
            ]
            client.delete_job(name)
            if round_:
                fresh.append(started0 - submitted)
                restart.append(first - node_failed)
                from_error.append(first - failed)
                print(
                    f"round {round_}: fresh submit -> first line {fresh[-1]:.2f} s; node "
                    f"failure -> next attempt's first line {restart[-1]:.2f} s (from the rank's "
                    f"error {from_error[-1]:.2f} s)"
                )
        median = statistics.median
        print(
            f"{backend}: fresh submit -> first line median {median(fresh):.2f} s; restart "
            f"median {median(restart):.2f} s: ratio {median(restart) / median(fresh):.2f} "
            f"(target <= 1.20); from the rank's error {median(from_error):.2f} s: ratio "
            f"{median(from_error) / median(fresh):.2f}"
        )


def _first_attempt_lines(config, name: str) -> list[str]:
    """The first attempt's node logs, archived in the job's folder at the restart."""
    root = config.get_backend().settings.jobs_dir.expanduser() / name
    archive = (root if (root / "attempt-0").exists() else root / "nodes") / "attempt-0"
    logs = sorted(archive.glob("node-*.log"))
    return [line for log in logs for line in log.read_text(errors="replace").splitlines()]


if __name__ == "__main__":
    args = sys.argv[1:]
    chosen = "local"
    if "--backend" in args:
        chosen = args[args.index("--backend") + 1]
        del args[args.index("--backend") : args.index("--backend") + 2]
    main(int(args[0]) if args else 3, chosen)
