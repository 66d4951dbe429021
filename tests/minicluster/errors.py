"""API errors as the Kubernetes API server reports them: `Status` objects and field errors.

Messages and field-error bodies follow k8s.io/apimachinery (`api/errors`, `util/validation/field`),
including Go's `%q` / `%#v` renderings of the offending values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Field error types (the `reason` of a `details.causes` entry) and their message words.
INVALID = "FieldValueInvalid"
TYPE_INVALID = "FieldValueTypeInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
INTERNAL = "InternalError"
NOT_FOUND = "FieldValueNotFound"

_WORDS = {
    INVALID: "Invalid value",
    TYPE_INVALID: "Invalid value",
    REQUIRED: "Required value",
    NOT_SUPPORTED: "Unsupported value",
    DUPLICATE: "Duplicate value",
    FORBIDDEN: "Forbidden",
    TOO_LONG: "Too long",
    TOO_MANY: "Too many",
    INTERNAL: "Internal error",
    NOT_FOUND: "Not found",
}
_NO_VALUE = {REQUIRED, FORBIDDEN, TOO_LONG, INTERNAL}


class GoRaw(str):
    """A value already rendered the way Go's `%#v` prints it (e.g. a typed struct)."""


def go_quote(text: str) -> str:
    """Go's `%q` of a string (close enough: JSON escaping without ASCII-only output)."""
    return json.dumps(text, ensure_ascii=False)


def go_number(value: float | int) -> str:
    """Go's `%v` of a number decoded from JSON (int64 or float64)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def go_sharp_v(value: Any) -> str:
    """Go's `%#v` of a value decoded into `interface{}` from JSON."""
    if isinstance(value, GoRaw):
        return str(value)
    if value is None:
        return "interface {}(nil)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_number(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{go_quote(k)}:{go_sharp_v(value[k])}" for k in sorted(value))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(go_sharp_v(v) for v in value) + "}"
    return repr(value)


@dataclass
class FieldError:
    """One `field.Error`: type, field path, bad value and detail."""

    type: str
    field: str
    value: Any = ""
    detail: str = ""
    omit_value: bool = False

    def body(self) -> str:
        """`ErrorBody()`: the message without the field path."""
        words = _WORDS[self.type]
        if self.type in _NO_VALUE or self.omit_value:
            text = words
        elif isinstance(self.value, GoRaw):
            text = f"{words}: {self.value}"
        elif self.value is None:
            text = f'{words}: "null"'
        elif isinstance(self.value, (bool, int, float)):
            text = f"{words}: {go_number(self.value)}"
        elif isinstance(self.value, str):
            text = f"{words}: {go_quote(self.value)}"
        else:
            text = f"{words}: {go_sharp_v(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, Any]:
        """The `details.causes` entry."""
        return {"reason": self.type, "message": self.body(), "field": self.field}


def aggregate(errors: list[FieldError]) -> str:
    """`ErrorList.ToAggregate().Error()`: deduplicated, bracketed when more than one."""
    seen: list[str] = []
    for err in errors:
        if str(err) not in seen:
            seen.append(str(err))
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


@dataclass
class ApiError(Exception):
    """An API failure, rendered as a `Status` object."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> dict[str, Any]:
        """The `Status` body the API server sends."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def qualified(plural: str, group: str) -> str:
    """`schema.GroupResource.String()`: `pods` or `trainjobs.trainer.kubeflow.org`."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    """404 for a missing object."""
    return ApiError(
        404,
        "NotFound",
        f'{qualified(plural, group)} "{name}" not found',
        _details(name, group, plural),
    )


def unknown_resource() -> ApiError:
    """404 for a path the server does not serve (e.g. a CRD that is not installed)."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(plural: str, group: str, name: str) -> ApiError:
    """409 on create when the name is taken."""
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        _details(name, group, plural),
    )


def conflict(plural: str, group: str, name: str) -> ApiError:
    """409 on a stale resourceVersion."""
    message = (
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, _details(name, group, plural))


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 with one cause per field error."""
    group_kind = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = [err.cause() for err in errors]
    message = f'{group_kind} "{name}" is invalid: {aggregate(errors)}'
    return ApiError(422, "Invalid", message, details)


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def forbidden(
    verb: str, plural: str, group: str, namespace: str | None, name: str, user: str
) -> ApiError:
    """403 as RBAC denies a request (`plural` may name a subresource: `pods/log`)."""
    resource = plural.partition("/")[0]
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    reason = f'User "{user}" cannot {verb} resource "{plural}" in API group "{group}"{where}'
    named = f' "{name}"' if name else ""
    message = f"{qualified(resource, group)}{named} is forbidden: {reason}"
    details = _details(name, group, resource)
    if not name:
        del details["name"]
    return ApiError(403, "Forbidden", message, details)


def webhook_denied(webhook: str, message: str) -> ApiError:
    """403 from a validating admission webhook built with controller-runtime (`Denied`)."""
    return ApiError(
        403, "Forbidden", f'admission webhook "{webhook}" denied the request: {message}'
    )


def unauthorized() -> ApiError:
    """401 for a request without valid credentials."""
    return ApiError(401, "Unauthorized", "Unauthorized")


def method_not_allowed() -> ApiError:
    """405 for a verb the resource does not support."""
    message = "the server does not allow this method on the requested resource"
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    """415 for a PATCH body type the resource does not accept."""
    message = (
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}"
    )
    return ApiError(415, "UnsupportedMediaType", message, {})
