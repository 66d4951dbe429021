"""Virtual environments for `packages_to_install`, cached by what they contain.

A venv is keyed by a hash of (interpreter, packages, index URLs), built once under a lock and
reused by every later job asking for the same set. It sees the creating interpreter's packages
(torch among them) through a ``.pth`` file, so pip installs only what is missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from prefect_kubeflow.backends.torchrun import pip_install_command, redact_url
from prefect_kubeflow.errors import BackendError
from prefect_kubeflow.files import remove_tree

_COMPLETE = ".complete"


def venv_key(packages: list[str], index_urls: list[str]) -> str:
    """The cache key of a venv: what it is built from, hashed."""
    identity = {
        "python": sys.version,
        "executable": str(Path(sys.executable).resolve()),
        "packages": sorted(packages),
        "index_urls": list(index_urls),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _python(path: Path) -> Path:
    return path / "bin" / "python"


def _build(path: Path, packages: list[str], index_urls: list[str], log: Path) -> None:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    site = subprocess.run(
        [str(_python(path)), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The parent's site-packages come after the venv's own: installed packages win.
    parent_paths = dict.fromkeys(
        [sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *sys.path[1:]]
    )
    Path(site, "_prefect_kubeflow_parent.pth").write_text(
        "\n".join(p for p in parent_paths if p and Path(p).is_dir()) + "\n"
    )
    argv, pip_env = pip_install_command(str(_python(path)), packages, index_urls)
    with open(log, "ab") as out:
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **pip_env}
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise BackendError(
            f"pip could not install packages_to_install {packages} from "
            f"{[redact_url(url) for url in index_urls]}:\n" + "\n".join(tail)
        )


def ensure_venv(cache_dir: Path, packages: list[str], index_urls: list[str], log: Path) -> Path:
    """The python of a venv holding `packages`, building it if no job has yet.

    Safe when several jobs ask at once: one builds under a file lock, the others wait and reuse.
    A failed build leaves nothing behind.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = venv_key(packages, index_urls)
    path = cache_dir / key
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / _COMPLETE).exists():
            return _python(path)
        remove_tree(path, "the venv of a build that died half-way")
        try:
            _build(path, packages, index_urls, log)
        except BaseException:
            remove_tree(path, "the venv that failed to build")
            raise
        (path / _COMPLETE).write_text(json.dumps({"packages": packages, "index_urls": index_urls}))
    return _python(path)
