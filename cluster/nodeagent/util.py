"""Small helpers of the node agent: times, nested lookups, resource quantities."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime | None = None) -> str:
    """`metav1.Time`: RFC 3339 with second precision (`2026-11-30T07:00:00Z`)."""
    return (moment or now()).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime | None = None) -> str:
    """`metav1.MicroTime`: RFC 3339 with microseconds (`2026-11-30T07:00:00.123456Z`)."""
    return (moment or now()).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NANO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> tuple[datetime, int]:
    """Parse RFC 3339 (with or without fraction) into (whole seconds, nanoseconds)."""
    match = _NANO.match(text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, frac, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    moment = datetime.fromisoformat(base + zone).astimezone(timezone.utc)
    return moment, int((frac or "").ljust(9, "0"))


def epoch_nanos(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time."""
    moment, nanos = parse_time(text)
    return int(moment.timestamp()) * 1_000_000_000 + nanos


def fixed_nano(text: str) -> str:
    """The kubelet's `RFC3339NanoFixed`: always nine fraction digits, UTC."""
    moment, nanos = parse_time(text)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def seconds_precision(text: str) -> str | None:
    """Truncate a Docker time to `metav1.Time` (None for Docker's zero time)."""
    if not text or text.startswith("0001-01-01"):
        return None
    return rfc3339(parse_time(text)[0])


def dig(obj: Any, *keys: str | int, default: Any = None) -> Any:
    """Nested lookup that tolerates missing keys and wrong types."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(obj, list) or key >= len(obj):
                return default
        elif not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)


def parse_quantity(value: Any) -> Decimal:
    """A `resource.Quantity` (`"500m"`, `"1Gi"`, `2`, `"1e3"`) as a Decimal."""
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(str(value)) from exc
    if suffix and suffix[0] in "eE":
        return base * (Decimal(10) ** int(suffix[1:]))
    return base * _SUFFIXES[suffix or ""]


def quantity_value(value: Any) -> int:
    """`Quantity.Value()`: rounded up to an integer."""
    return math.ceil(parse_quantity(value))


def quantity_milli(value: Any) -> int:
    """`Quantity.MilliValue()`: rounded up to thousandths."""
    return math.ceil(parse_quantity(value) * 1000)
