"""Request handling: authentication, RBAC, routing and the REST verbs.

Order of checks as in kube-apiserver: authentication (401) -> discovery paths -> RBAC (403,
before the resource is even looked up) -> resource served? (404 `the server could not find
the requested resource`) -> verb handlers.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import discovery
from . import errors as E
from .patches import json_patch, merge_patch, strategic_merge
from .registry import Registry
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from .store import Resource, Store
from .util import dig

_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")


def _involved(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda obj: dig(obj, "involvedObject", key)


_FIELD_GETTERS: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "pods": {
        "spec.nodeName": lambda o: dig(o, "spec", "nodeName"),
        "spec.restartPolicy": lambda o: dig(o, "spec", "restartPolicy"),
        "spec.schedulerName": lambda o: dig(o, "spec", "schedulerName"),
        "spec.serviceAccountName": lambda o: dig(o, "spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: str(bool(dig(o, "spec", "hostNetwork"))).lower(),
        "status.phase": lambda o: dig(o, "status", "phase"),
        "status.podIP": lambda o: dig(o, "status", "podIP"),
        "status.nominatedNodeName": lambda o: dig(o, "status", "nominatedNodeName"),
    },
    "events": {
        **{f"involvedObject.{k}": _involved(k) for k in _INVOLVED},
        "reason": lambda o: o.get("reason"),
        "type": lambda o: o.get("type"),
        "reportingComponent": lambda o: o.get("reportingComponent"),
        "source": lambda o: dig(o, "source", "component"),
    },
    "namespaces": {"status.phase": lambda o: dig(o, "status", "phase")},
}
_PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
]
_BUILTIN_PATCH = [*_PATCH_TYPES, "application/strategic-merge-patch+json"]


@dataclass
class Request:
    """An HTTP request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    """A response: JSON (dict), plain text, or a stream of byte chunks."""

    code: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None


@dataclass
class Target:
    """What a resource request addresses."""

    resource: Resource
    schema: Any
    namespace: str
    name: str
    sub: str


