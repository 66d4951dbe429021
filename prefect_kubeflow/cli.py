"""``prefect-kubeflow``: TrainJobs from the shell, on any backend.

Every command that reads takes ``--json``; an error is one line saying what to do, and a
non-zero exit code (``wait`` too, when the job failed).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from prefect_kubeflow import constants
from prefect_kubeflow.errors import InvalidInputError, JobFailedError, PrefectKubeflowError

app = typer.Typer(
    name="prefect-kubeflow",
    help="Run Kubeflow Trainer TrainJobs through Prefect: train, watch, read and delete them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
server_app = typer.Typer(help="The embedded Prefect server (used when no PREFECT_API_URL).")
app.add_typer(server_app, name="server")

BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="local, docker, podman, kubernetes, or a saved block ('block-type-slug/name').",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _backend_config(backend: str) -> Any:
    """The backend configuration `backend` names."""
    from prefect_kubeflow.blocks import (
        ContainerBackendConfig,
        KubernetesBackendConfig,
        LocalProcessBackendConfig,
        TrainingBackendConfig,
    )

    if backend == "local":
        return LocalProcessBackendConfig()
    if backend == "docker":
        return ContainerBackendConfig(container_runtime="docker")
    if backend == "podman":
        return ContainerBackendConfig(container_runtime="podman")
    if backend == "kubernetes":
        return KubernetesBackendConfig()
    if "/" not in backend:
        raise InvalidInputError(
            f"backend {backend!r} is unknown; use local, docker, podman, kubernetes, or a "
            "saved block as 'block-type-slug/name' (such as kubeflow-container-backend/gpu-box)"
        )
    from prefect.blocks.core import Block

    try:
        config = Block.load(backend)
    except (ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"no saved block {backend!r}: {exc}") from exc
    if not isinstance(config, TrainingBackendConfig):
        raise InvalidInputError(f"block {backend!r} is not a backend configuration")
    return config


def _client(backend: str) -> Any:
    from prefect_kubeflow.client import TrainerClient

    return TrainerClient(backend_config=_backend_config(backend))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(_jsonable(value), indent=2))


def _load_function(target: str) -> Any:
    """The function at ``path/to/file.py:function``."""
    path_text, _, name = target.rpartition(":")
    path = Path(path_text)
    if not path_text or not name or path.suffix != ".py":
        raise InvalidInputError(f"{target!r} must be path/to/file.py:function")
    if not path.is_file():
        raise InvalidInputError(f"no file {path_text!r} (from {target!r})")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"{path_text!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidInputError(f"loading {path_text!r} failed: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise InvalidInputError(f"{path_text!r} has no function {name!r}")
    return function


def _arguments(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value is read as JSON when it is JSON, else as text."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key.isidentifier():
            raise InvalidInputError(f"--arg {pair!r} must be key=value with a Python name as key")
        try:
            arguments[key] = json.loads(text)
        except ValueError:
            arguments[key] = text
    return arguments


def _status_line(job: Any) -> str:
    steps = " ".join(f"{step.name}={step.status}" for step in job.steps)
    progress = job.trainer_status.progress_percentage if job.trainer_status else None
    percent = "" if progress is None else f" {progress}%"
    return f"{job.name} {job.status}{percent} [{steps}]"


@app.command()
def train(
    target: Annotated[str, typer.Argument(help="The training function: path/to/file.py:function.")],
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Nodes of the job.")] = 1,
    backend: BackendOption = "local",
    runtime: Annotated[str | None, typer.Option(help="The training runtime.")] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="An argument of the function: key=value.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a TrainJob running a function on N nodes; print its name."""
    from prefect_kubeflow.types import CustomTrainer

    trainer = CustomTrainer(
        func=_load_function(target), func_args=_arguments(arg or []) or None, num_nodes=nodes
    )
    name = _client(backend).train(runtime=runtime, trainer=trainer)
    _print_json({"name": name}) if as_json else typer.echo(name)


