"""Where runtimes come from: ``github://owner/repo[/path][@ref]``, ``https://…`` (a runtime file
or an index of them), ``file:///abs`` and ``/abs`` (a file or a folder of ``*.yaml``).

`parse_source` turns the string a user wrote into a `Source`; `Source.read` fetches and parses
it, returning the runtimes it holds and the errors of files that could not be read, so that one
bad file never hides the good ones beside it.
"""

from __future__ import annotations

import base64
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests

from prefect_kubeflow import __version__
from prefect_kubeflow.errors import (
    InvalidRuntimeSourceError,
    RuntimeFetchError,
    RuntimeParseError,
    RuntimeSourceError,
)
from prefect_kubeflow.runtimes.parsing import (
    MAX_DOCUMENT_BYTES,
    RuntimeSpec,
    load_yaml,
    parse_runtimes,
    runtimes_from,
)

ACCEPTED_FORMS = (
    "github://owner/repo[/path][@ref], https://host/path, file:///abs/path or /abs/path"
)
YAML_SUFFIXES = (".yaml", ".yml")
# Bounds on what one source may make us read.
MAX_FILES = 500
MAX_FOLDER_DEPTH = 8
# Where runtimes live in kubeflow/trainer and repositories laid out like it; github:// without a
# path reads this folder if the repository has it, else the repository's root.
GITHUB_DEFAULT_PATH = "manifests/base/runtimes"
_GITHUB_AUTH_HINT = "a private repository, or the API rate limit? set github_token"
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass
class SourceResult:
    """What one source yielded: its runtimes in file order, and the files that failed."""

    specs: list[RuntimeSpec] = field(default_factory=list)
    errors: list[RuntimeSourceError] = field(default_factory=list)


@dataclass(frozen=True)
class HttpSettings:
    """How remote sources are fetched."""

    timeout_seconds: float = 10.0
    ca_bundle: str | None = None
    allow_http: bool = False
    max_bytes: int = MAX_DOCUMENT_BYTES
    github_api_url: str = "https://api.github.com"
    github_token: str | None = None


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
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme == "github":
        return GitHubSource(text)
    if scheme == "https" or (scheme == "http" and allow_http):
        return UrlSource(text)
    if scheme == "http":
        raise InvalidRuntimeSourceError(
            text, "http:// is refused (not encrypted); use https:// or set allow_http"
        )
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise InvalidRuntimeSourceError(
                text, f"file:// URLs name a local path, not host {parts.netloc!r}"
            )
        return PathSource(text, Path(unquote(parts.path)))
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
        """The YAML files this source reads, in order.

        Raises:
            RuntimeFetchError: the path does not exist or cannot be read.
        """
        try:
            if self.path.is_file():
                return [self.path]
            if not self.path.is_dir():
                raise RuntimeFetchError(self.text, f"no such file or folder: {self.path}")
            found = sorted(
                path
                for path in self.path.rglob("*")
                if path.suffix in YAML_SUFFIXES
                and path.is_file()
                and len(path.relative_to(self.path).parts) <= MAX_FOLDER_DEPTH
            )
        except OSError as exc:
            raise RuntimeFetchError(self.text, f"cannot read {self.path}: {exc.strerror}") from None
        if len(found) > MAX_FILES:
            raise RuntimeFetchError(self.text, f"{len(found)} YAML files; at most {MAX_FILES}")
        return found

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
                content = path.read_bytes()
            except OSError as exc:
                result.errors.append(RuntimeFetchError(str(path), f"cannot read: {exc.strerror}"))
                continue
            _parse_into(
                result, content, str(path), other_kinds_allowed=in_folder, max_bytes=http.max_bytes
            )
        return result


