"""Image pins: the image each remote source's runtime named when this machine first read it.

A remote source (``github://kubeflow/trainer``, an https URL) can change a runtime's image at
any time; the Kubeflow SDK's default source moved ``torch-distributed`` from torch 2.7.1 to
2.13.0 under its users. With pins, a runtime keeps the image it was first read with, and a
change upstream is a warning naming both images rather than a silent new environment.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from prefect_kubeflow.files import write_json_atomic
from prefect_kubeflow.runtimes.parsing import RuntimeSpec

PINS_FILE = "image-pins.json"


class ImagePins:
    """The pinned images, kept in `folder` (the runtime cache's) as one JSON document."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / PINS_FILE

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            pins = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(pins, dict):  # not a file of ours: start again
            return {}
        return {
            key: pin
            for key, pin in pins.items()
            if isinstance(pin, dict) and isinstance(pin.get("image"), str)
        }

    def apply(self, source: str, specs: list[RuntimeSpec]) -> tuple[list[RuntimeSpec], list[str]]:
        """`specs` of `source` with each runtime's pinned image (pinning those seen for the
        first time), and a notice for each runtime whose source now names another image."""
        pins = self._read()
        notices, pinned_specs, changed = [], [], False
        for spec in specs:
            image = spec.runtime.trainer.image
            key = f"{source}#{spec.runtime.name}"
            pin = pins.get(key)
            if not image or (pin is not None and pin["image"] == image):
                pinned_specs.append(spec)
                continue
            if pin is None:
                pins[key] = {"image": image, "since": datetime.now(timezone.utc).isoformat()}
                changed = True
                pinned_specs.append(spec)
                continue
            notices.append(
                f"runtime {spec.runtime.name!r} of {source} now names image {image!r}; jobs keep "
                f"{pin['image']!r}, pinned when it was first read ({str(pin.get('since'))[:10]}). "
                "To move, "
                "set pin_images=False on the runtime source, or name the image (the backend "
                "config's image, or a Runtime)"
            )
            trainer = replace(spec.runtime.trainer, image=pin["image"])
            pinned_specs.append(replace(spec, runtime=replace(spec.runtime, trainer=trainer)))
        if changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, pins)
        return pinned_specs, notices
