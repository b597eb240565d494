"""What the local test servers share: an HTTP server on 127.0.0.1 served from a daemon thread, started and
stopped by ``with`` (or ``start()``/``stop()``), and a quiet keep-alive request handler."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

#: How often the serving loop looks for a stop: ``stop()`` waits for it, and the tests start many servers.
POLL_INTERVAL_S = 0.02


class BackgroundServer:
    """The lifecycle of one ``ThreadingHTTPServer`` (already bound, to a free port) served from a daemon thread.
    A subclass builds its server and calls :meth:`_serve_in_background` in its ``__init__``."""

    _httpd: ThreadingHTTPServer
    _thread: threading.Thread

    def _serve_in_background(self, httpd: ThreadingHTTPServer, name: str) -> None:
        httpd.daemon_threads = True  # a connection left open by a client never keeps the tests' process alive
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop that never started
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive handler without access logs (tests read the servers' own counters and logs)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    # TCP_NODELAY: otherwise Nagle's algorithm and delayed ACKs add ~40 ms to every answer (2,853 corpus messages
    # through the OpenAI server: two minutes of waiting on nothing).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass
