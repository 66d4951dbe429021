"""`list_runtimes()` over 3 sources x 20 runtimes, cold vs warm cache (target: warm <= 50 ms).

The sources are real servers on loopback and a real folder: a GitHub-API-shaped server
(`github://`, the contents API, 20 files in a folder), an HTTPS server with a self-signed CA
serving an index of 20 files, and a folder of 20 files on disk. Cold = an empty cache folder
(every file fetched and parsed); warm = the cache filled by a previous call (another client,
as another process would see it).

    python benchmarks/list_runtimes.py [cold_runs] [warm_runs]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import isolated_home
from runtime_servers import file_server, github_server, runtime_yaml, self_signed_tls

from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient
from prefect_kubeflow.blocks import TrainingRuntimeSource

RUNTIMES_PER_SOURCE = 20
TARGET_WARM_SECONDS = 0.050


def client_for(sources: list[str], cache: Path, api_url: str, ca_file: Path) -> TrainerClient:
    source = TrainingRuntimeSource(
        sources=sources,
        cache_dir=str(cache),
        github_api_url=api_url,
        allow_http=True,  # the GitHub-shaped server is plain HTTP on loopback
        ca_bundle=str(ca_file),
    )
    return TrainerClient(backend_config=LocalProcessBackendConfig(runtime_source=source))


def timed(client: TrainerClient, expected: int) -> float:
    start = time.perf_counter()
    runtimes = client.list_runtimes()
    elapsed = time.perf_counter() - start
    assert len(runtimes) == expected, len(runtimes)
    return elapsed


def main(cold_runs: int = 5, warm_runs: int = 30) -> None:
    root = Path(tempfile.mkdtemp(prefix="pk-bench-runtimes-"))
    folder = root / "folder"
    folder.mkdir()
    for i in range(RUNTIMES_PER_SOURCE):
        (folder / f"disk-{i:02}.yaml").write_text(runtime_yaml(f"disk-{i:02}", num_nodes=2))
    repo = {
        f"manifests/base/runtimes/gh-{i:02}.yaml": runtime_yaml(f"gh-{i:02}").encode()
        for i in range(RUNTIMES_PER_SOURCE)
    }
    tls, ca_file = self_signed_tls(root)
    with github_server({("team", "runtimes", "main"): repo}) as api, file_server(tls) as web:
        for i in range(RUNTIMES_PER_SOURCE):
            web.files[f"/rt/web-{i:02}.yaml"] = runtime_yaml(f"web-{i:02}").encode()
        web.files["/rt/index.yaml"] = "".join(
            f"- web-{i:02}.yaml\n" for i in range(RUNTIMES_PER_SOURCE)
        ).encode()
        sources = ["github://team/runtimes", f"{web.url}/rt/index.yaml", str(folder)]
        expected = 3 * RUNTIMES_PER_SOURCE + 1  # + the built-in torch-distributed
        cold = [
            timed(client_for(sources, root / f"cold-{run}", api.url, ca_file), expected)
            for run in range(cold_runs)
        ]
        warm_cache = root / "warm"
        timed(client_for(sources, warm_cache, api.url, ca_file), expected)  # fill the cache
        requests_before = len(api.requests) + len(web.requests)
        warm = [
            timed(client_for(sources, warm_cache, api.url, ca_file), expected)
            for _ in range(warm_runs)
        ]
        assert len(api.requests) + len(web.requests) == requests_before, "warm runs fetched"
    cold_median, warm_median = statistics.median(cold), statistics.median(warm)
    print(f"3 sources x {RUNTIMES_PER_SOURCE} runtimes (github://, https index, folder)")
    print(f"cold cache: median {cold_median * 1000:.1f} ms over {cold_runs} runs")
    print(
        f"warm cache: median {warm_median * 1000:.1f} ms, max {max(warm) * 1000:.1f} ms "
        f"over {warm_runs} runs (no request reached the servers)"
    )
    print(
        f"warm / cold = {warm_median / cold_median:.3f} (cold is {cold_median / warm_median:.0f}x)"
    )
    verdict = "meets" if warm_median <= TARGET_WARM_SECONDS else "MISSES"
    print(f"warm {verdict} the target of {TARGET_WARM_SECONDS * 1000:.0f} ms")


if __name__ == "__main__":
    with isolated_home():
        main(*(int(arg) for arg in sys.argv[1:3]))
