"""The load generator's HTTP/1.1 transport for streamed responses.

Why not aiohttp here: its response reader wakes the request's task for every read from the
socket, and asyncio's default socket transport allocates a fresh 256 KiB buffer (an mmap, a
shrink and an munmap) for every read. At hundreds of concurrent streams that per-read cost
was larger than parsing the events (``make bench``, client efficiency). This transport is an
``asyncio.BufferedProtocol``: the kernel writes into one buffer shared by all connections of
a pool, httptools (llhttp) parses the HTTP framing, and each read's body bytes go straight to
the caller's ``on_body(data, t)`` with the read's timestamp, in the same callback. The
request's task wakes once, when the response ends.

Scope: HTTP/1.1 with keep-alive and a pool of idle connections per ``Pool`` (one host),
``http`` and ``https``, chunked, Content-Length and close-delimited bodies. No proxies, no
redirects, no compression (requests say ``Accept-Encoding: identity``). Nothing else in infprof
needs an HTTP client library: probes and scraping use ``urllib``, the exporter is
prometheus_client's server.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import Any

import httptools
from yarl import URL

from profiler import __version__

READ_BUFFER_BYTES = 256 * 1024
ERROR_BODY_MAX = 64 * 1024  # bytes of a non-200 body kept for the error text

OnBody = Callable[[bytes, float], None]


class TransportError(Exception):
    """A request that got no complete response; ``str()`` is the record's error text."""


class ConnectFailed(TransportError):
    """No connection: refused, unreachable, DNS, TLS handshake or connect timeout."""


class Disconnected(TransportError):
    """The server closed or reset the connection before the response began."""


class StreamCut(TransportError):
    """The connection ended after the response began but before it was complete."""


class BadResponse(TransportError):
    """The bytes from the server are not HTTP/1.x (or the body handler rejected them)."""


def _os_error_text(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):  # an OSError whose errno means nothing here
        detail = getattr(e, "verify_message", None)
        return f"TLS {e.reason or type(e).__name__}" + (f": {detail}" if detail else "")
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)  # asyncio's text names the address: keep the reason only
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class _Exchange:
    """One request/response on a connection: status, close-delimited or not, error body."""

    __slots__ = ("fut", "on_body", "on_status", "status", "chunked", "length", "error_body")

    def __init__(
        self, fut: asyncio.Future[float], on_body: OnBody, on_status: Callable[[int], None]
    ) -> None:
        self.fut = fut
        self.on_body = on_body
        self.on_status = on_status
        self.status = 0  # 0 until the response headers are complete
        self.chunked = False
        self.length = False  # a Content-Length header was sent
        self.error_body = bytearray()


