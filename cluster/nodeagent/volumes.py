"""Volumes backed by API objects, written into the pod's folder as the kubelet does:
projected service-account tokens (TokenRequest), ConfigMaps, Secrets and the downward API."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from .podconfig import MountError


class VolumeSources:
    """Reads what a volume needs from the API (the agent's own credentials)."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def __call__(self, pod: dict[str, Any], volume: dict[str, Any], folder: Path) -> str:
        """Write `volume` into `folder`; its path, or MountError (the pod waits)."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        files: dict[str, bytes] = {}
        try:
            if "projected" in volume:
                for source in (volume["projected"] or {}).get("sources") or []:
                    files.update(self._projection(pod, source))
            elif "configMap" in volume:
                files = self._config_map(pod, volume["configMap"])
            elif "secret" in volume:
                files = self._secret(pod, volume["secret"])
            else:
                kind = next((k for k in volume if k != "name"), "unknown")
                raise MountError(volume["name"], f"volume type {kind} is not supported here")
        except ApiException as exc:
            raise MountError(volume["name"], f"{exc.status} {exc.reason}") from exc
        for name, data in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o644)
        return str(folder)

    def _projection(self, pod: dict[str, Any], source: dict[str, Any]) -> dict[str, bytes]:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            return {token["path"]: self._token(pod, token).encode()}
        if "configMap" in source:
            return self._config_map(pod, source["configMap"])
        if "secret" in source:
            return self._secret(pod, source["secret"])
        if "downwardAPI" in source:
            meta = pod["metadata"]
            values = {"metadata.namespace": meta["namespace"], "metadata.name": meta["name"]}
            return {
                item["path"]: values.get(item.get("fieldRef", {}).get("fieldPath", ""), "").encode()
                for item in source["downwardAPI"].get("items") or []
            }
        return {}

    def _token(self, pod: dict[str, Any], token: dict[str, Any]) -> str:
        meta = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": int(token.get("expirationSeconds") or 3607),
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if token.get("audience"):
            spec["audiences"] = [token["audience"]]
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        account = pod["spec"].get("serviceAccountName") or "default"
        answer = self.core.create_namespaced_service_account_token(
            account, meta["namespace"], request
        )
        return str(answer.status.token)

    def _config_map(self, pod: dict[str, Any], ref: dict[str, Any]) -> dict[str, bytes]:
        try:
            found = self.core.read_namespaced_config_map(ref["name"], pod["metadata"]["namespace"])
        except ApiException as exc:
            if exc.status == 404 and ref.get("optional"):
                return {}
            raise
        data = {k: v.encode() for k, v in (found.data or {}).items()}
        return _select(data, ref)

    def _secret(self, pod: dict[str, Any], ref: dict[str, Any]) -> dict[str, bytes]:
        name = ref.get("secretName") or ref.get("name")
        try:
            found = self.core.read_namespaced_secret(name, pod["metadata"]["namespace"])
        except ApiException as exc:
            if exc.status == 404 and ref.get("optional"):
                return {}
            raise
        data = {k: base64.b64decode(v) for k, v in (found.data or {}).items()}
        return _select(data, ref)


def _select(data: dict[str, bytes], ref: dict[str, Any]) -> dict[str, bytes]:
    """The `items` a volume asks for (key -> path), else every key under its own name."""
    items = ref.get("items")
    if not items:
        return data
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}
