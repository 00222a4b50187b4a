"""The load generator's HTTP/1.1 transport against scripted loopback servers: framing
(chunked, Content-Length, close-delimited), keep-alive reuse, every failure as its error
class, the stale kept-alive retry, cancellation, the request bytes, and the shared buffer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from profiler.load.transport import (
    ERROR_BODY_MAX,
    BadResponse,
    ConnectFailed,
    Disconnected,
    Pool,
    StreamCut,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head[:-4].split(b"\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines)}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return first, headers, body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


OK_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class Server:
    """A loopback server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0

    async def __aenter__(self) -> str:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


class Collect:
    def __init__(self) -> None:
        self.parts: list[tuple[bytes, float]] = []
        self.status: int | None = None

    def body(self, data: bytes, t: float) -> None:
        self.parts.append((data, t))

    def on_status(self, s: int) -> None:
        self.status = s

    @property
    def data(self) -> bytes:
        return b"".join(p for p, _ in self.parts)


def posts_in_turn(handler: Handler, n: int) -> tuple[list[bytes], int]:
    """``n`` requests one after another on one pool: the bodies, and how many connections the
    server saw."""
    server = Server(handler)

    async def main() -> tuple[list[bytes], int]:
        async with server as url:
            pool = Pool(url, {}, time.monotonic)
            out = []
            for _ in range(n):
                c = Collect()
                resp = await pool.post("x", b"{}", c.body, c.on_status)
                assert resp.status == 200
                out.append(c.data)
            await pool.close()
            return out, server.connections

    return run(main())  # type: ignore[no-any-return]


def test_chunked_body_arrives_read_by_read_with_each_read_time() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(OK_CHUNKED + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(chunk(b"data: 3\n\n") + b"0\r\n\r\n")
        await w.drain()
        await r.read()

    async def main() -> tuple[Collect, Any, float, float]:
        async with Server(handler) as url:
            pool = Pool(url, {}, time.monotonic)
            c = Collect()
            t0 = time.monotonic()
            resp = await pool.post("/v1/completions", b"{}", c.body, c.on_status)
            await pool.close()
            return c, resp, t0, time.monotonic()

    c, resp, t0, t1 = run(main())
    assert resp.status == 200 and c.status == 200
    assert c.data == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    # the first two events came in one read and share its time; the third came 50 ms later
    assert c.parts[0][0] == b"data: 1\n\ndata: 2\n\n"
    assert c.parts[-1][1] - c.parts[0][1] >= 0.04
    assert t0 <= c.parts[0][1] <= c.parts[-1][1] <= resp.end_s <= t1


def test_keep_alive_reuses_one_connection_and_content_length_bodies() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(3):
            await read_request(r)
            body = b"answer %d" % i
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await w.drain()

    out, conns = posts_in_turn(handler, 3)
    assert out == [b"answer 0", b"answer 1", b"answer 2"]
    assert conns == 1


def test_close_delimited_body_ends_at_eof_and_connection_close_is_not_reused() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ndata: a\n\n")
        await w.drain()
        await asyncio.sleep(0.02)
        w.write(b"data: b\n\n")
        await w.drain()

    out, conns = posts_in_turn(handler, 2)
    assert out == [b"data: a\n\ndata: b\n\n"] * 2
    assert conns == 2


def test_request_bytes_carry_path_prefix_host_and_headers() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await read_request(r))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await r.read()

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool(url + "/gateway/", {"Authorization": "Bearer k"}, time.monotonic)
            c = Collect()
            await pool.post("/v1/completions", b'{"a":1}', c.body, c.on_status)
            await pool.close()

    run(main())
    first, headers, body = seen[0]
    assert first == b"POST /gateway/v1/completions HTTP/1.1"
    assert headers[b"host"].startswith(b"127.0.0.1:")
    assert headers[b"authorization"] == b"Bearer k"
    assert headers[b"accept-encoding"] == b"identity"
    assert body == b'{"a":1}'


def test_non_200_keeps_the_start_of_the_body_for_the_error() -> None:
    big = b"x" * (ERROR_BODY_MAX * 2)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 429 Too Many\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
        await w.drain()
        await r.read()

    async def main() -> tuple[Any, Collect]:
        async with Server(handler) as url:
            pool = Pool(url, {}, time.monotonic)
            c = Collect()
            resp = await pool.post("x", b"{}", c.body, c.on_status)
            await pool.close()
            return resp, c

    resp, c = run(main())
    assert resp.status == 429 and c.status == 429
    assert c.parts == []  # a non-200 body is not a stream
    assert resp.error_body == big[:ERROR_BODY_MAX]


@pytest.mark.parametrize(
    "script,error,text",
    [
        (b"", Disconnected, "server disconnected before responding"),
        (OK_CHUNKED + chunk(b"data: 1\n\n"), StreamCut, "stream cut: connection closed"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", BadResponse, "bad HTTP response"),
    ],
    ids=["closed-before-response", "cut-mid-stream", "not-http"],
)
def test_failures_raise_their_own_error(script: bytes, error: type, text: str) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(script)
        await w.drain()

    async def main() -> Collect:
        async with Server(handler) as url:
            pool = Pool(url, {}, time.monotonic)
            c = Collect()
            try:
                with pytest.raises(error) as ei:
                    await pool.post("x", b"{}", c.body, c.on_status)
                assert str(ei.value).startswith(text)
            finally:
                await pool.close()
            return c

    c = run(main())
    if error is StreamCut:
        assert c.data == b"data: 1\n\n"  # what came before the cut was delivered


def test_connection_refused_is_connect_failed() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        pool = Pool(f"http://127.0.0.1:{port}", {}, time.monotonic)
        c = Collect()
        with pytest.raises(ConnectFailed, match="^connection failed: Connection refused"):
            await pool.post("x", b"{}", c.body, c.on_status)
        await pool.close()

    run(main())


def test_a_kept_alive_connection_closed_by_the_server_is_retried_once_on_a_new_one() -> None:
    """The server answers once, then drops the kept-alive connection on the next request
    without answering (a keep-alive timeout racing the request): the pool resends once."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await read_request(r)  # the second request on this connection: hang up

    out, conns = posts_in_turn(handler, 2)
    assert out == [b"ok", b"ok"]
    assert conns == 2


def test_cancelled_request_drops_its_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(OK_CHUNKED + chunk(b"data: 1\n\n"))
        await w.drain()
        await r.read()  # never finishes the response

    server = Server(handler)

    async def main() -> int:
        async with server as url:
            pool = Pool(url, {}, time.monotonic)
            for _ in range(2):
                c = Collect()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await pool.post("x", b"{}", c.body, c.on_status)
                assert c.data == b"data: 1\n\n"
            await pool.close()
            return server.connections

    assert run(main()) == 2  # the half-read connection was not reused


def test_concurrent_streams_share_the_read_buffer_without_mixing() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        _, _, body = await read_request(r)
        w.write(OK_CHUNKED)
        for i in range(50):
            w.write(chunk(b"data: %s %d\n\n" % (body, i)))
            await w.drain()
            await asyncio.sleep(0)
        w.write(b"0\r\n\r\n")
        await w.drain()
        await r.read()

    async def main() -> list[bytes]:
        async with Server(handler) as url:
            pool = Pool(url, {}, time.monotonic)
            cs = [Collect() for _ in range(8)]
            await asyncio.gather(
                *(pool.post("x", b"s%d" % i, c.body, c.on_status) for i, c in enumerate(cs))
            )
            await pool.close()
            return [c.data for c in cs]

    for i, data in enumerate(run(main())):
        assert data == b"".join(b"data: s%d %d\n\n" % (i, k) for k in range(50))


@pytest.mark.parametrize(
    "url,headers,match",
    [
        ("ftp://x", {}, "not an http"),
        ("http://127.0.0.1:1", {"Authorization": "Bearer a\r\nX: y"}, "line break"),
    ],
)
def test_bad_urls_and_headers_are_refused(url: str, headers: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Pool(url, headers, time.monotonic)


def test_https_with_a_verified_certificate(tmp_path: Any) -> None:
    """TLS through the same buffered protocol; a certificate the client does not trust fails
    as a connection failure, not a traceback."""
    import datetime
    import ipaddress
    import ssl

    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_pem, key_pem)
    trusting = ssl.create_default_context(cafile=str(cert_pem))

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(OK_CHUNKED + chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        await w.drain()
        await r.read()

    async def main() -> bytes:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        url = f"https://127.0.0.1:{port}"
        try:
            pool = Pool(url, {}, time.monotonic, ssl_context=trusting)
            c = Collect()
            resp = await pool.post("x", b"{}", c.body, c.on_status)
            assert resp.status == 200
            await pool.close()
            untrusting = Pool(url, {}, time.monotonic)  # the system CAs do not know this cert
            with pytest.raises(ConnectFailed, match="^connection failed: .*CERTIFICATE"):
                await untrusting.post("x", b"{}", c.body, c.on_status)
            await untrusting.close()
            return c.data
        finally:
            server.close()

    assert run(main()) == b"data: 1\n\ndata: 2\n\n"


def test_bytes_after_the_response_close_the_connection() -> None:
    """A server that sends a second, unasked-for response on the same read: the request still
    gets its own body, and the connection is not reused."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 2)
            await w.drain()

    out, conns = posts_in_turn(handler, 2)
    assert out == [b"ok", b"ok"]
    assert conns == 2
