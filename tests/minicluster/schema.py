"""Structural-schema handling of custom resources, as the apiextensions API server does it.

Order on every write: prune unknown fields (reported as warnings, or an error with
`fieldValidation=Strict`), drop non-nullable nulls and apply `default`s, then validate with
`jsonschema` (Draft 7 on the CRD's openAPIV3Schema) and translate each violation into the
field error the API server would report (go-openapi messages, e.g.
`spec.trainer.numNodes in body must be of type integer: "string"`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import ValidationError

from . import errors as E
from .errors import FieldError
from .util import deep

OBJECT_META_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}


def path_str(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """`spec.trainer.env[0].name` from path segments."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def go_type(value: Any) -> str:
    """The JSON type name go-openapi reports for a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def prune(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Drop fields the schema does not know (in place); return their paths."""
    unknown: list[str] = []
    for key in list(obj):
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata" and isinstance(obj[key], dict):
            for meta_key in list(obj[key]):
                if meta_key not in OBJECT_META_FIELDS:
                    unknown.append(f"metadata.{meta_key}")
                    del obj[key][meta_key]
            continue
        sub = schema.get("properties", {}).get(key)
        if sub is None:
            unknown.append(key)
            del obj[key]
        else:
            _prune(obj[key], sub, [key], unknown)
    return unknown


def _prune(value: Any, schema: dict[str, Any], path: list[str | int], out: list[str]) -> None:
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(item, schema["items"], [*path, index], out)
        return
    if not isinstance(value, dict):
        return
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
    for key in list(value):
        if key in props:
            _prune(value[key], props[key], [*path, key], out)
        elif isinstance(extra, dict):
            _prune(value[key], extra, [*path, key], out)
        elif not keep_unknown:
            out.append(path_str([*path, key]))
            del value[key]


def apply_defaults(value: Any, schema: dict[str, Any]) -> None:
    """Drop non-nullable nulls and fill in `default`s (in place), recursively."""
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
        return
    if not isinstance(value, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key in value and value[key] is None and not sub.get("nullable"):
            del value[key]
        if key not in value and "default" in sub:
            value[key] = deep(sub["default"])
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            apply_defaults(item, props[key])
        elif isinstance(extra, dict):
            apply_defaults(item, extra)


def _prepare(schema: Any) -> Any:
    """Make an openAPI v3 schema digestible for Draft 7: nullable, int-or-string."""
    if isinstance(schema, list):
        return [_prepare(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _prepare(v) for k, v in schema.items() if k not in ("description", "default")}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("anyOf", None)
        out.pop("type", None)
        out["x-int-or-string"] = True
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _int_or_string(validator: Any, enabled: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if enabled and go_type(instance) not in ("integer", "string"):
        yield ValidationError("int-or-string", validator="x-int-or-string", instance=instance)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-int-or-string": _int_or_string}
)


class CrdSchema:
    """One CRD version's openAPIV3Schema: pruning, defaulting and validation."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.raw = schema
        self.validator = _Validator(_prepare(schema))

    def validate(self, obj: dict[str, Any]) -> list[FieldError]:
        """Schema violations as API-server field errors."""
        body = {k: v for k, v in obj.items() if k != "metadata"}
        out: list[FieldError] = []
        for err in self.validator.iter_errors(body):
            out.extend(_translate(err))
        out.extend(list_map_duplicates(obj, self.raw, []))
        return out


def _num(value: Any) -> str:
    return E.go_number(value)


def _translate(err: ValidationError) -> list[FieldError]:
    """go-openapi message + apiextensions `ValidateCustomResource` mapping for one violation."""
    name = path_str(list(err.absolute_path))
    field = name or "<nil>"
    kind, want, got = err.validator, err.validator_value, err.instance
    if kind == "type":
        want = [t for t in (want if isinstance(want, list) else [want]) if t != "null"]
        detail = f'{name} in body must be of type {",".join(want)}: "{go_type(got)}"'
        return [FieldError(E.TYPE_INVALID, field, go_type(got), detail)]
    if kind == "x-int-or-string":
        actual = go_type(got)
        return [
            FieldError(
                E.TYPE_INVALID,
                field,
                actual,
                f'{name} in body must be of type integer,string: "{actual}"',
            ),
            FieldError(
                E.INVALID, "<nil>", "", f'"{name}" must validate at least one schema (anyOf)'
            ),
            FieldError(
                E.TYPE_INVALID, field, actual, f'{name} in body must be of type integer: "{actual}"'
            ),
        ]
    if kind == "required":
        missing = [key for key in want if isinstance(got, dict) and key not in got]
        return [FieldError(E.REQUIRED, path_str([*err.absolute_path, key])) for key in missing]
    if kind == "enum":
        allowed = ", ".join(E.go_quote(v if isinstance(v, str) else json.dumps(v)) for v in want)
        return [FieldError(E.NOT_SUPPORTED, field, got, f"supported values: {allowed}")]
    if kind == "maxLength":
        return [FieldError(E.TOO_LONG, field, "", f"may not be more than {want} bytes")]
    if kind in ("maxItems", "maxProperties"):
        noun = "items" if kind == "maxItems" else "properties"
        return [FieldError(E.TOO_MANY, field, len(got), f"must have at most {want} {noun}")]
    messages = {
        "minLength": f"{name} in body should be at least {want} chars long",
        "pattern": f"{name} in body should match '{want}'",
        "minimum": f"{name} in body should be greater than or equal to {_num(want)}",
        "maximum": f"{name} in body should be less than or equal to {_num(want)}",
        "minItems": f"{name} in body should have at least {want} items",
        "minProperties": f"{name} in body should have at least {want} properties",
    }
    value = len(got) if kind in ("minItems", "minProperties") else got
    return [FieldError(E.INVALID, field, value, messages.get(kind, err.message))]


def list_map_duplicates(
    value: Any, schema: dict[str, Any], path: list[str | int]
) -> list[FieldError]:
    """`x-kubernetes-list-type: map` / `set` uniqueness, as `structurallisttype` checks it."""
    out: list[FieldError] = []
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None and (path or key != "metadata"):
                out.extend(list_map_duplicates(item, sub, [*path, key]))
        return out
    if not isinstance(value, list):
        return out
    list_type, items = schema.get("x-kubernetes-list-type"), schema.get("items") or {}
    if list_type in ("map", "set"):
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            if list_type == "map" and isinstance(item, dict):
                key_map = {k: item[k] for k in keys if k in item}
            else:
                key_map = item
            marker = json.dumps(key_map, sort_keys=True)
            seen[marker] = seen.get(marker, 0) + 1
            if seen[marker] == 2:
                out.append(FieldError(E.DUPLICATE, path_str([*path, index]), key_map))
    for index, item in enumerate(value):
        out.extend(list_map_duplicates(item, items, [*path, index]))
    return out
