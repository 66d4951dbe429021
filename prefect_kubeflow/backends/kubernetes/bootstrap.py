"""What every node container of a Kubernetes TrainJob runs. Standard library only.

``python3 -c <this file's source> <payload JSON>``: the TrainJob's command carries this program
and the payload as two argv items, so no value is ever spliced into a shell string. The payload
is ``{"name", "args", "source", "entrypoint", "packages", "rendezvous_timeout"}``.

It writes the shipped function and the worker entrypoint to a temporary folder, installs
`packages` (pip reads ``PIP_INDEX_URL`` and friends from the environment), then runs torchrun,
which takes the node's place in the job from the ``PET_*`` environment the Trainer injects.
When a rank raised, its traceback's last lines become the container's termination message,
which Kubernetes keeps in the pod's status (``state.terminated.message``). When the node
ends well, rank 0's pickled return value (if this node holds rank 0) goes there instead,
compressed, after `RESULT_MARK`; one over the 4 KiB the kubelet keeps leaves its size after
`RESULT_TOO_LARGE_MARK`.
"""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import zlib

# Where the kubelet reads the termination message (the pod's terminationMessagePath).
TERMINATION_LOG = os.environ.get("PK_TERMINATION_LOG", "/dev/termination-log")
TERMINATION_LIMIT = 4096  # bytes the kubelet keeps
# The worker entrypoint's RESULT_FILE: this program runs alone in the pod and imports nothing
# of the package (a test holds the two equal).
RESULT_FILE = "result.pkl"
RESULT_MARK = "prefect-kubeflow/result:"
RESULT_TOO_LARGE_MARK = "prefect-kubeflow/result-too-large:"


def write_job(payload: dict) -> str:
    """The folder holding the function, its arguments and the worker entrypoint."""
    job_dir = tempfile.mkdtemp(prefix="prefect-kubeflow-")
    files = {
        "function.py": payload["source"],
        "entrypoint.py": payload["entrypoint"],
        "function.json": json.dumps({"name": payload["name"], "args": payload["args"]}),
    }
    for name, text in files.items():
        with open(os.path.join(job_dir, name), "w") as file:
            file.write(text)
    return job_dir


def run(argv: list, env: dict | None = None) -> int:
    """Run `argv` in its own process group; SIGTERM (the pod stopping) is passed on to it."""
    process = subprocess.Popen(argv, start_new_session=True, env=env)

    def stop(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    code = process.wait()
    return 128 - code if code < 0 else code


def write_termination_message(text: str) -> None:
    """Leave `text` where the kubelet reads the pod's termination message."""
    try:
        with open(TERMINATION_LOG, "w") as file:
            file.write(text)
    except OSError:
        pass  # not in a pod: the log speaks


def record_result(job_dir: str) -> None:
    """Put rank 0's pickled return value (when this node has one) in the termination message."""
    try:
        with open(os.path.join(job_dir, RESULT_FILE), "rb") as file:
            data = file.read()
    except OSError:
        return
    text = RESULT_MARK + base64.b64encode(zlib.compress(data, 9)).decode()
    if len(text) > TERMINATION_LIMIT:
        text = RESULT_TOO_LARGE_MARK + str(len(data))
    write_termination_message(text)


def record_failure(job_dir: str) -> None:
    """Put the first failed rank's traceback tail where the kubelet reads the pod's
    termination message; without one (torchrun itself failed), the log speaks."""
    errors = os.path.join(job_dir, "errors")
    ranks = sorted(os.listdir(errors), key=lambda n: int(n[5:-4])) if os.path.isdir(errors) else []
    if not ranks:
        return
    with open(os.path.join(errors, ranks[0])) as file:
        traceback = file.read().rstrip()
    header = f"rank {ranks[0][5:-4]} raised:\n"
    budget = TERMINATION_LIMIT - len(header.encode()) - 8
    body = traceback.encode()[-budget:].decode(errors="ignore")
    write_termination_message(header + body)


def main(payload_json: str) -> int:
    """Ship the function, install packages, run torchrun; the node's exit code."""
    payload = json.loads(payload_json)
    job_dir = write_job(payload)
    if payload["packages"]:
        # Into the image's Python: the container is thrown away after the job (Debian-based
        # images mark theirs as externally managed).
        pip_env = dict(
            os.environ,
            PIP_BREAK_SYSTEM_PACKAGES="1",
            PIP_ROOT_USER_ACTION="ignore",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        pip = [sys.executable, "-m", "pip", "install", "--no-input", *payload["packages"]]
        code = run(pip, pip_env)
        if code != 0:
            return code
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if payload.get("rendezvous_timeout"):
        torchrun += ["--rdzv_conf", f"timeout={payload['rendezvous_timeout']}"]
    code = run([*torchrun, os.path.join(job_dir, "entrypoint.py"), job_dir])
    if code != 0:
        record_failure(job_dir)
    else:
        record_result(job_dir)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
