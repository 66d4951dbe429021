"""What the kubelet derives from a pod spec for its container runtime: env, mounts, limits."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from .util import dig, parse_quantity, quantity_milli, quantity_value

SERVICE_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


class ConfigError(Exception):
    """`CreateContainerConfigError` (e.g. a referenced Secret does not exist)."""


class MountError(Exception):
    """A volume that cannot be set up (`FailedMount`); the pod stays ContainerCreating."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes a `$`."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(repl, text)


def _field_ref(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    return simple.get(path, "")


def _resource_ref(container: dict[str, Any], ref: dict[str, Any], alloc: dict[str, int]) -> str:
    section, _, name = ref.get("resource", "").partition(".")
    value = dig(container, "resources", section, name)
    divisor = parse_quantity(ref.get("divisor", "1"))
    if value is None:
        value = alloc["cpu_milli"] / 1000 if name == "cpu" else alloc["memory"]
    amount = parse_quantity(value) / divisor
    return str(math.ceil(amount))


def resolve_env(
    pod: dict[str, Any], container: dict[str, Any], pod_ip: str, host_ip: str, alloc: dict[str, int]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it (service env first)."""
    env = dict(SERVICE_ENV)
    for source in container.get("envFrom") or []:
        kind = "configmap" if "configMapRef" in source else "secret"
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        if not ref.get("optional"):
            raise ConfigError(f'{kind} "{ref.get("name")}" not found')
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[name] = _field_ref(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            env[name] = _resource_ref(container, source["resourceFieldRef"], alloc)
        else:
            kind = "configmap" if "configMapKeyRef" in source else "secret"
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef") or {}
            if not ref.get("optional"):
                raise ConfigError(f'{kind} "{ref.get("name")}" not found')
    return env


def _host_path(name: str, host: dict[str, Any]) -> str:
    path, kind = host.get("path", ""), host.get("type", "")
    target = Path(path)
    if kind == "DirectoryOrCreate":
        target.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    elif kind == "Directory" and not target.is_dir():
        raise MountError(name, f"hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not target.is_file():
        raise MountError(name, f"hostPath type check failed: {path} is not a file")
    return path


def mounts(
    pod: dict[str, Any],
    container: dict[str, Any],
    pod_dir: Path,
    materialize: Callable[[dict[str, Any], Path], str],
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Docker binds and tmpfs mounts for the container's volumeMounts. `materialize` writes an
    API-backed volume (projected token, ConfigMap, Secret) into a folder and returns it."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    binds: dict[str, dict[str, str]] = {}
    tmpfs: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        if volume is None:
            raise MountError(mount.get("name", ""), "volume not found in pod spec")
        mode = "ro" if mount.get("readOnly") else "rw"
        if "hostPath" in volume:
            source = _host_path(volume["name"], volume["hostPath"])
        elif "emptyDir" in volume:
            if (volume["emptyDir"] or {}).get("medium") == "Memory":
                tmpfs[mount["mountPath"]] = ""
                continue
            source_dir = pod_dir / "volumes" / volume["name"]
            source_dir.mkdir(parents=True, exist_ok=True)
            source_dir.chmod(0o777)
            source = str(source_dir)
        else:
            source = materialize(volume, pod_dir / "volumes" / volume["name"])
        if mount.get("subPath"):
            source = str(Path(source) / mount["subPath"])
            Path(source).mkdir(parents=True, exist_ok=True)
        binds[source] = {"bind": mount["mountPath"], "mode": mode}
    return binds, tmpfs


def limits(container: dict[str, Any], host_cpus: int) -> dict[str, Any]:
    """cgroup settings: limits are enforced, CPU requests become shares (as the kubelet)."""
    resources = container.get("resources") or {}
    out: dict[str, Any] = {}
    cpu_limit = dig(resources, "limits", "cpu")
    if cpu_limit is not None:
        cores = min(parse_quantity(cpu_limit), Decimal(host_cpus))
        out["nano_cpus"] = max(10_000_000, int(cores * 1_000_000_000))
    cpu_request = dig(resources, "requests", "cpu")
    out["cpu_shares"] = max(2, quantity_milli(cpu_request) * 1024 // 1000) if cpu_request else 2
    mem_limit = dig(resources, "limits", "memory")
    if mem_limit is not None:
        out["mem_limit"] = max(6 * 1024 * 1024, quantity_value(mem_limit))
        out["memswap_limit"] = out["mem_limit"]
    return out
