"""A TCP proxy on loopback that holds back each response for a fixed latency before its first byte: an object
store's time to first byte, put in front of moto (which answers on loopback in about a millisecond).

Every connection gets its own upstream connection; a response is delayed once, after a request has been seen
on that connection, so concurrent requests (zarr fetches chunks in parallel) wait concurrently, as on S3.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from urllib.parse import urlsplit

BUFFER = 1 << 16


class LatencyProxy:
    """``with LatencyProxy("http://127.0.0.1:PORT", 0.02) as url:`` forwards ``url`` to the upstream endpoint."""

    def __init__(self, upstream_url: str, latency: float) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.latency = latency
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="latency-proxy", daemon=True)
        self.server: asyncio.Server | None = None

    def __enter__(self) -> str:
        self.thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        async def stop() -> None:
            assert self.server is not None
            self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        upstream_in, upstream_out = await asyncio.open_connection(*self.upstream)
        request_seen = asyncio.Event()

        async def requests() -> None:
            while data := await client_in.read(BUFFER):
                request_seen.set()
                upstream_out.write(data)
                await upstream_out.drain()
            upstream_out.close()

        async def responses() -> None:
            while data := await upstream_in.read(BUFFER):
                if request_seen.is_set():
                    request_seen.clear()
                    await asyncio.sleep(self.latency)
                client_out.write(data)
                await client_out.drain()
            client_out.close()

        await asyncio.gather(requests(), responses(), return_exceptions=True)
