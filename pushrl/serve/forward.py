"""How the router talks to a shard: a minimal keep-alive HTTP/1.1 client over asyncio streams.

Why not ``httpx`` (the one HTTP client installed): forwarding through ``httpx.AsyncClient``
cost ~3.0 ms of client CPU per request at 8 concurrent requests over a Unix socket on the
dev machine, against ~72 us for this client on the same socket in the same run, 41x
(``benchmarks/results/sharded_server.json``, ``engine_choice.forwarding_client``), so the
router would have cost several times the decisions it routes. A shard is our own uvicorn
server, so the client needs only what it sends: ``Content-Length`` bodies (chunked
answers are read too), no redirects, no TLS (use :class:`HttpxShard` for ``https://``
shards).

A connection idle for longer than :data:`IDLE_SECONDS` is not reused (the shard closes idle
keep-alive connections after 5 s): a request is never sent on a connection the shard may be
closing, so no request is retried and none can be applied twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

#: Seconds a pooled connection may idle before it is dropped (the shard's keep-alive is 5).
IDLE_SECONDS = 2.0
Headers = list[tuple[bytes, bytes]]


class ShardError(ConnectionError):
    """The shard could not be reached, or the connection broke before the whole answer."""


class ShardClient(Protocol):
    """What the router needs from a shard connection."""

    async def request(self, method: str, url: str, body: bytes, headers: Headers
                      ) -> tuple[int, Headers, bytes]:
        """``(status, headers with lower-case names, body)``; raises :class:`ShardError`."""

    async def aclose(self) -> None:
        """Close every connection."""


class StreamShard:
    """A shard at a Unix socket (``uds``) or ``host:port``, plain HTTP/1.1 with keep-alive.

    Args:
        uds: Unix socket path.
        host: Host (with ``port``) when there is no socket.
        port: TCP port.
        timeout: Seconds for one request (connect, send, answer).
    """

    def __init__(self, uds: str | None = None, host: str = "127.0.0.1", port: int = 80,
                 timeout: float = 600.0) -> None:
        self.uds, self.host, self.port, self.timeout = uds, host, port, timeout
        self._pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._host = (f"{host}:{port}" if uds is None else "shard").encode()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._pool:
            rd, wr, last = self._pool.pop()
            if now - last < IDLE_SECONDS and not wr.is_closing() and not rd.at_eof():
                return rd, wr
            wr.close()
        if self.uds is not None:
            return await asyncio.open_unix_connection(self.uds, limit=2**24)
        return await asyncio.open_connection(self.host, self.port, limit=2**24)

    async def request(self, method: str, url: str, body: bytes, headers: Headers
                      ) -> tuple[int, Headers, bytes]:
        try:
            return await asyncio.wait_for(self._request(method, url, body, headers),
                                          self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError, IndexError) as exc:
            raise ShardError(f"{type(exc).__name__}: {exc}") from None

    async def _request(self, method: str, url: str, body: bytes, headers: Headers
                       ) -> tuple[int, Headers, bytes]:
        rd, wr = await self._connect()
        ok = False
        try:
            head = [f"{method} {url} HTTP/1.1".encode(), b"host: " + self._host,
                    b"content-length: " + str(len(body)).encode()]
            head += [k + b": " + v for k, v in headers
                     if k not in (b"host", b"content-length", b"connection")]
            wr.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            raw = await rd.readuntil(b"\r\n\r\n")
            lines = raw[:-4].split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            hdr: Headers = []
            length, chunked, close = -1, False, False
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                k, v = k.strip().lower(), v.strip()
                hdr.append((k, v))
                if k == b"content-length":
                    length = int(v)
                elif k == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
                elif k == b"connection" and v.lower() == b"close":
                    close = True
            if chunked:
                out = await _chunks(rd)
            elif length >= 0:
                out = await rd.readexactly(length) if length else b""
            else:  # no length: the body runs to the end of the connection
                out, close = await rd.read(), True
            ok = not close
            return status, hdr, out
        finally:
            if ok:
                self._pool.append((rd, wr, time.monotonic()))
            else:
                wr.close()

    async def aclose(self) -> None:
        for _, wr, _ in self._pool:
            wr.close()
        self._pool.clear()


async def _chunks(rd: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await rd.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            await rd.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await rd.readexactly(size))
        await rd.readexactly(2)


class HttpxShard:
    """A shard behind an ``httpx.AsyncClient`` (``https://`` shards; in-process tests over
    ASGI). Costs more router CPU than :class:`StreamShard` (module docstring)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def request(self, method: str, url: str, body: bytes, headers: Headers
                      ) -> tuple[int, Headers, bytes]:
        import httpx

        try:
            r = await self.client.request(method, url, content=body or None, headers=headers)
        except httpx.TransportError as exc:
            raise ShardError(f"{type(exc).__name__}: {exc}") from None
        return (r.status_code, [(k.encode(), v.encode()) for k, v in r.headers.items()],
                r.content)

    async def aclose(self) -> None:
        await self.client.aclose()
