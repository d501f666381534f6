"""A minimal blocking JSON-over-HTTP POST with a whole-request deadline, abortable from another thread.

Returns the status, the headers and the raw body for every HTTP answer (no exception for 4xx/5xx);
raises ``TimeoutError`` when the request (connect, send, headers and body together) outlives its
timeout, ``RequestCancelled`` when its ``RequestGroup`` was cancelled, and ``OSError`` or
``http.client.HTTPException`` for other transport failures.

Standard library only: per-read timeouts (httpx, ``urllib``) let a server that drips bytes hold a request
for ever, so a watchdog shuts the socket down at the deadline, which wakes any blocked read or write.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RequestCancelled", "RequestGroup", "post_json"]

_CHUNK = 65_536


class RequestCancelled(ConnectionAbortedError):
    """The request was aborted by ``RequestGroup.cancel`` (shutdown), not by the server."""


class _Open:
    __slots__ = ("deadline", "reason", "sock")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sock: socket.socket | None = None  # kept here: the connection drops it when the response takes over
        self.reason: str | None = None  # "timeout" or "cancelled" once aborted

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read or write blocked in another thread


class RequestGroup:
    """The open requests of one client: enforces each one's deadline (one watchdog thread, alive only while
    requests are open) and aborts them all on ``cancel`` until ``reopen``."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._open: dict[int, _Open] = {}
        self._next = 0
        self._cancelled = False
        self._watchdog: threading.Thread | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Aborts every open request and refuses new ones until ``reopen``."""
        with self._cv:
            self._cancelled = True
            for o in self._open.values():
                o.abort("cancelled")
            self._cv.notify_all()

    def reopen(self) -> None:
        with self._cv:
            self._cancelled = False

    def open_requests(self) -> int:
        with self._cv:
            return len(self._open)

    def _register(self, o: _Open) -> int:
        with self._cv:
            if self._cancelled:
                raise RequestCancelled("request group cancelled")
            self._next += 1
            self._open[self._next] = o
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="heapa-http-deadline", daemon=True)
                self._watchdog.start()
            self._cv.notify_all()
            return self._next

    def _unregister(self, token: int) -> None:
        with self._cv:
            self._open.pop(token, None)
            self._cv.notify_all()

    def _attach(self, o: _Open, sock: socket.socket | None) -> None:
        """Records the connected socket; one connected after an abort is shut down at once."""
        with self._cv:
            o.sock = sock
            if o.reason is not None:
                o.abort(o.reason)
        self._check(o)

    @staticmethod
    def _check(o: _Open) -> None:
        """Raises for an aborted request."""
        if o.reason == "timeout":
            raise TimeoutError("request deadline exceeded")
        if o.reason == "cancelled":
            raise RequestCancelled("request cancelled")

    def _watch(self) -> None:
        with self._cv:
            while self._open:
                now = time.monotonic()
                live = [o for o in self._open.values() if o.reason is None]
                for o in live:
                    if o.deadline <= now:
                        o.abort("timeout")
                waits = [o.deadline - now for o in live if o.reason is None]
                self._cv.wait(min(waits) if waits else None)  # woken by register/unregister/cancel
            self._watchdog = None


_DEFAULT_GROUP = RequestGroup()


def post_json(
    url: str,
    payload: Any,
    headers: dict[str, str],
    timeout: float,
    group: RequestGroup | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POSTs ``payload`` as JSON; the whole request must finish within ``timeout`` seconds."""
    group = group if group is not None else _DEFAULT_GROUP
    deadline = time.monotonic() + timeout
    body = json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json", "Accept": "application/json", **headers}
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
    o = _Open(deadline)
    token = group._register(o)
    try:
        try:
            conn.connect()  # bounded by the deadline through the connection's timeout
            sock = conn.sock
            group._attach(o, sock)
            conn.request("POST", path, body=body, headers=hdrs)
            resp = conn.getresponse()
            expected = resp.length  # None: chunked or delimited by the connection's end
            chunks: list[bytes] = []
            got = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("request deadline exceeded")
                sock.settimeout(left)  # no single read may outlive the deadline either
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            if expected is not None and got < expected:
                raise http.client.IncompleteRead(b"".join(chunks), expected - got)
        except Exception:
            group._check(o)  # an abort surfaces as whatever the broken socket raised: name the cause
            raise
        group._check(o)  # a shutdown looks like the end of a body without Content-Length
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks)
    finally:
        group._unregister(token)
        conn.close()
