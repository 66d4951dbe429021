"""Gang semantics, once: a node that fails takes the whole job down at once.

Prefect-free, so the supervisor can keep a job whole even when no Prefect API answers.
"""

from __future__ import annotations

import threading

from prefect_kubeflow.backends.base import Backend

# Set in a job's supervising process when the job is being deleted: its flow run then ends
# Cancelled rather than Failed.
cancel_requested = threading.Event()


def watch_node(backend: Backend, name: str, node_index: int) -> int:
    """Wait for one node to end; if it failed, stop every other node of the job now."""
    code = backend.wait_node(name, node_index)
    if code != 0:
        backend.stop_job(name)
    return code


def watch_all(backend: Backend, name: str) -> dict[int, int]:
    """Watch every node of the job in its own thread; their exit codes by node index."""
    codes: dict[int, int] = {}

    def watch(index: int) -> None:
        codes[index] = watch_node(backend, name, index)

    threads = [
        threading.Thread(target=watch, args=(i,), daemon=True)
        for i in range(backend.get_job(name).num_nodes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes
