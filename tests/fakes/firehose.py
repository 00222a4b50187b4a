"""A fake completions server that streams as fast as one core can: TTFT 0, ITL 0 (benchmarks).

The client-efficiency benchmark compares the CPU each client spends per streamed token. That
is only a property of the client when the client, not the server, is the bottleneck. The
general fake (``fake_openai``, aiohttp) emits about 26,000 events/s on one core; every
client then idles between small reads, and the faster a client is, the smaller its reads and
the more of them it makes, so the per-token figure measured the server's pacing. This server
is a raw protocol on uvloop (asyncio when uvloop is missing) that writes several times more
events per second. Each token is still its own SSE event, round-robin over the open streams,
as an engine step streams one token to every running request; ``--burst K`` writes K events
of a stream in one write per pass. With one event per write this Python server runs at about
infprof's own speed (the client then alternates between large and small reads from round to
round: 10-17 µs per token measured); with 4 it outpaces every client measured.

``POST /v1/completions`` with ``stream: true`` and one choice only (``max_tokens`` tokens,
``ignore_eos`` implied; ``n`` > 1 is refused with 400 rather than streamed as one choice);
``stream_options.include_usage`` / ``continuous_usage_stats`` honoured as vLLM does for one
choice (per-event usage only when continuous, else no ``usage`` key; a final ``choices: []``
event with the totals); ``GET /v1/models`` for readiness. Everything else is 404.

Usage: python -m tests.fakes.firehose [--port N]; prints ``READY http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httptools

MODELS = b'{"object":"list","data":[{"id":"fake","object":"model","owned_by":"infprof"}]}'


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain(status: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        ctype,
        len(body),
        body,
    )


class Stream:
    __slots__ = ("conn", "left", "sent", "prompt", "usage", "continuous", "head")

    def __init__(self, conn: Conn, req: dict[str, Any]) -> None:
        if int(req.get("n") or 1) != 1:
            raise ValueError("the firehose streams one choice: n must be 1 (use fake_openai)")
        self.conn = conn
        self.left = max(int(req.get("max_tokens") or 16), 1)
        self.sent = 0
        prompt = req.get("prompt")
        self.prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        opts = req.get("stream_options") or {}
        self.usage = bool(opts.get("include_usage"))
        self.continuous = bool(opts.get("continuous_usage_stats"))
        self.head = (
            b'data: {"id":"cmpl-%d","object":"text_completion","created":%d,"model":"fake",'
            b'"choices":[{"index":0,"text":" tok","logprobs":null,"finish_reason":'
            % (id(self), int(time.time()))
        )

    def event(self) -> bytes:
        """The next token's event (and, after the last one, usage, [DONE] and the end)."""
        self.left -= 1
        self.sent += 1
        finish = b"null" if self.left else b'"length"'
        usage = b"}\n\n"  # vLLM leaves the usage key out unless continuous usage is asked
        if self.continuous:
            p, k = self.prompt, self.sent
            usage = b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}\n\n'
            usage %= (p, p + k, k)
        out = _chunk(self.head + finish + b',"stop_reason":null}]' + usage)
        if self.left:
            return out
        if self.usage:
            out += _chunk(
                b'data: {"id":"cmpl-%d","object":"text_completion","created":0,"model":"fake",'
                b'"choices":[],"usage":{"prompt_tokens":%d,"total_tokens":%d,'
                b'"completion_tokens":%d}}\n\n'
                % (id(self), self.prompt, self.prompt + self.sent, self.sent)
            )
        return out + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Pump:
    """Writes ``burst`` events per open stream per pass (one write), then yields to the loop
    (new requests)."""

    def __init__(self, burst: int = 1) -> None:
        self.burst = max(burst, 1)
        self.streams: list[Stream] = []
        self.wake = asyncio.Event()

    def add(self, s: Stream) -> None:
        self.streams.append(s)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.streams:
                self.wake.clear()
                await self.wake.wait()
            keep: list[Stream] = []
            for s in self.streams:
                c = s.conn
                if c.closed:
                    continue
                if c.paused:
                    keep.append(s)
                    continue
                if self.burst == 1:
                    c.transport.write(s.event())
                else:
                    c.transport.write(b"".join(s.event() for _ in range(min(self.burst, s.left))))
                if s.left:
                    keep.append(s)
            self.streams = keep
            await asyncio.sleep(0)


class Conn(asyncio.Protocol):
    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.paused = False
        self.closed = False
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_plain(b"400 Bad Request", b'{"error":"bad request"}'))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        method = self.parser.get_method()
        if method == b"GET" and url.startswith(b"/v1/models"):
            self.transport.write(_plain(b"200 OK", MODELS))
            return
        if method != b"POST" or not url.startswith(b"/v1/completions"):
            self.transport.write(_plain(b"404 Not Found", b'{"error":"not found"}'))
            return
        try:
            req = json.loads(body)
            if not req.get("stream"):
                raise ValueError("only stream: true is served")
            stream = Stream(self, req)
        except (ValueError, TypeError) as e:
            msg = json.dumps({"error": {"message": str(e)}}).encode()
            self.transport.write(_plain(b"400 Bad Request", msg))
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.pump.add(stream)


async def serve(host: str, port: int, burst: int = 1) -> None:
    pump = Pump(burst)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(pump), host, port, backlog=2048)
    bound = server.sockets[0].getsockname()
    print(f"READY http://{bound[0]}:{bound[1]}", flush=True)
    await pump.run()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--burst", type=int, default=1, help="events per stream per write")
    a = p.parse_args(argv)
    run: Any = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    try:
        run(serve(a.host, a.port, a.burst))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
