"""Floods and slow clients: a cap on open connections and a deadline on request headers.

aiohttp's server waits for a request's headers as long as a connection stays open, and has no
limit on connections. `GuardedServer` wraps its protocol factory: past `max_connections` a new
connection is answered 503 and closed; each connection must send a request's headers within
`header_timeout` seconds of opening, or of the request's first byte, else 408 and closed. A
kept-alive connection with no request under way has no deadline here (only the keep-alive timeout,
wire.IDLE_TIMEOUT, an hour), so a trainer may stay silent through a long PPO update. Bodies are bounded by
the handlers (server.py `_body`, `--body-timeout`) and by `--max-body-bytes`.
"""

from __future__ import annotations

import asyncio
from typing import Final

import httptools
import orjson
from aiohttp import web

__all__ = ["GuardedServer", "error_response"]

#: A refused connection is closed this long after its answer at the latest, so the client can read it.
REFUSAL_LINGER_SECONDS: Final = 1.0


def error_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer `{"error": message}` that closes the connection."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedServer:
    """Protocol factory for `loop.create_server`: aiohttp's `web.Server` behind the cap and deadline."""

    def __init__(self, server: web.Server, *, max_connections: int, header_timeout: float) -> None:
        self._server = server
        self._max_connections = max_connections
        # counted here, not by aiohttp's list, which keeps a closed one until its handler task ends
        self.open: set[asyncio.Protocol] = set()
        self._header_timeout = header_timeout
        self._full = error_response(
            503,
            "Service Unavailable",
            f"the server has its maximum of {max_connections} connections open; close idle ones or "
            "start the simulator with a larger --max-connections",
        )

    def __call__(self) -> asyncio.Protocol:
        if len(self.open) >= self._max_connections:
            return _Refusal(self._full)
        return _HeaderDeadline(self._server(), self._header_timeout, self.open)


class _HeaderDeadline(asyncio.Protocol):
    """aiohttp's handler for one connection, with a clock running while a request's headers arrive."""

    def __init__(self, handler: asyncio.Protocol, timeout: float, open_set: set[asyncio.Protocol]) -> None:
        self._handler = handler
        self._open = open_set
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = False  # a request's first byte has come, the end of its headers not yet
        # a second, C-speed parse of the same bytes, only to see where each request's headers end
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)

    # asyncio.Protocol, forwarded to aiohttp
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open.add(self)
        self._handler.connection_made(transport)
        self._start_clock()  # a new connection owes its first request's headers at once

    def data_received(self, data: bytes) -> None:
        if self._parser is not None:
            try:
                self._parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # aiohttp answers, closes
                self._stop_watching()
            else:
                # The clock starts with a request's first byte; a request whose headers came whole
                # in these bytes (a trainer's step, nearly always) needs none.
                if self._in_headers:
                    self._start_clock()
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        self._stop_watching()
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._in_headers = True

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_clock()

    def _start_clock(self) -> None:
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self._timeout, self._expire)

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _stop_watching(self) -> None:
        self._stop_clock()
        self._parser = None

    def _expire(self) -> None:
        self._deadline = None
        self._parser = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(
                error_response(
                    408,
                    "Request Timeout",
                    f"no complete request headers within {self._timeout:g} s; send each request "
                    "whole (the simulator's --header-timeout)",
                )
            )
            self._transport.close()


class _Refusal(asyncio.Protocol):
    """Answers one prepared error and closes, reading (and dropping) what the client sends meanwhile."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._answer)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return False  # the client is done too: close now
