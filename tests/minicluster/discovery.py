"""Non-resource paths: `/version`, health checks and API discovery documents."""

from __future__ import annotations

from typing import Any

from . import errors as E
from .store import BUILTIN, Resource, Store

VERSION = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-08-26T00:00:00Z",
    "goVersion": "go1.26.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource_entry(res: Resource) -> dict[str, Any]:
    return {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": _VERBS,
    }


def _resource_list(group_version: str, resources: list[Resource]) -> dict[str, Any]:
    entries = [_resource_entry(res) for res in resources]
    for res in resources:
        if res.status_subresource:
            entries.append(
                {
                    "name": f"{res.plural}/status",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if res.plural == "pods":
            entries.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }


def _groups(store: Store) -> dict[str, list[Resource]]:
    groups: dict[str, list[Resource]] = {}
    for (group, version), resources in BUILTIN.items():
        if group:
            groups.setdefault(f"{group}/{version}", []).extend(resources)
    for res, _ in store.custom_resources():
        groups.setdefault(res.api_version, []).append(res)
    return groups


def serve(store: Store, parts: list[str], url: str) -> tuple[Any, str] | None:
    """The document for a non-resource path, or None for resource paths."""
    if parts in (["healthz"], ["readyz"], ["livez"]):
        return "ok", "text/plain"
    if parts == ["version"]:
        return VERSION, "application/json"
    if parts == ["api"]:
        address = url.split("://", 1)[-1]
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        }, "application/json"
    if parts == ["api", "v1"]:
        return _resource_list("v1", BUILTIN[("", "v1")]), "application/json"
    groups = _groups(store)
    if parts == ["apis"]:
        items = []
        for group_version in groups:
            group, version = group_version.split("/")
            gv = {"groupVersion": group_version, "version": version}
            items.append({"name": group, "versions": [gv], "preferredVersion": gv})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}, "application/json"
    if len(parts) == 3 and parts[0] == "apis":
        resources = groups.get(f"{parts[1]}/{parts[2]}")
        if resources is None:
            raise E.unknown_resource()
        return _resource_list(f"{parts[1]}/{parts[2]}", resources), "application/json"
    if len(parts) == 2 and parts[0] == "apis":
        versions = [gv for gv in groups if gv.split("/")[0] == parts[1]]
        if not versions:
            raise E.unknown_resource()
        gv = {"groupVersion": versions[0], "version": versions[0].split("/")[1]}
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": parts[1],
            "versions": [gv],
            "preferredVersion": gv,
        }, "application/json"
    return None