class ApiHandler:
    """Turns requests into responses against the store."""

    def __init__(self, store: Store, token: str, user: str, logs: Any, url: str) -> None:
        self.store = store
        self.registry = Registry(store)
        self.token = token
        self.user = user
        self.logs = logs
        self.url = url
        self.forbidden: set[tuple[str, str]] = set()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def handle(self, req: Request) -> Response:
        """Serve one request; API errors become Status responses."""
        with self.lock:
            self.requests.append((req.method, req.path, dict(req.query)))
        try:
            return self._handle(req)
        except E.ApiError as err:
            return Response(err.code, err.status(), headers=err.headers)

    def _handle(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            raise E.unauthorized()
        parts = [p for p in req.path.split("/") if p]
        static = discovery.serve(self.store, parts, self.url)
        if static is not None:
            return Response(200, static[0], content_type=static[1])
        group, version, rest = _split_api_path(parts)
        namespace, plural, name, sub = _split_resource(rest)
        verb = _verb(req.method, name, req.query)
        resource_name = f"{plural}/{sub}" if sub else plural
        if (verb, resource_name) in self.forbidden:
            raise E.forbidden(verb, resource_name, group, namespace, name, self.user)
        found = self.store.find(group, version, plural)
        if (
            found is None
            or (namespace and not found[0].namespaced)
            or (not namespace and name and found[0].namespaced)
        ):
            raise E.unknown_resource()
        target = Target(found[0], found[1], namespace, name, sub)
        return self._dispatch(req, verb, target)

    def _dispatch(self, req: Request, verb: str, target: Target) -> Response:
        plural = target.resource.plural
        if target.sub == "log" and plural == "pods" and verb == "get":
            return self.logs.serve(target.namespace, target.name, req.query)
        if target.sub and not (target.sub == "status" and verb == "get"):
            raise E.method_not_allowed() if target.sub == "status" else E.unknown_resource()
        writable = plural in (
            "trainjobs",
            "clustertrainingruntimes",
            "namespaces",
            "pods",
            "events",
        )
        if verb == "list":
            return Response(200, self.list_response(target, req.query))
        if verb == "get":
            return Response(200, self._get(target))
        if verb == "watch":
            raise E.bad_request("watch is not supported by this test API server")
        if verb == "deletecollection":
            raise E.method_not_allowed()
        if (
            not writable
            or (plural == "pods" and verb in ("create", "update", "patch"))
            or (plural in ("namespaces", "events") and verb not in ("create",))
        ):
            raise E.method_not_allowed()
        dry_run = _dry_run(req.query)
        if verb == "create":
            obj, warnings = self.registry.create(
                target.resource,
                target.schema,
                target.namespace,
                _json(req.body),
                req.query.get("fieldValidation", ""),
                dry_run,
            )
            return Response(201, obj, headers=_warnings(warnings))
        if verb == "delete":
            result = self.registry.delete(
                target.resource, target.namespace, target.name, _delete_options(req), dry_run
            )
            return Response(200, result)
        return self._update(req, verb, target, dry_run)

    def _update(self, req: Request, verb: str, target: Target, dry_run: bool) -> Response:
        """PUT / PATCH, retried on a concurrent write unless the client pinned a version."""
        body = _json(req.body)
        pinned = bool(
            isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion")
        )
        for attempt in range(10):
            old = self._get(target)
            if verb == "update":
                new = body
            else:
                content_type = req.headers.get("content-type", "").split(";")[0].strip()
                new = self._patched(target.resource, old, content_type, body)
            try:
                obj, warnings = self.registry.update(
                    target.resource, target.schema, old, new,
                    req.query.get("fieldValidation", ""), dry_run,
                )  # fmt: skip
            except E.ApiError as err:
                if err.reason != "Conflict" or pinned or attempt == 9:
                    raise
                continue
            return Response(200, obj, headers=_warnings(warnings))
        raise AssertionError("unreachable")

    def _patched(self, res: Resource, old: dict[str, Any], content_type: str, patch: Any) -> Any:
        accepted = _PATCH_TYPES if res.crd else _BUILTIN_PATCH
        if content_type == "application/json-patch+json":
            return json_patch(old, patch)
        if content_type == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise E.bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            return merge_patch(old, patch)
        if content_type == "application/strategic-merge-patch+json" and not res.crd:
            return strategic_merge(old, patch)
        raise E.unsupported_media_type(content_type, accepted)

    def _get(self, target: Target) -> dict[str, Any]:
        res = target.resource
        obj = self.store.get(res.plural, target.namespace if res.namespaced else "", target.name)
        if obj is None:
            raise E.not_found(res.plural, res.group, target.name)
        return obj

    def list_response(self, target: Target, query: dict[str, str]) -> dict[str, Any]:
        """A list response with selectors and `limit`/`continue` paging."""
        res = target.resource
        getters = {
            "metadata.name": lambda o: o["metadata"]["name"],
            "metadata.namespace": lambda o: o["metadata"].get("namespace"),
            **_FIELD_GETTERS.get(res.plural, {}),
        }
        labels = parse_label_selector(query.get("labelSelector"))
        terms = parse_field_selector(query.get("fieldSelector"), getters)
        items = [
            o
            for o in self.store.list_objects(res.plural, target.namespace or None)
            if labels_match(labels, o["metadata"].get("labels")) and fields_match(terms, o)
        ]
        meta: dict[str, Any] = {"resourceVersion": self.store.resource_version()}
        items = self._page(items, query, meta)
        if not res.crd:
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return {
            "kind": res.list_kind,
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": items,
        }

    def _page(
        self, items: list[dict[str, Any]], query: dict[str, str], meta: dict[str, Any]
    ) -> list[dict[str, Any]]:
        start = query.get("continue")
        if start:
            try:
                token = json.loads(base64.b64decode(start))
                after = token["start"]
            except (ValueError, KeyError, TypeError) as exc:
                raise E.bad_request("continue key is not valid: illegal base64 data") from exc
            items = [o for o in items if _key(o) >= after]
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            following = items[limit]
            token = {
                "v": "meta.k8s.io/v1",
                "rv": int(meta["resourceVersion"]),
                "start": _key(following),
            }
            meta["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return items


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def _split_api_path(parts: list[str]) -> tuple[str, str, list[str]]:
    if len(parts) >= 2 and parts[0] == "api":
        return "", parts[1], parts[2:]
    if len(parts) >= 3 and parts[0] == "apis":
        return parts[1], parts[2], parts[3:]
    raise E.unknown_resource()


def _split_resource(rest: list[str]) -> tuple[str, str, str, str]:
    """(namespace, plural, name, subresource) of the path after the group version."""
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest_ns, rest = rest[1], rest[2:]
    else:
        rest_ns = ""
    if not rest or len(rest) > 3:
        raise E.unknown_resource()
    return rest_ns, rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""


def _verb(method: str, name: str, query: dict[str, str]) -> str:
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if method not in verbs or (method == "POST") == bool(name):
        if method == "DELETE" and not name:
            return "deletecollection"
        raise E.method_not_allowed()
    return verbs[method]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise E.bad_request(f"the object provided is unrecognized: {exc}") from exc


def _delete_options(req: Request) -> dict[str, Any]:
    options = _json(req.body) if req.body.strip() else {}
    options = options if isinstance(options, dict) else {}
    for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
        if key in req.query and key not in options:
            value: Any = req.query[key]
            if key == "gracePeriodSeconds":
                value = int(value)
            elif key == "orphanDependents":
                value = value == "true"
            options[key] = value
    return options


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun", "")
    if value not in ("", "All"):
        raise E.bad_request(f'Invalid dryRun value: "{value}": supported values: "All"')
    return value == "All"


def _warnings(notes: list[str]) -> dict[str, str]:
    if not notes:
        return {}
    return {"Warning": ", ".join(f"299 - {json.dumps(note)}" for note in notes)}
