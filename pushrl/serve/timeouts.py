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

The protocol also sends a response's status line and headers together with its first body
bytes (:class:`_OneWrite`): uvicorn writes them separately, and on a small JSON answer the
second ``write`` (a syscall that delivers into the client's socket) costs as much as the
framework's Python work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

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


class _OneWrite:
    """A response's transport: holds the status line and headers written for
    ``http.response.start`` and writes them with the first body bytes (or when the response
    completes or the connection closes, e.g. a HEAD response without body bytes)."""

    __slots__ = ("held", "hold", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.held: bytes | None = None
        self.hold = False

    def write(self, data: bytes) -> None:
        if self.hold:
            self.held = data if self.held is None else self.held + data
            return
        if self.held is not None:
            data, self.held = self.held + data, None
        self.transport.write(data)

    def flush(self) -> None:
        if self.held is not None:
            data, self.held = self.held, None
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _one_write(cycle: RequestResponseCycle) -> None:
    """Route ``cycle``'s writes through a :class:`_OneWrite` (before its task runs)."""
    out = _OneWrite(cycle.transport)
    send, done = cycle.send, cycle.on_response

    async def held_send(message: Any) -> None:
        if message["type"] != "http.response.start":
            await send(message)
            return
        out.hold = True
        try:
            await send(message)
        finally:
            out.hold = False

    def on_response() -> None:
        out.flush()
        done()

    cycle.transport = out  # type: ignore[assignment]  # duck-typed transport
    cycle.send = held_send  # type: ignore[method-assign]
    cycle.on_response = on_response


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
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request (not an upgrade): its task has not run
            _one_write(self.cycle)
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
                   log_level: str = "warning", loop: str = "uvloop",
                   uds: Any = None) -> Any:
    """The ``uvicorn.Config`` of ``pushrl serve`` (also used by the tests); ``uds``: a Unix
    socket path to listen on instead of ``host:port`` (a shard)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          uds=None if uds is None else str(uds),
                          loop=loop, http=protocol_class(limits),
                          timeout_keep_alive=limits.keep_alive,
                          limit_concurrency=limits.limit_concurrency,
                          timeout_graceful_shutdown=5)