@app.command()
def jobs(backend: BackendOption = "local", as_json: JsonOption = False) -> None:
    """List the backend's TrainJobs, oldest first."""
    listed = _client(backend).list_jobs()
    if as_json:
        _print_json(listed)
        return
    rows = [("NAME", "STATUS", "NODES", "RUNTIME", "PROGRESS", "CREATED")]
    for job in listed:
        status = job.trainer_status
        progress = status.progress_percentage if status else None
        rows.append(
            (
                job.name,
                job.status,
                str(job.num_nodes),
                job.runtime.name,
                "-" if progress is None else f"{progress}%",
                job.creation_timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        typer.echo("  ".join(cells).rstrip())


@app.command()
def get(
    job: Annotated[str, typer.Argument(help="The TrainJob's name.")],
    backend: BackendOption = "local",
    as_json: JsonOption = False,
) -> None:
    """Show one TrainJob: status, steps, progress and message."""
    found = _client(backend).get_job(job)
    if as_json:
        _print_json(found)
        return
    typer.echo(_status_line(found))
    status = found.trainer_status
    if status is not None and status.metrics:
        typer.echo("metrics: " + ", ".join(f"{k}={v}" for k, v in status.metrics.items()))
    if found.message:
        typer.echo(found.message)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="The TrainJob's name.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the end.")] = False,
    node: Annotated[int | None, typer.Option(help="Only this node's lines.")] = None,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines per node.")] = None,
    backend: BackendOption = "local",
) -> None:
    """Print a TrainJob's log lines: one node's, or every node's, each with its node's name."""
    client = _client(backend)
    client.get_job(job)  # also starts a supervisor for a job whose one died
    for line in client.get_job_logs(job, follow=follow, node_index=node, tail_lines=tail):
        typer.echo(line, nl=False)


@app.command()
def wait(
    job: Annotated[str, typer.Argument(help="The TrainJob's name.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 3600,
    backend: BackendOption = "local",
    as_json: JsonOption = False,
) -> None:
    """Wait until the TrainJob ends, showing its status; exit 1 if it failed."""
    client = _client(backend)
    deadline = time.monotonic() + timeout
    live = sys.stderr.isatty() and not as_json
    while True:
        found = client.get_job(job)
        if live:
            typer.echo(f"\r{_status_line(found)}\033[K", nl=False, err=True)
        if found.status in (constants.TRAINJOB_COMPLETE, constants.TRAINJOB_FAILED):
            break
        if time.monotonic() > deadline:
            _fail(f"TrainJob {job!r} is still {found.status} after {timeout:.0f} s; wait longer")
        time.sleep(1)
    if live:
        typer.echo("", err=True)
    _print_json(found) if as_json else typer.echo(_status_line(found))
    if found.status == constants.TRAINJOB_FAILED:
        raise JobFailedError(job, found.message or "no reason recorded")


@app.command()
def delete(
    job: Annotated[str, typer.Argument(help="The TrainJob's name.")],
    backend: BackendOption = "local",
) -> None:
    """Stop a TrainJob if it runs and remove it; its flow run ends Cancelled."""
    _client(backend).delete_job(job)
    typer.echo(f"deleted {job}")


@app.command()
def runtimes(backend: BackendOption = "local", as_json: JsonOption = False) -> None:
    """List the training runtimes the backend can run."""
    listed = _client(backend).list_runtimes()
    if as_json:
        _print_json(listed)
        return
    for runtime in listed:
        typer.echo(f"{runtime.name}  {runtime.trainer.framework}  {runtime.origin}")


@server_app.command("status")
def server_status(as_json: JsonOption = False) -> None:
    """Whether the embedded Prefect server runs, and where."""
    from prefect_kubeflow.flows.server import running_server_url

    url = running_server_url()
    if as_json:
        _print_json({"running": url is not None, "url": url})
    else:
        typer.echo(url or "no embedded server is running")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the embedded Prefect server."""
    from prefect_kubeflow.flows.server import stop_server

    typer.echo("stopped" if stop_server() else "no embedded server was running")


def main() -> None:
    """The console script: run the app, every known error as one line."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except JobFailedError as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        sys.exit(1)
    except (PrefectKubeflowError, ValueError, OSError) as exc:
        _echo_error(exc)
    except Exception as exc:  # click's usage errors, and anything unforeseen: never a traceback
        _echo_error(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _echo_error(exc: BaseException) -> NoReturn:
    import click

    if isinstance(exc, click.ClickException):
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    if isinstance(exc, click.exceptions.Abort):
        sys.exit(130)
    text = str(exc).strip().splitlines()
    typer.echo(f"error: {text[0] if text else type(exc).__name__}", err=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
