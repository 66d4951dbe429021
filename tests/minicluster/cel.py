"""`x-kubernetes-validations` rules of the Trainer CRDs, recognised by their exact rule text.

There is no CEL interpreter here: each rule the Trainer CRDs carry is written out in Python.
Rules not listed are skipped. Transition rules (`oldSelf`) run only on updates, for values
that correlate with the old object (same property path, list-map items by key), as the
API server does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import errors as E
from .errors import FieldError
from .schema import path_str

_MISSING = object()
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$")
_MANAGERS = ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue")


def _name(obj: Any) -> str:
    return str(((obj or {}).get("metadata") or {}).get("name") or "")


def _one_policy(obj: Any) -> bool:
    return sum(1 for key in ("torch", "mpi", "jax", "xgboost", "flux") if key in obj) <= 1


def _startup_vs_depends(obj: Any) -> bool:
    policy = (obj.get("startupPolicy") or {}).get("startupPolicyOrder")
    depends = any("dependsOn" in job for job in obj.get("replicatedJobs") or [])
    return not (policy == "InOrder" and depends)


def _no_template_namespace(obj: Any) -> bool:
    templates = obj.get("templates") or []
    return all(not ((t.get("metadata") or {}).get("namespace")) for t in templates)


# rule text -> (uses oldSelf, predicate(self, oldSelf) -> valid)
RULES: dict[str, tuple[bool, Callable[[Any, Any], bool]]] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": (
        False,
        lambda s, _: bool(_RFC1035.search(_name(s))),
    ),
    "size(self.metadata.name) <= 63": (False, lambda s, _: len(_name(s)) <= 63),
    "self == oldSelf": (True, lambda s, o: s == o),
    "self >= 1": (False, lambda s, _: s >= 1),
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')": (
        False,
        lambda s, _: s == "" or bool(_URI.search(s)),
    ),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']": (
        False,
        lambda s, _: s in _MANAGERS,
    ),
    "has(self.lastUpdatedTime)": (False, lambda s, _: "lastUpdatedTime" in s),
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)]"
    ".filter(x, x).size() <= 1": (False, lambda s, _: _one_policy(s)),
    "!self.exists(c, c == 'node')": (False, lambda s, _: "node" not in s),
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))": (
        False,
        lambda s, _: _startup_vs_depends(s),
    ),
    "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)": (
        False,
        lambda s, _: _no_template_namespace(s),
    ),
}


def validate(
    obj: dict[str, Any], old: dict[str, Any] | None, schema: dict[str, Any]
) -> list[FieldError]:
    """Evaluate the recognised rules over the whole object (`old` for updates)."""
    out: list[FieldError] = []
    _walk(obj, _MISSING if old is None else old, schema, [], out)
    return out


def _check_node(
    value: Any, old: Any, schema: dict[str, Any], path: list[str | int], out: list[FieldError]
) -> None:
    for rule in schema.get("x-kubernetes-validations") or []:
        known = RULES.get(rule.get("rule", ""))
        if known is None:
            continue
        transition, predicate = known
        if transition and old is _MISSING:
            continue
        try:
            valid = predicate(value, None if old is _MISSING else old)
        except (TypeError, AttributeError):
            continue  # the schema check reports the wrong type
        if not valid:
            field = path_str(path) or "<nil>"
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            out.append(FieldError(E.INVALID, field, schema.get("type", "object"), message))


def _walk(
    value: Any, old: Any, schema: dict[str, Any], path: list[str | int], out: list[FieldError]
) -> None:
    _check_node(value, old, schema, path, out)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        olds = old if isinstance(old, dict) else {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                _walk(item, olds.get(key, _MISSING), sub, [*path, key], out)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        keyed = schema.get("x-kubernetes-list-type") == "map"
        keys = schema.get("x-kubernetes-list-map-keys") or []
        by_key = {}
        if keyed and isinstance(old, list):
            by_key = {_key(item, keys): item for item in old if isinstance(item, dict)}
        for index, item in enumerate(value):
            prior = by_key.get(_key(item, keys), _MISSING) if keyed else _MISSING
            _walk(item, prior, schema["items"], [*path, index], out)


def _key(item: Any, keys: list[str]) -> tuple[Any, ...]:
    if not isinstance(item, dict):
        return ()
    return tuple(repr(item.get(key)) for key in keys)
