"""Where runtimes come from: ``github://owner/repo[/path][@ref]``, ``https://…`` (a runtime file
or an index of them), ``file:///abs`` and ``/abs`` (a file or a folder of ``*.yaml``).

`parse_source` turns the string a user wrote into a `Source`; `Source.read` fetches and parses
it, returning the runtimes it holds and the errors of files that could not be read, so that one
bad file never hides the good ones beside it. GitHub sources live in `runtimes.github`, the
HTTP layer in `runtimes.http`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from prefect_kubeflow.errors import (
    InvalidRuntimeSourceError,
    RuntimeFetchError,
    RuntimeParseError,
    RuntimeSourceError,
)
from prefect_kubeflow.runtimes.http import HttpSettings, check_scheme, fetch, new_session
from prefect_kubeflow.runtimes.parsing import RuntimeSpec, load_yaml, parse_runtimes, runtimes_from

ACCEPTED_FORMS = (
    "github://owner/repo[/path][@ref], https://host/path, file:///abs/path or /abs/path"
)
YAML_SUFFIXES = (".yaml", ".yml")
# Bounds on what one source may make us read.
MAX_FILES = 500
MAX_FOLDER_DEPTH = 8


@dataclass
class SourceResult:
    """What one source yielded: its runtimes in file order, and the files that failed."""

    specs: list[RuntimeSpec] = field(default_factory=list)
    errors: list[RuntimeSourceError] = field(default_factory=list)


class Source(ABC):
    """One entry of a runtime source list."""

    def __init__(self, text: str) -> None:
        self.text = text

    remote: bool = True

    @abstractmethod
    def read(self, http: HttpSettings) -> SourceResult:
        """Fetch and parse the runtimes of this source.

        Raises:
            RuntimeSourceError: the source as a whole could not be read.
        """

    def cache_key(self, http: HttpSettings) -> str:
        """What identifies this source's results in the cache."""
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"


