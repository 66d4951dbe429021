"""The embedded default Prefect API: one local ``prefect server`` kept alive and reused.

With no ``PREFECT_API_URL`` configured, Prefect would start a throw-away server in every
process (about 10 s each). Instead the first job starts one server on 127.0.0.1, records it
under the user's cache folder, and every later job (in any process) reuses it. Its database is
the user's usual Prefect database, so ``prefect server start`` later shows the same runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from platformdirs import user_cache_dir

from prefect_kubeflow.backends import processes
from prefect_kubeflow.constants import APP_NAME
from prefect_kubeflow.errors import BackendError

STATE_DIR = Path(user_cache_dir(APP_NAME)) / "server"
STARTUP_TIMEOUT = 120.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def running_server_url(state_dir: Path = STATE_DIR) -> str | None:
    """The URL of the embedded server if it is up, else None (nothing is started)."""
    state = state_dir / "server.json"
    if not state.exists():
        return None
    url = str(json.loads(state.read_text())["url"])
    return url if _healthy(url) else None


def _port(state_dir: Path) -> int:
    """The port for the server: the one it had before if free (running jobs keep the address
    they were given, and reach the server again once it is back), else a new one."""
    port_file = state_dir / "port"
    with socket.socket() as sock:
        # As the server binds: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", int(port_file.read_text())))
        except (OSError, ValueError):  # none before, or taken by something else meanwhile
            sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    port_file.write_text(str(port))
    return port


def ensure_server(state_dir: Path = STATE_DIR, timeout: float = STARTUP_TIMEOUT) -> str:
    """The URL of the embedded server, starting it first if no process has yet."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one start, however many jobs race
        url = running_server_url(state_dir)
        if url:
            return url
        port = _port(state_dir)
        url = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
        log_path = state_dir / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        # A background service: training on the same machine comes first.
        processes.lower_priority(server.pid, whole_session=True)
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                tail = log_path.read_text(errors="replace").splitlines()[-10:]
                raise BackendError(
                    f"the embedded Prefect server did not start on {url}; set PREFECT_API_URL "
                    "to use another server. Its log:\n" + "\n".join(tail)
                )
            time.sleep(0.25)
        (state_dir / "server.json").write_text(json.dumps({"url": url, "pid": server.pid}))
        return url


def stop_server(state_dir: Path = STATE_DIR, timeout: float = 30.0) -> bool:
    """Stop the embedded server if it runs; whether there was one to stop."""
    state = state_dir / "server.json"
    if not state.exists():
        return False
    pid = int(json.loads(state.read_text())["pid"])
    state.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)  # the server and whatever it started
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while processes.is_alive(pid, None):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    # python -m prefect_kubeflow.flows.server [status|stop]
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command == "stop":
        print("stopped" if stop_server() else "no embedded server was running")
    else:
        print(running_server_url() or "no embedded server is running")
