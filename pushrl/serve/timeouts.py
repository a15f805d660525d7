"""Read timeouts and a connection limit for the server's HTTP/1.1 connections (uvicorn).

uvicorn closes *idle* keep-alive connections (``timeout_keep_alive``) but waits forever for a
request that is being sent: a client that opens a connection and sends half a request line,
half the headers, or fewer body bytes than its ``Content-Length`` holds a descriptor (and,
for a body, a request task) indefinitely. :class:`ReadTimeoutProtocol` closes such a
connection after ``header_timeout`` seconds without complete headers (answering ``408``,
since no request has started) or ``body_timeout`` seconds from the end of the headers to the
end of the body (the request's ``receive`` then reports a disconnect: status 499, a client
error). ``limit_concurrency`` caps connections plus running requests (uvicorn answers 503
above it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 23\r\nconnection: close\r\n\r\nrequest read timed out\n")


@dataclass(frozen=True)
class HttpLimits:
    """Connection limits of ``pushrl serve``.

    Attributes:
        header_timeout: Seconds from a connection's first byte (or the end of the previous
            response, for the next request on a kept-alive connection) until its request
            line and headers must be complete.
        body_timeout: Seconds from the end of the headers until the whole body must arrive.
        keep_alive: Seconds an idle kept-alive connection stays open.
        limit_concurrency: Connections plus running requests beyond which new requests get
            503 (None: no limit).
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: int = 5
    limit_concurrency: int | None = 1000

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive"):  # all seconds
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0 seconds, got {getattr(self, name)}")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            raise ValueError(f"`limit_concurrency` must be >= 1, got {self.limit_concurrency}")


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read deadlines (see module doc)."""

    header_timeout = HttpLimits.header_timeout
    body_timeout = HttpLimits.body_timeout

    _deadline: asyncio.TimerHandle | None = None
    _reading_body = False

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._reading_body:
            self.transport.write(_408)  # no request started: the client may read why
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_body = False
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._reading_body = True
        self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_body = False
        self._disarm()


def protocol_class(limits: HttpLimits) -> type[ReadTimeoutProtocol]:
    """A :class:`ReadTimeoutProtocol` subclass with ``limits``' timeouts."""
    return type("ReadTimeoutProtocol", (ReadTimeoutProtocol,),
                {"header_timeout": limits.header_timeout,
                 "body_timeout": limits.body_timeout})


def uvicorn_config(app: Any, *, host: str, port: int, limits: HttpLimits,
                   log_level: str = "warning", loop: str = "uvloop") -> Any:
    """The ``uvicorn.Config`` of ``pushrl serve`` (also used by the tests)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          loop=loop, http=protocol_class(limits),
                          timeout_keep_alive=limits.keep_alive,
                          limit_concurrency=limits.limit_concurrency,
                          timeout_graceful_shutdown=5)