def parse_source(text: str, *, allow_http: bool = False) -> Source:
    """The `Source` that `text` names.

    Raises:
        InvalidRuntimeSourceError: `text` is not one of the accepted forms.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidRuntimeSourceError(str(text), f"empty; use one of {ACCEPTED_FORMS}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise InvalidRuntimeSourceError(text, f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower() if "://" in text else ""
    if scheme == "github":
        # Imported here: runtimes.github builds on `Source`, so it imports this module.
        from prefect_kubeflow.runtimes.github import GitHubSource

        return GitHubSource(text)
    if scheme == "https" or (scheme == "http" and allow_http):
        return UrlSource(text)
    if scheme == "http":
        raise InvalidRuntimeSourceError(
            text, "http:// is refused (not encrypted); use https:// or set allow_http"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidRuntimeSourceError(
                text, f"file:// URLs name a local path, not host {parts.netloc!r}"
            )
        path = unquote(parts.path)
        if not os.path.isabs(path):
            raise InvalidRuntimeSourceError(text, "a file:// URL needs an absolute path")
        return PathSource(text, Path(path))
    if scheme:
        raise InvalidRuntimeSourceError(text, f"unknown scheme {scheme!r}; use {ACCEPTED_FORMS}")
    if not os.path.isabs(text):
        raise InvalidRuntimeSourceError(
            text, "a relative path; give an absolute path (it would depend on the working folder)"
        )
    return PathSource(text, Path(text))


class PathSource(Source):
    """A runtime file, or a folder whose ``*.yaml``/``*.yml`` files (recursively) are read."""

    remote = False

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.path = path

    def files(self) -> list[Path]:
        """The YAML files this source reads, in order (a folder: at most `MAX_FILES`, at most
        `MAX_FOLDER_DEPTH` levels down).

        Raises:
            RuntimeFetchError: the path does not exist or cannot be read, or holds too many files.
        """
        try:
            if self.path.is_file():
                return [self.path]
            if not self.path.is_dir():
                raise RuntimeFetchError(self.text, f"no such file or folder: {self.path}")
        except OSError as exc:
            raise RuntimeFetchError(self.text, f"cannot read {self.path}: {exc.strerror}") from exc
        found: list[Path] = []
        base_depth = len(self.path.parts)
        for folder, subfolders, names in os.walk(self.path, onerror=self._walk_error):
            if len(Path(folder).parts) - base_depth >= MAX_FOLDER_DEPTH:
                subfolders.clear()
            subfolders.sort()
            found.extend(Path(folder) / n for n in sorted(names) if n.endswith(YAML_SUFFIXES))
            if len(found) > MAX_FILES:
                raise RuntimeFetchError(self.text, f"more than {MAX_FILES} YAML files")
        return sorted(found)

    def _walk_error(self, exc: OSError) -> None:
        raise RuntimeFetchError(self.text, f"cannot read {exc.filename}: {exc.strerror}")

    def cache_key(self, http: HttpSettings) -> str:
        """The files with their sizes and modification times: a change to any misses."""
        stats = []
        for path in self.files():
            stat = path.stat()
            stats.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
        return "\n".join([self.text, *stats])

    def read(self, http: HttpSettings) -> SourceResult:
        """Parse the file, or every YAML file of the folder."""
        in_folder = not self.path.is_file()
        result = SourceResult()
        for path in self.files():
            try:
                size = path.stat().st_size
                if size > http.max_bytes:
                    result.errors.append(
                        RuntimeParseError(
                            str(path), f"{size} bytes is over the limit of {http.max_bytes} bytes"
                        )
                    )
                    continue
                content = path.read_bytes()
            except OSError as exc:
                result.errors.append(RuntimeFetchError(str(path), f"cannot read: {exc.strerror}"))
                continue
            parse_into(
                result, content, str(path), other_kinds_allowed=in_folder, max_bytes=http.max_bytes
            )
        return result


class UrlSource(Source):
    """A runtime file over HTTPS, or an index: a YAML list of runtime-file URLs (relative ones
    are resolved against the index's URL)."""

    MAX_INDEX_ENTRIES = 200

    def read(self, http: HttpSettings) -> SourceResult:
        """Fetch the URL; when it is an index, fetch every file it lists."""
        with new_session() as session:
            content = fetch(session, self.text, self.text, http)
            documents = load_yaml(content, self.text, max_bytes=http.max_bytes)
            urls = _index_entries(documents)
            if urls is None:
                return SourceResult(specs=runtimes_from(documents, self.text))
            if len(urls) > self.MAX_INDEX_ENTRIES:
                raise RuntimeParseError(
                    self.text, f"index lists {len(urls)} files; at most {self.MAX_INDEX_ENTRIES}"
                )
            result = SourceResult()
            for entry in urls:
                url = entry
                try:
                    url = urljoin(self.text, entry)
                    check_scheme(url, http)
                    file_content = fetch(session, url, url, http)
                except RuntimeSourceError as exc:
                    result.errors.append(exc)
                    continue
                except ValueError as exc:  # an entry urljoin cannot read as a URL
                    result.errors.append(InvalidRuntimeSourceError(url, f"not a valid URL ({exc})"))
                    continue
                parse_into(result, file_content, url, max_bytes=http.max_bytes)
            return result


def parse_into(result: SourceResult, content: bytes, origin: str, **options: Any) -> None:
    """Add the runtimes of one file to `result`, or its error: files fail one at a time.

    `options` are those of `parse_runtimes`.
    """
    try:
        result.specs.extend(parse_runtimes(content, origin, **options))
    except RuntimeSourceError as exc:
        result.errors.append(exc)


def _index_entries(documents: list[Any]) -> list[str] | None:
    """The URLs of an index (one YAML document: a list of strings), or None."""
    present = [d for d in documents if d is not None]
    if (
        len(present) == 1
        and isinstance(present[0], list)
        and present[0]
        and all(isinstance(entry, str) for entry in present[0])
    ):
        return present[0]
    return None
