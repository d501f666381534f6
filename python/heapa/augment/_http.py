"""A minimal blocking JSON-over-HTTP POST (httpx when installed, else the standard library).

Returns the status, the headers and the raw body for every HTTP answer (no exception for 4xx/5xx);
raises ``OSError`` (timeouts included) or ``http.client.HTTPException`` for transport failures.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

__all__ = ["TRANSPORT", "post_json"]

try:  # pragma: no cover - depends on the environment
    import httpx

    _CLIENT: Any = httpx.Client()
    TRANSPORT = "httpx"
except ImportError:
    httpx = None
    _CLIENT = None
    TRANSPORT = "http.client"


def post_json(url: str, payload: Any, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    if _CLIENT is not None:  # pragma: no cover - httpx is optional
        try:
            r = _CLIENT.post(url, content=body, headers=hdrs, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ConnectionError(str(exc)) from exc
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()
