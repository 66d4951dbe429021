"""``github://owner/repo[/path][@ref]`` sources, read through the GitHub contents API.

The API's base URL is configurable (GitHub Enterprise, tests). A folder is listed recursively
within the bounds of `MAX_FILES` files and `_Budget.MAX_LISTINGS` listing requests.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from prefect_kubeflow.errors import (
    InvalidRuntimeSourceError,
    RuntimeFetchError,
    RuntimeParseError,
    RuntimeSourceError,
)
from prefect_kubeflow.runtimes.http import HttpSettings, check_scheme, fetch, new_session
from prefect_kubeflow.runtimes.parsing import parse_runtimes
from prefect_kubeflow.runtimes.sources import (
    MAX_FILES,
    MAX_FOLDER_DEPTH,
    YAML_SUFFIXES,
    Source,
    SourceResult,
    parse_into,
)

# Where runtimes live in kubeflow/trainer and repositories laid out like it; github:// without a
# path reads this folder if the repository has it, else the repository's root.
GITHUB_DEFAULT_PATH = "manifests/base/runtimes"
_GITHUB_AUTH_HINT = "a private repository, or the API rate limit? set github_token"
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

# One entry of a contents-API answer: a JSON object with at least a str "path" and a "type".
Entry = dict[str, Any]


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
            check_scheme(http.github_api_url, http)
        except InvalidRuntimeSourceError as exc:
            raise InvalidRuntimeSourceError(
                self.text, f"github_api_url {http.github_api_url!r}: {exc.reason}"
            ) from exc
        with new_session() as session:
            session.headers["Accept"] = "application/vnd.github+json"
            session.headers["X-GitHub-Api-Version"] = "2022-11-28"
            if http.github_token:
                session.headers["Authorization"] = f"Bearer {http.github_token}"
            budget = _Budget(self.text)
            path, listing = self._top_listing(session, http, budget)
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
                parse_into(
                    result, content, origin, other_kinds_allowed=True, max_bytes=http.max_bytes
                )
            return result

    def _top_listing(
        self, session: requests.Session, http: HttpSettings, budget: _Budget
    ) -> tuple[str, list[Entry] | Entry]:
        """The path read and its contents: without a path, `GITHUB_DEFAULT_PATH` if the
        repository has it, else the repository's root."""
        if self.path:
            return self.path, self._contents(session, http, self.path, budget)
        try:
            return GITHUB_DEFAULT_PATH, self._contents(session, http, GITHUB_DEFAULT_PATH, budget)
        except RuntimeFetchError as exc:
            if exc.status != 404:
                raise
        return "", self._contents(session, http, "", budget)

    def _origin(self, path: str) -> str:
        return f"github://{self.owner}/{self.repo}/{path}" + (f"@{self.ref}" if self.ref else "")

    def _url(self, http: HttpSettings, path: str) -> str:
        base = http.github_api_url.rstrip("/")
        return f"{base}/repos/{self.owner}/{self.repo}/contents/{quote(path)}"

    def _contents(
        self, session: requests.Session, http: HttpSettings, path: str, budget: _Budget
    ) -> list[Entry] | Entry:
        """A folder's entries, or a file's entry; entries without a str path/type dropped."""
        budget.request()
        url = self._url(http, path)
        params = {"ref": self.ref} if self.ref else None
        content = fetch(session, url, self.text, http, params=params, auth_hint=_GITHUB_AUTH_HINT)
        try:
            listing = json.loads(content)
        except ValueError as exc:
            raise RuntimeFetchError(self.text, f"{url} did not answer JSON") from exc
        if isinstance(listing, dict) and _is_entry(listing):
            return listing
        if isinstance(listing, list):
            return [entry for entry in listing if _is_entry(entry)]
        raise RuntimeFetchError(self.text, f"{url} answered no contents listing")

    def _walk(
        self,
        session: requests.Session,
        http: HttpSettings,
        listing: list[Entry],
        depth: int,
        budget: _Budget,
    ) -> Iterator[Entry]:
        """The YAML file entries of a folder listing, descending into subfolders."""
        for entry in sorted(listing, key=lambda e: e["path"]):
            if entry["type"] == "file" and entry["path"].endswith(YAML_SUFFIXES):
                budget.file()
                yield entry
            elif entry["type"] == "dir" and depth < MAX_FOLDER_DEPTH:
                sub = self._contents(session, http, entry["path"], budget)
                if isinstance(sub, list):
                    yield from self._walk(session, http, sub, depth + 1, budget)

    def _file_content(self, session: requests.Session, http: HttpSettings, entry: Entry) -> bytes:
        """A file's bytes: inline in its entry when the API gave them, else fetched raw."""
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
                raise RuntimeFetchError(origin, f"undecodable base64 content ({exc})") from exc
        params = {"ref": self.ref} if self.ref else None
        return fetch(
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
