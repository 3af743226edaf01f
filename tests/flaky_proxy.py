"""An HTTP proxy on loopback in front of moto that fails on purpose: it answers ``503 SlowDown`` to one request in
``slow_every`` and drops the connection of one in ``drop_every``, picked by a seeded generator so a failure
replays. Everything else is forwarded to the upstream S3 endpoint and its answer relayed byte for byte."""

from __future__ import annotations

import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class FlakyProxy:
    """``with FlakyProxy(endpoint, seed=0) as url:`` serves ``url``; ``counts`` says what it did."""

    def __init__(self, upstream_url: str, seed: int = 0, slow_every: int = 7, drop_every: int = 23) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.random = random.Random(seed)
        self.slow_every = slow_every
        self.drop_every = drop_every
        self.counts = {"forwarded": 0, "slow_down": 0, "dropped": 0}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="flaky-proxy", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fault(self) -> str:
        """The next request's fate: ``slow_down``, ``dropped`` or ``forwarded`` (seeded)."""
        with self.lock:
            draw = self.random.random()
            fate = "forwarded"
            if draw < 1 / self.slow_every:
                fate = "slow_down"
            elif draw < 1 / self.slow_every + 1 / self.drop_every:
                fate = "dropped"
            self.counts[fate] += 1
            return fate

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fate = proxy.fault()
                if fate == "dropped":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fate == "slow_down":
                    self._answer(503, [("Content-Type", "application/xml")], SLOW_DOWN)
                    return
                status, headers, payload = proxy.forward(self.command, self.path, self.headers.items(), body)
                self._answer(status, headers, payload)

            def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                upstream_length = next((v for k, v in headers if k.lower() == "content-length"), "0")
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", upstream_length if self.command == "HEAD" else str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        return Handler

    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to the upstream on a fresh connection; its status, headers and body."""
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            kept = {k: v for k, v in headers if k.lower() not in HOP_BY_HOP}
            connection.request(method, path, body=body or None, headers=kept)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()
