"""``pushrl serve --shards N``: a parent process that runs N ``pushrl serve`` shard processes
and the :class:`~pushrl.serve.router.Router` in front of them.

Shard ``k`` is an ordinary server started as ``python -m pushrl serve ... --state
STATE/shard-k --uds STATE/shard-k.sock --shard k/N --watch-seconds 0 --seed SEED`` (every
other option as the parent got it): its own durable log and lock, the same registry, API
keys and guardrails. The pointer watcher is off: the router promotes on every shard at once.
A shard that exits is restarted (after 0.5 s, doubling to 30 s while it keeps failing);
until it answers again its users get ``503 shard_unavailable``, the other shards keep
answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json

from pushrl.serve.forward import HttpxShard, ShardClient, ShardError, StreamShard
from pushrl.serve.router import Router
from pushrl.serve.shards import Layout

log = logging.getLogger("pushrl.serve.supervisor")
#: First and longest wait (s) before restarting a shard that exited.
RESTART_SECONDS = (0.5, 30.0)
#: Seconds a starting shard has to answer /healthz.
START_SECONDS = 300.0


@dataclass
class Shard:
    """One shard process and how to reach it."""

    k: int
    sock: Path
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    client: StreamShard | None = None
    #: Why it takes no requests (None: up).
    down: str | None = "starting"
    restarts: int = 0
    started: float = 0.0
    exits: list[int] = field(default_factory=list)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A shard dies when the parent does (Linux): no orphan holds the state lock."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Supervisor:
    """Starts, watches and restarts the shards; owns the router's shard clients.

    Args:
        state: The sharded state directory.
        layout: Its layout (number of shards, decision seed).
        child_args: ``pushrl serve`` options every shard gets.
    """

    def __init__(self, state: Path, layout: Layout, child_args: list[str]) -> None:
        self.state = Path(state)
        self.layout = layout
        self.shards = [self._shard(k, child_args) for k in range(layout.shards)]
        self.router = Router(layout.shards, self._client, self._down, self.running,
                             status=self.status, on_stale=self.restart,
                             keyed="--api-keys" in child_args)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def _shard(self, k: int, child_args: list[str]) -> Shard:
        n = self.layout.shards
        d = self.layout.shard_dir(self.state, k)
        sock = self.state / f"shard-{k}.sock"
        argv = [sys.executable, "-m", "pushrl", "serve", *child_args, "--state", str(d),
                "--uds", str(sock), "--shard", f"{k}/{n}", "--watch-seconds", "0",
                "--seed", str(self.layout.seed)]
        return Shard(k, sock, argv)

    def _client(self, k: int) -> ShardClient | None:
        return self.shards[k].client

    def _down(self, k: int) -> str | None:
        return self.shards[k].down

    def status(self) -> dict[str, Any]:
        """``GET /v1/shards``: each shard's process, restarts and state."""
        return {"state": str(self.state), "seed": self.layout.seed, "detail": [
            {"shard": s.k, "pid": None if s.proc is None else s.proc.pid,
             "up": s.down is None, "down": s.down, "restarts": s.restarts,
             "exit_codes": s.exits[-5:], "socket": str(s.sock)} for s in self.shards]}

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start every shard, wait until all answer, watch them; stop them on exit."""
        for s in self.shards:
            s.client = StreamShard(uds=str(s.sock))
        await asyncio.gather(*(self._spawn(s) for s in self.shards))
        try:
            await asyncio.gather(*(self._wait_up(s) for s in self.shards))
            await self._align_generations()
        except BaseException:
            await self._stop()
            raise
        self._tasks = [asyncio.create_task(self._watch(s)) for s in self.shards]
        try:
            yield
        finally:
            await self._stop()

    async def _spawn(self, s: Shard) -> None:
        with contextlib.suppress(FileNotFoundError):
            s.sock.unlink()
        s.down = "starting"
        s.started = time.monotonic()
        s.proc = await asyncio.create_subprocess_exec(
            *s.argv, preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.info("shard %d started (pid %d)", s.k, s.proc.pid)

    async def _wait_up(self, s: Shard) -> None:
        """Until shard ``s`` answers /healthz (raises when it exits or takes too long)."""
        assert s.client is not None and s.proc is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if s.proc.returncode is not None:
                raise RuntimeError(f"shard {s.k} exited with code {s.proc.returncode} while "
                                   f"starting (its output is above; state "
                                   f"{self.layout.shard_dir(self.state, s.k)})")
            try:
                status, _, _ = await s.client.request("GET", "/healthz", b"", [])
                if status == 200:
                    s.down = None
                    log.info("shard %d up", s.k)
                    return
            except ShardError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"shard {s.k} did not answer within {START_SECONDS:.0f} s")

    async def _generation(self, s: Shard) -> int:
        assert s.client is not None
        status, _, body = await s.client.request("GET", "/v1/policies", b"", _router_key())
        if status != 200:
            raise ShardError(f"GET /v1/policies answered {status}: {body[:200]!r}")
        return int(json.loads(body)["generation"])

    async def _align_generations(self) -> None:
        """Every shard on shard 0's policy generation (they all read the same pointer at
        start; a shard that started before a promote on the command line reloads)."""
        try:
            gens = [await self._generation(s) for s in self.shards]
        except ShardError as exc:
            log.warning("could not read the shards' policy generations (%s); with --api-keys "
                        "set PUSHRL_ROUTER_KEY to an admin key", exc)
            return
        self.router.generation = gens[0]
        for s, g in zip(self.shards, gens, strict=True):
            if g != gens[0]:
                assert s.client is not None
                await s.client.request("POST", "/v1/policies/reload", b"", _router_key())

    async def _watch(self, s: Shard) -> None:
        """Restart shard ``s`` whenever it exits (unless the parent is stopping)."""
        delay = RESTART_SECONDS[0]
        while not self._stopping:
            assert s.proc is not None
            code = await s.proc.wait()
            if self._stopping:
                return
            s.down = f"process exited with code {code}; restarting"
            s.exits.append(code)
            log.error("shard %d (pid %d) exited with code %d; its users get 503 until it is "
                      "restarted", s.k, s.proc.pid, code)
            if time.monotonic() - s.started > 60:
                delay = RESTART_SECONDS[0]  # it ran a while: not a crash loop
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESTART_SECONDS[1])
            s.restarts += 1
            try:
                await self._spawn(s)
                await self._wait_up(s)
                gen = self.router.generation
                if gen is not None and await self._generation(s) != gen:
                    s.down = f"restarted on another policy generation than {gen}"
                    log.error("shard %d: %s", s.k, s.down)
                    continue
                self.router.stale.pop(s.k, None)
                log.warning("shard %d restarted (restart %d)", s.k, s.restarts)
            except Exception as exc:
                s.down = f"restart failed: {exc}"
                log.error("shard %d: %s", s.k, s.down)
                if s.proc is not None and s.proc.returncode is None:
                    s.proc.terminate()

    def restart(self, k: int) -> None:
        """Stop shard ``k``; its watcher starts it again (on the current pointer)."""
        p = self.shards[k].proc
        if p is not None and p.returncode is None:
            p.terminate()

    async def _stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for s in self.shards:
            if s.proc is not None and s.proc.returncode is None:
                s.proc.terminate()
        for s in self.shards:
            if s.proc is not None:
                try:
                    await asyncio.wait_for(s.proc.wait(), 20)
                except TimeoutError:
                    s.proc.kill()
                    await s.proc.wait()
            if s.client is not None:
                await s.client.aclose()
                s.client = None


def run_sharded(cfg: Any, shards: int, child_args: list[str], *, host: str, port: int,
                limits: Any, log_level: str) -> None:
    """Run ``pushrl serve --shards`` until stopped (SIGINT/SIGTERM stop the shards too).

    Args:
        cfg: The parent's :class:`~pushrl.serve.config.ServeConfig` (its ``state`` is the
            sharded state dir, its ``seed`` the decision seed, its time window the router's
            request validation).
        shards: Number of shards (>= 2).
        child_args: Options every shard gets (``pushrl serve`` syntax).
        host: Router bind address.
        port: Router port.
        limits: HTTP limits of the router (:class:`~pushrl.serve.timeouts.HttpLimits`).
        log_level: uvicorn log level.
    """
    import uvicorn

    from pushrl.serve.schemas import set_time_window
    from pushrl.serve.shards import init_layout
    from pushrl.serve.timeouts import uvicorn_config

    layout = init_layout(cfg.state, shards, cfg.seed)
    set_time_window(*cfg.time_window_days)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per forwarded request
    sup = Supervisor(cfg.state, layout, child_args)
    uvicorn.Server(uvicorn_config(sup.router, host=host, port=port, limits=limits,
                                  log_level=log_level)).run()


def run_router(cfg: Any, urls: list[str], *, host: str, port: int, limits: Any,
               log_level: str) -> None:
    """Run only the router, over shard servers started elsewhere (``--shard-url``, one per
    shard in shard order, each ``pushrl serve --shard k/N --watch-seconds 0`` with the same
    ``--seed``). Nothing supervises them: a shard that does not answer gets its users a 503
    until it does."""
    import uvicorn

    from pushrl.errors import PushrlError
    from pushrl.serve.schemas import set_time_window
    from pushrl.serve.timeouts import uvicorn_config

    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise PushrlError(f"--shard-url {u!r}: give an http(s):// URL of a shard server")
    set_time_window(*cfg.time_window_days)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    clients: list[ShardClient] = []

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        clients.extend(_remote(u) for u in urls)
        try:
            status, _, body = await clients[0].request("GET", "/v1/policies", b"",
                                                       _router_key())
            router.generation = int(json.loads(body)["generation"]) if status == 200 else None
        except (ShardError, ValueError, KeyError) as exc:
            log.warning("shard 0 (%s) did not give its policy generation: %s", urls[0], exc)
        try:
            yield
        finally:
            for c in clients:
                await c.aclose()

    router = Router(len(urls), lambda k: clients[k] if clients else None, lambda k: None,
                    lifespan, status=lambda: {"shard_urls": urls},
                    keyed=cfg.api_keys is not None)
    uvicorn.Server(uvicorn_config(router, host=host, port=port, limits=limits,
                                  log_level=log_level)).run()


def _router_key() -> list[tuple[bytes, bytes]]:
    key = os.environ.get("PUSHRL_ROUTER_KEY")  # with --api-keys: an admin key
    return [(b"authorization", f"Bearer {key}".encode())] if key else []


def _remote(url: str) -> ShardClient:
    """The client of a ``--shard-url``: keep-alive streams for http, httpx for https."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    if u.scheme == "http":
        return StreamShard(host=u.hostname or "127.0.0.1", port=u.port or 80)
    import httpx

    return HttpxShard(httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0,
                                                                             connect=5.0)))
