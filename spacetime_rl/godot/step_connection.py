"""`StepConnection`: the blocking HTTP/1.1 connection `GodotClient.send_step`/`receive_step` use.

One kept-alive socket per server. A request is written whole (its head prepared once, since only
the body changes); an answer is parsed by httptools (llhttp, the parser aiohttp uses). Against
`http.client` this costs ~6 us instead of ~40 us per exchange, on a path taken once per step.
Errors are the socket's (`OSError`, `TimeoutError`) or `httptools.HttpParserError`; the client
turns them into `GodotError`s.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from collections.abc import Mapping

import httptools
from yarl import URL

__all__ = ["Answer", "StepConnection"]

_READ_BYTES = 1 << 16

#: Give the core to another runnable process, if any (`os.sched_yield` where the OS has it).
_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


class Answer:
    """One HTTP answer, filled in by the httptools parser's callbacks."""

    def __init__(self) -> None:
        self.status = 0
        self.content_type = ""
        self.body = bytearray()
        self.keep_alive = True
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == b"connection" and value.strip().lower() == b"close":
            self.keep_alive = False

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


class StepConnection:
    """POSTs to one path of one server over a socket kept open between calls."""

    def __init__(
        self, url: URL, path: str, headers: Mapping[str, str], connect_timeout: float, read_timeout: float
    ) -> None:
        self._host, self._port = url.host or "", url.port or 80
        self._tls = url.scheme == "https"
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 address
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._socket: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def connect(self) -> None:
        """Open the socket (within the connect timeout) unless it is open and the server kept it.

        A kept-alive socket that reads as ready while no answer is due was closed by the server
        (an idle timeout, a restart): it is replaced, so a request is never written to it.
        """
        if self._socket is not None and select.select([self._socket], [], [], 0)[0]:
            self.close()
        if self._socket is None:
            sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
            self._socket = sock

    def send(self, body: bytes) -> None:
        assert self._socket is not None, "connect() first"
        self._socket.sendall(self._head + b"%d\r\n\r\n" % len(body) + body)

    def spin(self, seconds: float) -> None:
        """Poll for the answer without sleeping for up to `seconds`, yielding the core at each turn."""
        assert self._socket is not None
        end = time.perf_counter() + seconds
        while not select.select([self._socket], [], [], 0)[0] and time.perf_counter() < end:
            _yield()  # a process that shares this core runs first

    def receive(self) -> Answer:
        """Read one whole answer; the read timeout bounds each wait for data."""
        assert self._socket is not None, "send() first"
        answer = Answer()
        parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = self._socket.recv(_READ_BYTES)
            if not data:
                raise ConnectionResetError("the server closed the connection before its answer was complete")
            parser.feed_data(data)
        answer.status = parser.get_status_code()
        if not answer.keep_alive or parser.get_http_version() != "1.1":
            self.close()
        return answer

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
