"""Fault injection for reliability tests: an HTTP proxy that corrupts answers, and process faults.

`CorruptingProxy` runs on 127.0.0.1 port 0 in a thread of its own, forwards every request to a
protocol v1 server and, when told, replaces the next `/rl/step` answer with garbage of one kind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Final

import aiohttp
import orjson
import psutil
from aiohttp import web

#: Ways a server can answer garbage: each must make the client raise ProtocolError.
CORRUPTIONS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "not_json": lambda body: b"<html>502 Bad Gateway</html>",
    "nan": lambda body: body.replace(b"[[", b"[[NaN,", 1),
    "overflow": lambda body: body.replace(b"]", b",1e999]", 2),
    "wrong_shape": lambda body: _edit(body, lambda d: d.update(observations=d["observations"][:-1])),
    "missing_field": lambda body: _edit(body, lambda d: d.pop("done")),
    "wrong_type": lambda body: _edit(body, lambda d: d.update(tick="soon")),
}


def _edit(body: bytes, change: Callable[[dict], object]) -> bytes:
    data = orjson.loads(body)
    change(data)
    return orjson.dumps(data)


class CorruptingProxy:
    """Forwards to `target`; `corrupt(kind)` queues a corruption for the next `/rl/step` answer.

    `steps` counts forwarded `/rl/step` requests; `before_step(n)`, if set, runs before the n-th.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.steps = 0
        self.corrupted = 0
        self.before_step: Callable[[int], None] | None = None
        self._pending: collections.deque[str] = collections.deque()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self._port}"

    def corrupt(self, kind: str) -> None:
        self._pending.append(kind)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=1 << 24)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as self._session:
            self._ready.set()
            await self._stop.wait()
        await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        is_step = request.path == "/rl/step"
        if is_step:
            self.steps += 1
            if self.before_step is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.before_step, self.steps)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        try:
            async with self._session.request(
                request.method, self.target + request.path_qs, data=await request.read(), headers=headers
            ) as answer:
                status, body = answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, body=b'{"error": "upstream unreachable"}')
        if is_step and status == 200 and self._pending:
            body = CORRUPTIONS[self._pending.popleft()](body)
            self.corrupted += 1
        return web.Response(status=status, body=body, content_type="application/json")


def server_process(url: str) -> psutil.Process:
    """The child process of this test listening on `url`'s port."""
    port = int(url.rsplit(":", 1)[1])
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections()):
                return child
    raise LookupError(f"no child process listens on {url}")


def stop_for(process: psutil.Process, seconds: float) -> threading.Timer:
    """SIGSTOP `process` now and SIGCONT it after `seconds` (if it still exists)."""
    process.send_signal(signal.SIGSTOP)

    def resume() -> None:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGCONT)

    timer = threading.Timer(seconds, resume)
    timer.start()
    return timer
