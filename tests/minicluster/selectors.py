"""Label and field selectors (`k8s.io/apimachinery/pkg/labels`, `.../fields`) and name checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def regex_error(message: str, fmt: str, *examples: str) -> str:
    """`validation.RegexError` (with its famous double space between examples)."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def dns1123_subdomain(value: str) -> list[str]:
    """`validation.IsDNS1123Subdomain`."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(
            regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                "example.com",
            )
        )
    return errs


def dns1123_label(value: str) -> list[str]:
    """`validation.IsDNS1123Label` (namespace names)."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errs.append(
            regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                "'-', and must start and end with an alphanumeric character",
                "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
                "my-name",
                "123-abc",
            )
        )
    return errs


_QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_QUALIFIED_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


def qualified_name(value: str) -> list[str]:
    """`validation.IsQualifiedName` (label and annotation keys)."""
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) > 2:
        return [
            "a qualified name "
            + regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + msg for msg in dns1123_subdomain(parts[0]))
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QUALIFIED.match(name):
        errs.append(
            "name part "
            + regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value(value: str) -> list[str]:
    """`validation.IsValidLabelValue`."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        errs.append(
            regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, '-', "
                "'_' or '.', and must start and end with an alphanumeric character",
                f"({_QUALIFIED_FMT})?",
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


@dataclass(frozen=True)
class Requirement:
    """One label requirement: key, operator and values."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """`Requirement.Matches`."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "==", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return present and (have > want if self.op == ">" else have < want)


_TOKEN = re.compile(r"\s*(==|!=|=|!|,|\(|\)|>|<|[^\s,=!()<>]+)")


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            break
        tokens.append(match.group(1))
        pos = match.end()
        if not text[pos:].strip():
            break
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0

    def fail(self, detail: str) -> Exception:
        return bad_request(f'unable to parse requested label selector "{self.text}": {detail}')

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("found '', expected: identifier")
        self.pos += 1
        return tok

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(self.key(self.take()), "!")
        key = self.key(self.take())
        op = self.peek()
        if op in (None, ","):
            return Requirement(key, "exists")
        self.take()
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        if op not in ("=", "==", "!=", ">", "<"):
            raise self.fail(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        value = "" if self.peek() in (None, ",") else self.take()
        if op in (">", "<") and not re.fullmatch(r"-?\d+", value):
            raise self.fail(f"for 'Gt', 'Lt' operators, the value must be an integer: {value}")
        return Requirement(key, op, (self.value(value),))

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            raise self.fail("found '', expected: '('")
        values: list[str] = []
        while True:
            tok = self.take()
            if tok == ")" and not values:
                raise self.fail("for 'in', 'notin' operators, values set can't be empty")
            if tok in (",", ")"):
                values.append("")
            else:
                values.append(self.value(tok))
                tok = self.take()
            if tok == ")":
                return tuple(values)
            if tok != ",":
                raise self.fail(f"found '{tok}', expected: ',' or ')'")

    def key(self, tok: str) -> str:
        if tok in ("(", ")", ",", "=", "==", "!=", "!", ">", "<") or qualified_name(tok):
            raise self.fail(f"found '{tok}', expected: identifier")
        return tok

    def value(self, tok: str) -> str:
        errs = label_value(tok)
        if errs:
            raise self.fail(f"invalid label value: {tok!r}: {'; '.join(errs)}")
        return tok


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector (`a=b,c!=d,e in (f,g),!h,i`); 400 when malformed."""
    if not text or not text.strip():
        return []
    parser = _Parser(text)
    reqs = [parser.requirement()]
    while parser.peek() is not None:
        if parser.take() != ",":
            raise parser.fail(
                f"found '{parser.toks[parser.pos - 1]}', expected: ',' or 'end of string'"
            )
        reqs.append(parser.requirement())
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    """Whether all requirements hold for these labels."""
    return all(req.matches(labels or {}) for req in reqs)


@dataclass(frozen=True)
class FieldTerm:
    """One field selector term."""

    field: str
    op: str
    value: str


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, escaped = [], "", False
    for char in text:
        if escaped:
            cur += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += char
    parts.append(cur)
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(
    text: str | None, fields: dict[str, Callable[[dict[str, Any]], str | None]]
) -> list[tuple[FieldTerm, Callable[[dict[str, Any]], str | None]]]:
    """Parse `a=b,c!=d` against the fields a resource supports; 400 for others."""
    if not text or not text.strip():
        return []
    terms = []
    for part in _split_unescaped(text, ","):
        for op in ("!=", "==", "="):
            index = part.find(op)
            if index > 0:
                term = FieldTerm(part[:index].strip(), op, _unescape(part[index + len(op) :]))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if term.field not in fields:
            raise bad_request(f"field label not supported: {term.field}")
        terms.append((term, fields[term.field]))
    return terms


def fields_match(
    terms: list[tuple[FieldTerm, Callable[[dict[str, Any]], str | None]]], obj: dict[str, Any]
) -> bool:
    """Whether the object satisfies all field terms."""
    for term, getter in terms:
        value = getter(obj) or ""
        if (value == term.value) != (term.op != "!="):
            return False
    return True
