"""The runtime catalog: every configured source in order, then the built-in runtimes.

The first definition of a name wins. Remote sources are served from the cache while it is
fresh; when a fetch fails, a stale cached copy serves (with a warning), and a source that
cannot be read at all is reported and skipped, never hiding the sources after it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from platformdirs import user_cache_dir

from prefect_kubeflow import constants
from prefect_kubeflow.errors import (
    PrefectKubeflowError,
    RuntimeFetchError,
    RuntimeNotFoundError,
    RuntimeSourceError,
    RuntimeSourceWarning,
)
from prefect_kubeflow.runtimes.cache import CacheEntry, RuntimeCache
from prefect_kubeflow.runtimes.http import HttpSettings
from prefect_kubeflow.runtimes.parsing import RuntimeSpec, parse_runtimes
from prefect_kubeflow.runtimes.pins import ImagePins
from prefect_kubeflow.runtimes.sources import Source, parse_source
from prefect_kubeflow.types import Runtime

DEFAULT_CACHE_TTL_SECONDS = 24 * 3600
BUILTIN_ORIGIN_PREFIX = "builtin:"


@dataclass
class CatalogListing:
    """All runtimes by name (first definition wins, in source order) and what went wrong."""

    specs: dict[str, RuntimeSpec] = field(default_factory=dict)
    errors: list[RuntimeSourceError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # pinned images a source has changed


def builtin_runtimes() -> list[RuntimeSpec]:
    """The runtimes shipped inside the package."""
    folder = resources.files(__package__ or "prefect_kubeflow.runtimes").joinpath("builtin")
    specs: list[RuntimeSpec] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            specs.extend(parse_runtimes(entry.read_bytes(), BUILTIN_ORIGIN_PREFIX + entry.name))
    return specs


class RuntimeCatalog:
    """Runtimes from `sources` (strings as in `TrainingRuntimeSource.sources`), then built-ins.

    Args:
        sources: github://, https://, file:// or absolute-path sources, highest priority first.
        cache_dir: where remote results are cached; default: the user's cache folder.
        cache_ttl_seconds: how long a cached remote result is used without fetching again.
        http: how remote sources are fetched (timeouts, CA bundle, GitHub URL and token).
        default_images: framework → image for runtimes that name no image; merged onto
            `constants.DEFAULT_FRAMEWORK_IMAGES`.
        include_builtin: whether the package's built-in runtimes come last.
        pin_images: whether a remote source's runtime keeps the image it was first read with
            (`ImagePins`; a change upstream is then a warning, not a new image).
        first: runtimes that come before every source (a cluster's own, read on each load);
            when it fails, it is reported as a failed source.
        clock: the time source of cache freshness (tests drive it).
    """

    def __init__(
        self,
        sources: Sequence[str] = (),
        *,
        cache_dir: Path | None = None,
        cache_ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
        http: HttpSettings | None = None,
        default_images: Mapping[str, str] | None = None,
        include_builtin: bool = True,
        pin_images: bool = True,
        clock: Callable[[], float] = time.time,
        first: Callable[[], list[RuntimeSpec]] | None = None,
    ) -> None:
        self.sources = list(sources)
        self.http = http or HttpSettings()
        self.cache = RuntimeCache(
            cache_dir or Path(user_cache_dir(constants.APP_NAME)) / "runtimes",
            cache_ttl_seconds,
            clock,
        )
        self.default_images = {**constants.DEFAULT_FRAMEWORK_IMAGES, **(default_images or {})}
        self.include_builtin = include_builtin
        self.pins = ImagePins(self.cache.folder) if pin_images else None
        self.first = first

    def load(self, refresh: bool = False) -> CatalogListing:
        """Every runtime of every source; `refresh` fetches remote sources even when cached."""
        listing = CatalogListing()
        if self.first is not None:
            try:
                for spec in self.first():
                    listing.specs.setdefault(spec.runtime.name, spec)
            except PrefectKubeflowError as exc:
                listing.errors.append(RuntimeSourceError("the backend's runtimes", str(exc)))
        for text in self.sources:
            try:
                source = parse_source(text, allow_http=self.http.allow_http)
                specs, errors = self._read(source, refresh)
            except RuntimeSourceError as exc:
                specs, errors = [], [exc]
            except Exception as exc:  # a bad source must never hide the ones after it
                specs, errors = [], [RuntimeSourceError(text, f"{type(exc).__name__}: {exc}")]
            listing.errors.extend(errors)
            if self.pins is not None and specs and source.remote:
                try:
                    specs, notices = self.pins.apply(source.text, specs)
                except OSError as exc:
                    notices = [f"image pins cannot be kept in {self.pins.path} ({exc})"]
                listing.notices.extend(notices)
            for spec in specs:
                listing.specs.setdefault(spec.runtime.name, self._with_default_image(spec))
        if self.include_builtin:
            for spec in builtin_runtimes():
                listing.specs.setdefault(spec.runtime.name, self._with_default_image(spec))
        return listing

    def list_runtimes(self, refresh: bool = False) -> list[RuntimeSpec]:
        """Every runtime, source order then file order; failed sources are warned about."""
        listing = self.load(refresh)
        _warn(listing)
        return list(listing.specs.values())

    def get(self, name: str, refresh: bool = False) -> RuntimeSpec:
        """The runtime called `name`.

        Raises:
            RuntimeNotFoundError: no source defines it; the message lists the known runtimes
                and the sources that failed (the runtime may be in one of them).
        """
        listing = self.load(refresh)
        _warn(listing)
        if name not in listing.specs:
            failed = sorted({err.source for err in listing.errors})
            hint = f"; sources that failed to load: {', '.join(failed)}" if failed else ""
            raise RuntimeNotFoundError(name, listing.specs, hint=hint)
        return listing.specs[name]

    def runtime_default_image(self, runtime: Runtime) -> Runtime:
        """`runtime`, with its framework's default image if it names none."""
        if runtime.trainer.image or runtime.trainer.framework not in self.default_images:
            return runtime
        trainer = replace(runtime.trainer, image=self.default_images[runtime.trainer.framework])
        trainer.set_command(runtime.trainer.command)
        return replace(runtime, trainer=trainer)

    def _with_default_image(self, spec: RuntimeSpec) -> RuntimeSpec:
        return replace(spec, runtime=self.runtime_default_image(spec.runtime))

    def _read(
        self, source: Source, refresh: bool
    ) -> tuple[list[RuntimeSpec], list[RuntimeSourceError]]:
        key = source.cache_key(self.http)
        cached = self.cache.get(key)
        if (
            cached is not None
            and not refresh
            and (not source.remote or self.cache.is_fresh(cached))
        ):
            return cached.specs, cached.errors
        try:
            result = source.read(self.http)
        except RuntimeSourceError as exc:
            if cached is None or not source.remote:
                raise
            return cached.specs, [self._stale(source, cached, exc), *cached.errors]
        fetch_failed = next((e for e in result.errors if isinstance(e, RuntimeFetchError)), None)
        if fetch_failed is not None and source.remote:
            # A file that could not be fetched now (503, rate limit) may come back: never
            # replace a good copy with a partial one, nor keep a partial one for a whole TTL.
            if cached is not None:
                return cached.specs, [self._stale(source, cached, fetch_failed), *cached.errors]
            return result.specs, result.errors
        try:
            self.cache.put(key, result.specs, result.errors)
        except OSError as exc:
            warnings.warn(
                f"runtime cache {self.cache.folder} cannot be written ({exc}); "
                "runtimes are fetched again on every call",
                RuntimeSourceWarning,
                stacklevel=4,
            )
        return result.specs, result.errors

    def _stale(
        self, source: Source, cached: CacheEntry, exc: RuntimeSourceError
    ) -> RuntimeSourceError:
        age_hours = (self.cache.clock() - cached.fetched_at) / 3600
        return RuntimeSourceError(
            source.text,
            f"serving the copy cached {age_hours:.1f} h ago; fetching failed: {exc}",
        )


def _warn(listing: CatalogListing) -> None:
    for message in [*map(str, listing.errors), *listing.notices]:
        warnings.warn(message, RuntimeSourceWarning, stacklevel=3)
