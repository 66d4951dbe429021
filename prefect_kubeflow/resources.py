"""Resource amounts as Kubernetes spells them (``"500m"`` CPUs, ``"4Gi"`` of memory, GPUs
as ``gpu`` or ``nvidia.com/gpu``), read as numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_kubeflow import constants


def quantity(value: int | float | str) -> float:
    """A resource amount as a number: ``2``, ``"1.5"`` or Kubernetes milli-units (``"500m"``).

    Raises `ValueError` for anything else.
    """
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_MEMORY_UNITS = {
    **{suffix: 1024**power for power, suffix in enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi"))},
    **{suffix: 1000**power for power, suffix in enumerate(("", "k", "M", "G", "T", "P"))},
}


def memory_bytes(value: int | str) -> int:
    """A Kubernetes memory quantity in bytes: ``1073741824``, ``"4Gi"``, ``"512M"``.

    Raises `ValueError` for anything else.
    """
    text = str(value).strip()
    number = text.rstrip("KkMGTPi")
    unit = text[len(number) :]
    if unit not in _MEMORY_UNITS or not number:
        raise ValueError(f"not a memory quantity: {value!r}")
    return int(float(number) * _MEMORY_UNITS[unit])


def gpu_count(resources: Mapping[str, Any]) -> int:
    """The GPUs asked for in `resources` (``gpu`` or ``nvidia.com/gpu``)."""
    value = resources.get("gpu") or resources.get(constants.GPU_LABEL) or 0
    return int(quantity(value))
