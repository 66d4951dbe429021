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
from pathlib import Path
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
MAX_REDIRECTS = 5
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
    github_token: str | None = field(default=None, repr=False)


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
        raise InvalidRuntimeSourceError(text, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower() if "://" in text else ""
    if scheme == "github":
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
            raise RuntimeFetchError(self.text, f"cannot read {self.path}: {exc.strerror}") from None
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
        with _session() as session:
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
                url = entry
                try:
                    url = urljoin(self.text, entry)
                    _check_scheme(url, http)
                    file_content = _get(session, url, url, http)
                except RuntimeSourceError as exc:
                    result.errors.append(exc)
                    continue
                except ValueError as exc:  # an entry urljoin cannot read as a URL
                    result.errors.append(InvalidRuntimeSourceError(url, f"not a valid URL ({exc})"))
                    continue
                _parse_into(result, file_content, url, max_bytes=http.max_bytes)
            return result


class GitHubSource(Source):
    """``github://owner/repo[/path][@ref]``, read through the GitHub contents API (the base URL
    is configurable, for GitHub Enterprise and for tests)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        rest = text.split("://", 1)[1]
        rest, at, ref = rest.rpartition("@") if "@" in rest else (rest, "", "")
        owner, _, rest = rest.partition("/")
        repo, _, path = rest.partition("/")
        path = path.rstrip("/")
        names_ok = all(_GITHUB_NAME.match(n) and n not in (".", "..") for n in (owner, repo))
        if not names_ok:
            raise InvalidRuntimeSourceError(
                text, "expected github://owner/repo[/path][@ref] with a valid owner and repository"
            )
        if (path and any(p in ("", ".", "..") for p in path.split("/"))) or (at and not ref):
            raise InvalidRuntimeSourceError(text, "the path or @ref is malformed")
        self.owner, self.repo, self.path, self.ref = owner, repo, path, ref or None

    def cache_key(self, http: HttpSettings) -> str:
        """The source on this GitHub (public or Enterprise)."""
        return f"{http.github_api_url} {self.text}"

    def read(self, http: HttpSettings) -> SourceResult:
        """List the path (recursively for a folder) and fetch each YAML file."""
        # Before any request: the token must never travel unencrypted.
        try:
            _check_scheme(http.github_api_url, http)
        except InvalidRuntimeSourceError as exc:
            raise InvalidRuntimeSourceError(
                self.text, f"github_api_url {http.github_api_url!r}: {exc.reason}"
            ) from None
        with _session() as session:
            session.headers["Accept"] = "application/vnd.github+json"
            session.headers["X-GitHub-Api-Version"] = "2022-11-28"
            if http.github_token:
                session.headers["Authorization"] = f"Bearer {http.github_token}"
            budget = _Budget(self.text)
            path = self.path
            if not path:
                try:
                    listing = self._contents(session, http, GITHUB_DEFAULT_PATH, budget)
                    path = GITHUB_DEFAULT_PATH
                except RuntimeFetchError as exc:
                    if exc.status != 404:
                        raise
                    listing = self._contents(session, http, "", budget)
            else:
                listing = self._contents(session, http, path, budget)
            if isinstance(listing, dict):  # the path is a file
                content = self._file_content(session, http, listing)
                return SourceResult(
                    specs=parse_runtimes(content, self._origin(path), max_bytes=http.max_bytes)
                )
            result = SourceResult()
            for entry in self._walk(session, http, listing, 1, budget):
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

    def _contents(
        self, session: requests.Session, http: HttpSettings, path: str, budget: _Budget
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """A folder's entries, or a file's entry; entries without a str path/type dropped."""
        budget.request()
        url = self._url(http, path)
        params = {"ref": self.ref} if self.ref else None
        content = _get(session, url, self.text, http, params=params, auth_hint=_GITHUB_AUTH_HINT)
        try:
            listing = json.loads(content)
        except ValueError:
            raise RuntimeFetchError(self.text, f"{url} did not answer JSON") from None
        if isinstance(listing, dict) and _is_entry(listing):
            return listing
        if isinstance(listing, list):
            return [entry for entry in listing if _is_entry(entry)]
        raise RuntimeFetchError(self.text, f"{url} answered no contents listing")

    def _walk(
        self,
        session: requests.Session,
        http: HttpSettings,
        listing: list[dict[str, Any]],
        depth: int,
        budget: _Budget,
    ) -> Iterator[dict[str, Any]]:
        """The YAML file entries of a folder listing, descending into subfolders."""
        for entry in sorted(listing, key=lambda e: e["path"]):
            if entry["type"] == "file" and entry["path"].endswith(YAML_SUFFIXES):
                budget.file()
                yield entry
            elif entry["type"] == "dir" and depth < MAX_FOLDER_DEPTH:
                sub = self._contents(session, http, entry["path"], budget)
                if isinstance(sub, list):
                    yield from self._walk(session, http, sub, depth + 1, budget)

    def _file_content(
        self, session: requests.Session, http: HttpSettings, entry: dict[str, Any]
    ) -> bytes:
        origin = self._origin(entry["path"])
        size = entry.get("size")
        if isinstance(size, int) and size > http.max_bytes:
            raise RuntimeParseError(
                origin, f"{size} bytes is over the limit of {http.max_bytes} bytes"
            )
        if entry.get("encoding") == "base64" and isinstance(entry.get("content"), str):
            try:
                return base64.b64decode(entry["content"], validate=False)
            except ValueError as exc:  # binascii.Error
                raise RuntimeFetchError(origin, f"undecodable base64 content ({exc})") from None
        params = {"ref": self.ref} if self.ref else None
        return _get(
            session,
            self._url(http, entry["path"]),
            origin,
            http,
            params=params,
            headers={"Accept": "application/vnd.github.raw+json"},
            auth_hint=_GITHUB_AUTH_HINT,
        )


class _Budget:
    """What one GitHub source may cost: `MAX_FILES` files, `MAX_LISTINGS` listing requests."""

    MAX_LISTINGS = 100

    def __init__(self, source: str) -> None:
        self.source, self.files, self.listings = source, 0, 0

    def file(self) -> None:
        self.files += 1
        if self.files > MAX_FILES:
            raise RuntimeFetchError(self.source, f"more than {MAX_FILES} YAML files")

    def request(self) -> None:
        self.listings += 1
        if self.listings > self.MAX_LISTINGS:
            raise RuntimeFetchError(self.source, f"more than {self.MAX_LISTINGS} folders")


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and entry.get("type") in ("file", "dir", "symlink", "submodule")
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
    if scheme == "https" or (scheme == "http" and http.allow_http):
        return
    allowed = "https:// and http://" if http.allow_http else "https:// (allow_http is off)"
    raise InvalidRuntimeSourceError(url, f"only {allowed} URLs are fetched")


def _session() -> requests.Session:
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
    """The body of `url`, at most `http.max_bytes` of it. Redirects are followed here, each
    target checked before it is requested; the token is dropped when the host changes.

    Raises:
        RuntimeFetchError: unreachable, certificate refused, redirected off HTTPS, HTTP error.
        RuntimeParseError: the body is over the size limit.
    """
    request_headers = dict(headers or {})
    for _ in range(MAX_REDIRECTS + 1):
        response = _request(session, url, source, http, params, request_headers)
        with response:
            if not response.is_redirect:
                return _body(response, url, source, http, auth_hint)
            target = urljoin(url, response.headers.get("Location", ""))
        try:
            _check_scheme(target, http)
        except InvalidRuntimeSourceError:
            raise RuntimeFetchError(source, f"redirected off HTTPS to {target}") from None
        if urlsplit(target).netloc != urlsplit(url).netloc:
            request_headers["Authorization"] = None  # type: ignore[assignment]  # unsets it
        url, params = target, None
    raise RuntimeFetchError(source, f"more than {MAX_REDIRECTS} redirects")


def _request(
    session: requests.Session,
    url: str,
    source: str,
    http: HttpSettings,
    params: dict[str, str] | None,
    headers: dict[str, str],
) -> requests.Response:
    host = urlsplit(url).netloc
    try:
        # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE.
        return session.get(
            url,
            params=params,
            headers=headers,
            timeout=http.timeout_seconds,
            stream=True,
            verify=http.ca_bundle or True,
            allow_redirects=False,
        )
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
    except OSError as exc:  # e.g. a ca_bundle file that does not exist
        raise RuntimeFetchError(source, f"request to {url} failed: {exc}") from None


def _body(
    response: requests.Response, url: str, source: str, http: HttpSettings, auth_hint: str | None
) -> bytes:
    if response.status_code >= 400:
        message = f"HTTP {response.status_code} {response.reason} from {response.url}"
        if auth_hint and response.status_code in (401, 403, 404, 429):
            message += f" ({auth_hint})"
        raise RuntimeFetchError(source, message, status=response.status_code)
    body = bytearray()
    try:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > http.max_bytes:
                raise RuntimeParseError(
                    source, f"{url} is over the limit of {http.max_bytes} bytes"
                )
    except requests.exceptions.RequestException as exc:
        raise RuntimeFetchError(source, f"reading {url} failed: {_root_cause(exc)}") from None
    return bytes(body)


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