class UrlSource(Source):
    """A runtime file over HTTPS, or an index: a YAML list of runtime-file URLs (relative ones
    are resolved against the index's URL)."""

    MAX_INDEX_ENTRIES = 200

    def read(self, http: HttpSettings) -> SourceResult:
        """Fetch the URL; when it is an index, fetch every file it lists."""
        with _session(http) as session:
            content = _get(session, self.text, self.text, http)
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
                url = urljoin(self.text, entry)
                try:
                    _check_scheme(url, http)
                    file_content = _get(session, url, url, http)
                except RuntimeSourceError as exc:
                    result.errors.append(exc)
                    continue
                _parse_into(result, file_content, url, max_bytes=http.max_bytes)
            return result


class GitHubSource(Source):
    """``github://owner/repo[/path][@ref]``, read through the GitHub contents API (the base URL
    is configurable, for GitHub Enterprise and for tests)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        rest = text.split("://", 1)[1]
        rest, _, ref = rest.partition("@") if "@" in rest else (rest, "", "")
        owner, _, rest = rest.partition("/")
        repo, _, path = rest.partition("/")
        path = path.strip("/")
        if not (_GITHUB_NAME.match(owner) and _GITHUB_NAME.match(repo)):
            raise InvalidRuntimeSourceError(
                text, "expected github://owner/repo[/path][@ref] with a valid owner and repository"
            )
        if any(part in ("", ".", "..") for part in PurePosixPath(path).parts if path) or (
            "@" in text and not ref
        ):
            raise InvalidRuntimeSourceError(text, "the path or @ref is malformed")
        self.owner, self.repo, self.path, self.ref = owner, repo, path, ref or None

    def cache_key(self, http: HttpSettings) -> str:
        """The source on this GitHub (public or Enterprise)."""
        return f"{http.github_api_url} {self.text}"

    def read(self, http: HttpSettings) -> SourceResult:
        """List the path (recursively for a folder) and fetch each YAML file."""
        with _session(http) as session:
            session.headers["Accept"] = "application/vnd.github+json"
            session.headers["X-GitHub-Api-Version"] = "2022-11-28"
            if http.github_token:
                session.headers["Authorization"] = f"Bearer {http.github_token}"
            path = self.path
            if not path:
                try:
                    listing = self._contents(session, http, GITHUB_DEFAULT_PATH)
                    path = GITHUB_DEFAULT_PATH
                except RuntimeFetchError as exc:
                    if exc.status != 404:
                        raise
                    listing = self._contents(session, http, "")
            else:
                listing = self._contents(session, http, path)
            if isinstance(listing, dict):  # the path is a file
                content = self._file_content(session, http, listing)
                return SourceResult(
                    specs=parse_runtimes(content, self._origin(path), max_bytes=http.max_bytes)
                )
            result = SourceResult()
            for entry in self._walk(session, http, listing, depth=1):
                origin = self._origin(entry["path"])
                try:
                    content = self._file_content(session, http, entry)
                except RuntimeSourceError as exc:
                    result.errors.append(exc)
                    continue
                _parse_into(
                    result, content, origin, other_kinds_allowed=True, max_bytes=http.max_bytes
                )
            return result

    def _origin(self, path: str) -> str:
        return f"github://{self.owner}/{self.repo}/{path}" + (f"@{self.ref}" if self.ref else "")

    def _url(self, http: HttpSettings, path: str) -> str:
        base = http.github_api_url.rstrip("/")
        return f"{base}/repos/{self.owner}/{self.repo}/contents/{quote(path)}"

    def _contents(self, session: requests.Session, http: HttpSettings, path: str) -> Any:
        url = self._url(http, path)
        params = {"ref": self.ref} if self.ref else None
        content = _get(session, url, self.text, http, params=params, auth_hint=_GITHUB_AUTH_HINT)
        try:
            listing = json.loads(content)
        except ValueError:
            raise RuntimeFetchError(self.text, f"{url} did not return JSON") from None
        if not isinstance(listing, list | dict):
            raise RuntimeFetchError(self.text, f"{url} returned an unexpected {type(listing)}")
        return listing

    def _walk(
        self, session: requests.Session, http: HttpSettings, listing: list[Any], depth: int
    ) -> Iterator[dict[str, Any]]:
        """The YAML file entries of a folder listing, descending into subfolders."""
        count = 0
        for entry in sorted(listing, key=lambda e: str(e.get("path", ""))):
            kind, path = entry.get("type"), str(entry.get("path", ""))
            if kind == "file" and path.endswith(YAML_SUFFIXES):
                count += 1
                if count > MAX_FILES:
                    raise RuntimeFetchError(self.text, f"more than {MAX_FILES} YAML files")
                yield entry
            elif kind == "dir" and depth < MAX_FOLDER_DEPTH:
                yield from self._walk(session, http, self._contents(session, http, path), depth + 1)

    def _file_content(
        self, session: requests.Session, http: HttpSettings, entry: dict[str, Any]
    ) -> bytes:
        origin = self._origin(str(entry.get("path", "")))
        size = entry.get("size")
        if isinstance(size, int) and size > http.max_bytes:
            raise RuntimeParseError(
                origin, f"{size} bytes is over the limit of {http.max_bytes} bytes"
            )
        if entry.get("encoding") == "base64" and isinstance(entry.get("content"), str):
            return base64.b64decode(entry["content"])
        params = {"ref": self.ref} if self.ref else None
        return _get(
            session,
            self._url(http, str(entry["path"])),
            origin,
            http,
            params=params,
            headers={"Accept": "application/vnd.github.raw+json"},
            auth_hint=_GITHUB_AUTH_HINT,
        )


def _parse_into(result: SourceResult, content: bytes, origin: str, **options: Any) -> None:
    """Add the runtimes of one file to `result`, or its error: files fail one at a time."""
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


def _check_scheme(url: str, http: HttpSettings) -> None:
    scheme = urlsplit(url).scheme
    if scheme != "https" and not (scheme == "http" and http.allow_http):
        raise InvalidRuntimeSourceError(url, "only https:// URLs are fetched (allow_http is off)")


def _session(http: HttpSettings) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = f"prefect-kubeflow/{__version__}"
    return session


def _get(
    session: requests.Session,
    url: str,
    source: str,
    http: HttpSettings,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    auth_hint: str | None = None,
) -> bytes:
    """The body of `url`, at most `http.max_bytes` of it.

    Raises:
        RuntimeFetchError: unreachable, certificate refused, redirected off HTTPS, HTTP error.
        RuntimeParseError: the body is over the size limit.
    """
    host = urlsplit(url).netloc
    try:
        # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE.
        with session.get(
            url,
            params=params,
            headers=headers,
            timeout=http.timeout_seconds,
            stream=True,
            verify=http.ca_bundle or True,
        ) as response:
            for hop in [*response.history, response]:
                _check_scheme(hop.url, http)
            if response.status_code >= 400:
                message = f"HTTP {response.status_code} {response.reason} from {response.url}"
                if auth_hint and response.status_code in (401, 403, 429):
                    message += f" ({auth_hint})"
                raise RuntimeFetchError(source, message, status=response.status_code)
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > http.max_bytes:
                    raise RuntimeParseError(
                        source, f"{url} is over the limit of {http.max_bytes} bytes"
                    )
            return bytes(body)
    except InvalidRuntimeSourceError as exc:
        raise RuntimeFetchError(source, f"redirected off HTTPS to {exc.source}") from None
    except requests.exceptions.SSLError as exc:
        raise RuntimeFetchError(
            source,
            f"TLS certificate of {host} not trusted ({_root_cause(exc)}); "
            "give its CA certificate file as ca_bundle",
        ) from None
    except requests.exceptions.Timeout:
        raise RuntimeFetchError(
            source, f"{host} did not answer within {http.timeout_seconds} s"
        ) from None
    except requests.exceptions.ConnectionError as exc:
        raise RuntimeFetchError(source, f"cannot connect to {host} ({_root_cause(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise RuntimeFetchError(source, f"request to {url} failed: {_root_cause(exc)}") from None


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error (refused, reset, certificate…)."""
    for _ in range(8):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if inner is None:
            break
        exc = inner
    return str(exc) or type(exc).__name__
