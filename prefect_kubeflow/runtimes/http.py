"""The HTTP layer of remote runtime sources: settings, sessions, and bounded fetches.

`fetch` follows redirects itself so that every target is checked before it is requested (no
step down from HTTPS, the token dropped when the host changes), reads at most the size limit,
and turns every failure into a `RuntimeFetchError` that says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from prefect_kubeflow._version import __version__
from prefect_kubeflow.errors import InvalidRuntimeSourceError, RuntimeFetchError, RuntimeParseError
from prefect_kubeflow.runtimes.parsing import MAX_DOCUMENT_BYTES

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class HttpSettings:
    """How remote sources are fetched."""

    timeout_seconds: float = 10.0
    ca_bundle: str | None = None
    allow_http: bool = False
    max_bytes: int = MAX_DOCUMENT_BYTES
    github_api_url: str = "https://api.github.com"
    github_token: str | None = field(default=None, repr=False)


def check_scheme(url: str, http: HttpSettings) -> None:
    """Refuse a URL that these settings do not let us fetch.

    Raises:
        InvalidRuntimeSourceError: `url` is not https:// (nor http:// with `allow_http`).
    """
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and http.allow_http):
        return
    allowed = "https:// and http://" if http.allow_http else "https:// (allow_http is off)"
    raise InvalidRuntimeSourceError(url, f"only {allowed} URLs are fetched")


def new_session() -> requests.Session:
    """A session that names this package in its User-Agent."""
    session = requests.Session()
    session.headers["User-Agent"] = f"prefect-kubeflow/{__version__}"
    return session


def fetch(
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
    Errors name `source`; `auth_hint` is added to the HTTP errors a credential may cure.

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
            check_scheme(target, http)
        except InvalidRuntimeSourceError as exc:
            raise RuntimeFetchError(source, f"redirected off HTTPS to {target}") from exc
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
    # The requests exceptions below are raised `from None`: each keeps the request that
    # failed, whose headers carry the GitHub token. Their root cause is in the message.
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
        raise RuntimeFetchError(source, f"request to {url} failed: {exc}") from exc


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
        # from None: the exception keeps the request, whose headers carry the GitHub token.
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