class _Connection(asyncio.BufferedProtocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self.requests = 0  # requests started on this connection (> 0: a reused one)
        self._x: _Exchange | None = None
        self._parser: Any = None
        self._parts: list[bytes] = []
        self._t = 0.0

    # ----------------------------------------------------------------- requests
    def start(self, data: bytes, x: _Exchange) -> None:
        assert self.transport is not None
        self._x = x
        self._parser = httptools.HttpResponseParser(self)
        self.requests += 1
        self.transport.write(data)

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    # ----------------------------------------------------------------- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.pool._view

    def buffer_updated(self, nbytes: int) -> None:
        self._t = self.pool._now()
        if self._parser is None:  # bytes on an idle connection: the server is confused
            self.abort()
            return
        try:
            self._parser.feed_data(self.pool._view[:nbytes])
        except httptools.HttpParserError as e:
            self._fail(BadResponse(f"bad HTTP response: {e}"))
            return
        if self._parts:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        x = self._x
        if x is None or x.fut.done():
            return
        if x.status and not x.chunked and not x.length:  # body delimited by the close
            if self._parts:
                self._flush()
            if not x.fut.done():
                self._finish(self._t if self._t else self.pool._now())
            return
        why = f" ({_os_error_text(exc)})" if exc is not None else ""
        if x.status:
            self._fail(StreamCut(f"stream cut: connection closed before the response ended{why}"))
        else:
            self._fail(Disconnected(f"server disconnected before responding{why}"))

    # ----------------------------------------------------------------- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        x = self._x
        if x is None:
            return
        n = name.lower()
        if n == b"transfer-encoding" and b"chunked" in value.lower():
            x.chunked = True
        elif n == b"content-length":
            x.length = True

    def on_headers_complete(self) -> None:
        x = self._x
        if x is None:
            return
        x.status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.keep_alive = False
        x.on_status(x.status)

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        if self._x is None:  # bytes after the response (a confused server): drop them
            self._parts.clear()
            self.keep_alive = False
            return
        if self._parts:
            self._flush()
        if not self._parser.should_keep_alive():
            self.keep_alive = False
        self._finish(self._t)

    # ----------------------------------------------------------------- internals
    def _flush(self) -> None:
        """Hand the body bytes of this read to the caller, in one piece, with its time."""
        x = self._x
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if x is None or x.fut.done():
            return
        if x.status == 200:
            try:
                x.on_body(data, self._t)
            except ValueError as e:  # the stream parser refused the bytes (an endless line)
                self._fail(BadResponse(f"{type(e).__name__}: {e}"))
        elif len(x.error_body) < ERROR_BODY_MAX:
            x.error_body += data[: ERROR_BODY_MAX - len(x.error_body)]

    def _finish(self, t: float) -> None:
        x = self._x
        self._x = None
        self._parser = None
        if x is not None and not x.fut.done():
            x.fut.set_result(t)

    def _fail(self, err: TransportError) -> None:
        x = self._x
        self._x = None
        self._parser = None
        self.abort()
        if x is not None and not x.fut.done():
            x.fut.set_exception(err)


class Response:
    """What a request got: the status, the end time on the run clock, and (for a status other
    than 200) the start of the body for the error text."""

    __slots__ = ("status", "end_s", "error_body")

    def __init__(self, status: int, end_s: float, error_body: bytes) -> None:
        self.status = status
        self.end_s = end_s
        self.error_body = error_body


class Pool:
    """Keep-alive connections to one ``base_url``; ``post()`` streams one response.

    ``now`` is the clock every read is stamped with (the run clock). ``headers`` are sent with
    every request. Use from one event loop; ``close()`` when done."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        now: Callable[[], float],
        *,
        connect_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {base_url}")
        for k, v in headers.items():
            if any(c in k + v for c in "\r\n\0"):
                raise ValueError(f"header {k} contains a line break")
        self._host = url.host
        self._port: int = url.port or (443 if url.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":  # certificates verified against the system's CAs by default
            self._ssl = ssl_context or ssl.create_default_context()
        self._prefix = url.raw_path.rstrip("/")
        lines = [
            f"Host: {url.host_port_subcomponent}",
            f"User-Agent: infprof/{__version__}",
            "Accept: */*",
            "Accept-Encoding: identity",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._now = now
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._buf = bytearray(READ_BUFFER_BYTES)
        self._view = memoryview(self._buf)

    def request_bytes(self, path: str, body: bytes) -> bytes:
        target = self._prefix + "/" + path.lstrip("/")
        return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            target.encode("latin-1"),
            self._head,
            len(body),
            body,
        )

    async def post(
        self, path: str, body: bytes, on_body: OnBody, on_status: Callable[[int], None]
    ) -> Response:
        """POST ``body`` to ``path``; the body of a 200 response goes to ``on_body(data, t)``
        read by read. Raises ``TransportError`` subclasses; on cancellation or a timeout in
        the caller the connection is dropped, never reused."""
        data = self.request_bytes(path, body)
        conn = await self._acquire()
        reused = conn.requests > 0
        try:
            return await self._exchange(conn, data, on_body, on_status)
        except Disconnected:
            if not reused:
                raise
            # a kept-alive connection the server closed as we sent: once more on a new one
            conn = await self._connect()
            return await self._exchange(conn, data, on_body, on_status)

    async def _exchange(
        self,
        conn: _Connection,
        data: bytes,
        on_body: OnBody,
        on_status: Callable[[int], None],
    ) -> Response:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        x = _Exchange(fut, on_body, on_status)
        try:
            conn.start(data, x)
            end_s = await fut
        except BaseException:
            conn.abort()
            raise
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.abort()
        return Response(x.status, end_s, bytes(x.error_body))

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return await self._connect()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed(
                f"connection failed: no connection within {self._connect_timeout_s:g} s"
            ) from None
        except (OSError, ssl.SSLError) as e:
            raise ConnectFailed(f"connection failed: {_os_error_text(e)}") from None
        self._all.add(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    async def close(self) -> None:
        """Drop every connection."""
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
