"""Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch."""

from __future__ import annotations

from typing import Any

from .errors import ApiError, bad_request
from .util import deep

# Strategic-merge list keys of the core/v1 + batch/v1 types a runtime template holds.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return deep(patch)
    result = deep(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch for the lists above (merged by key); other lists replace."""
    if not isinstance(patch, dict):
        return deep(patch)
    result = deep(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        else:
            result[key] = strategic_merge(result.get(key), value)
    return result


def _merge_list(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = deep(base)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(deep(item))
            continue
        match = next(
            (i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if match is not None:
                out.pop(match)
        elif match is None:
            out.append({k: v for k, v in deep(item).items() if not k.startswith("$")})
        else:
            out[match] = strategic_merge(out[match], item)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(
            f"the server rejected our request due to an error in our request: "
            f"invalid JSON pointer {path!r}"
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ApiError(
                422,
                "Invalid",
                f"{op} operation does not apply: doc is missing path: "
                f'"/{"/".join(parts)}": missing value',
            )
    return node, parts[-1]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 operations: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = deep(doc)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if kind in ("move", "copy"):
            source = _get(doc, _pointer(op.get("from", "")), kind)
            if kind == "move":
                doc = _apply(doc, _pointer(op["from"]), "remove", None)
            doc = _apply(doc, parts, "add", deep(source))
        elif kind == "test":
            if _get(doc, parts, kind) != op.get("value"):
                raise ApiError(422, "Invalid", "testing value failed")
        elif kind in ("add", "remove", "replace"):
            doc = _apply(doc, parts, kind, deep(op.get("value")))
        else:
            raise bad_request(f"Unexpected kind: {kind}")
    return doc


def _get(doc: Any, parts: list[str], op: str) -> Any:
    if not parts:
        return doc
    parent, last = _parent(doc, parts, op)
    try:
        return parent[int(last)] if isinstance(parent, list) else parent[last]
    except (KeyError, IndexError, ValueError) as exc:
        raise ApiError(
            422,
            "Invalid",
            f"{op} operation does not apply: doc is missing path: "
            f'"/{"/".join(parts)}": missing value',
        ) from exc


def _apply(doc: Any, parts: list[str], kind: str, value: Any) -> Any:
    if not parts:
        return value if kind != "remove" else None
    parent, last = _parent(doc, parts, kind)
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, value)
        elif kind == "remove":
            parent.pop(index)
        else:
            parent[index] = value
        return doc
    if kind in ("remove", "replace") and last not in parent:
        raise ApiError(
            422,
            "Invalid",
            f"{kind} operation does not apply: doc is missing key: "
            f'"/{"/".join(parts)}": missing value',
        )
    if kind == "remove":
        del parent[last]
    else:
        parent[last] = value
    return doc
