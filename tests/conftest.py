"""Real parts for every test: a Prefect API server (the test harness), temporary homes."""

import os
import tempfile
import time
from pathlib import Path

# Before Prefect is imported: a throw-away Prefect home and user folders, no analytics.
_ROOT = Path(tempfile.mkdtemp(prefix="prefect-kubeflow-tests-"))
# The test cluster's binaries (and Go's build cache) stay in the user's own cache folder.
os.environ.setdefault(
    "PK_USER_CACHE_HOME", os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
)
os.environ["PREFECT_HOME"] = str(_ROOT / "prefect-home")
os.environ["XDG_CACHE_HOME"] = str(_ROOT / "cache")
os.environ["XDG_DATA_HOME"] = str(_ROOT / "data")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"

import pytest  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, LogFilter  # noqa: E402
from prefect.client.schemas.sorting import LogSort  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from prefect_kubeflow import LocalProcessBackendConfig, TrainerClient  # noqa: E402
from prefect_kubeflow.backends import processes  # noqa: E402
from prefect_kubeflow.constants import constants  # noqa: E402
from prefect_kubeflow.flows.logs import NODE_LOGGER_NAME  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Deselect Prefect's block-standard logo check: it downloads the logo, and no internet is
    reachable here."""
    offline = [item for item in items if item.name.startswith("test_has_a_valid_image")]
    if offline:
        config.hook.pytest_deselected(items=offline)
        items[:] = [item for item in items if item not in offline]


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=90):
        yield


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """Poll `predicate` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def local_job_id(jobs_dir: Path, name: str) -> str:
    """The marker every process of a local job carries in its environment."""
    import json

    return json.loads((jobs_dir / name / "job.json").read_text())["job_id"]


def flow_run_of(name: str, final: bool = False, timeout: float = 180.0):
    """The job's flow run, found from Prefect as the client finds it; with `final`, once it
    has ended."""
    from prefect_kubeflow.flows.runs import find_flow_runs

    def found():
        run = find_flow_runs([name]).get(name)
        if run is not None and (not final or (run.state is not None and run.state.is_final())):
            return run
        return None

    return wait_for(found, timeout, f"the flow run of {name}" + (" to end" if final else ""))


def supervisor_of(name: str) -> tuple[int, int]:
    """(pid, start time) of the process running the job's flow, from its flow run's label."""
    from prefect_kubeflow.flows import runs

    _, pid, start = wait_for(
        lambda: runs.supervisor_of(flow_run_of(name)), 180, "the supervisor's label"
    )
    return pid, start


def wait_supervisor_exit(name: str, timeout: float = 180.0) -> None:
    pid, start = supervisor_of(name)
    wait_for(lambda: not processes.is_alive(pid, start), timeout, f"supervisor {pid} to exit")


@pytest.fixture
def jobs_dir(tmp_path) -> Path:
    return tmp_path / "jobs"


@pytest.fixture
def config(tmp_path, jobs_dir) -> LocalProcessBackendConfig:
    return LocalProcessBackendConfig(
        jobs_dir=str(jobs_dir),
        venv_cache_dir=str(tmp_path / "venvs"),
        stop_grace_period_seconds=5,
    )


@pytest.fixture
def client(config, jobs_dir):
    """A client on a fresh jobs folder; afterwards, no process of any of its jobs may live."""
    trainer_client = TrainerClient(backend_config=config)
    yield trainer_client
    leftovers = {}
    for job_dir in sorted(jobs_dir.glob("[!.]*")) if jobs_dir.exists() else []:
        job_id = local_job_id(jobs_dir, job_dir.name)
        try:
            wait_for(
                lambda n=job_dir.name: (
                    trainer_client.get_job(n).status
                    in (constants.TRAINJOB_COMPLETE, constants.TRAINJOB_FAILED)
                ),
                180,
                f"job {job_dir.name} to end",
            )
            wait_supervisor_exit(job_dir.name)
        finally:
            alive = processes.find_marked(job_id)
            if alive:
                leftovers[job_dir.name] = alive
                processes.kill_marked(job_id, 1)
    assert not leftovers, f"processes left behind: {leftovers}"


def task_run_states(flow_run_id) -> dict[str, str]:
    """The flow run's task runs: name -> state type, from the API."""
    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]})
        )
    return {run.name: run.state.type.value for run in task_runs if run.state is not None}


def read_task_run_logs(flow_run_id: str, task_run_name: str) -> list:
    """Every node-output log of one task run of the flow run, oldest first, from the API."""
    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]})
        )
        matching = [run for run in task_runs if run.name == task_run_name]
        assert matching, f"no task run {task_run_name}: {[r.name for r in task_runs]}"
        logs, offset = [], 0
        while True:
            page = prefect.read_logs(
                log_filter=LogFilter(task_run_id={"any_": [matching[0].id]}),
                limit=200,
                offset=offset,
                sort=LogSort.TIMESTAMP_ASC,
            )
            logs += [log for log in page if log.name.startswith(NODE_LOGGER_NAME)]
            offset += len(page)
            if len(page) < 200:
                return logs
