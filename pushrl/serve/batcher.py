"""Micro-batching of concurrent ``/v1/decide`` requests.

Requests are decided in vectorised passes through the pipeline and made durable by one group
commit per pass; each is answered only after its commit. A pass starts at the next event-loop
tick, unless the previous pass's commit is still in flight (an fsync): then the requests wait
for it and go together. They could not be answered earlier anyway (their commit would queue
behind it), so latency barely changes, while passes (and commits) get several times larger and
the per-request cost of the pipeline falls. A user with several waiting requests is decided
in order (one pass per repetition).

A pass whose commit was answered is expected back: closed-loop clients send their next request
as soon as they get an answer. The next pass therefore waits until as many requests wait as
were answered plus those that waited then (at most :data:`HOLD_ROWS`), while they keep coming:
it goes once none came for :data:`HOLD_SECONDS`, or :data:`HOLD_MAX_SECONDS` after it began
waiting. After a wait that ran out (clients that do not come back: open-loop traffic, or a
client the machine's load held up), the next passes do not wait: 1 pass after a first such
wait, twice as many after each further one in a row (at most :data:`HOLD_BACKOFF`), until a
wait sees all it expected. Without the wait, two groups of clients alternate forever (one is
decided while the other's commit is in flight): 8 connections gave passes of ~4 rows, and the
pass's fixed cost (~0.7M instructions, about half a one-row request) was paid twice as often
(issue 20). The deadline follows the arrivals rather than the clock alone; under a profiler,
see :data:`_SCALE`.

(Deciding the next pass while the previous one commits was tried, issue 20: the pass holds the
GIL while the writer thread needs it to bind its rows; commits took about twice as long and
8-connection throughput fell, measured under load 8. ``serve_decide_pass_rows`` shows the pass
sizes.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pushrl.errors import PushrlError
from pushrl.serve.schemas import DecideIn

if TYPE_CHECKING:
    from pushrl.serve.server import Server

def _hold_scale() -> float:
    raw = os.environ.get("PUSHRL_HOLD_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = float("nan")
    if not scale > 0:
        raise PushrlError(f"PUSHRL_HOLD_SCALE must be a number > 0, got {raw!r}; unset it "
                          "for a server running at full speed")
    return scale


#: The most requests a pass waits for (beyond this many clients, passes are large anyway).
HOLD_ROWS = 16
#: The wait's deadlines are wall-clock times for a server at full speed: under a profiler
#: (callgrind runs the server ~50x slower) they are scaled by ``PUSHRL_HOLD_SCALE``, else the
#: answered clients' requests cannot be read before the deadline
#: (``benchmarks/server_instructions.py --closed`` sets it).
_SCALE = _hold_scale()
#: A waiting pass goes once no request came for this long (the loop's timers have
#: millisecond resolution) ...
HOLD_SECONDS = 0.001 * _SCALE
#: ... or this long after it began waiting.
HOLD_MAX_SECONDS = 0.004 * _SCALE
#: The most passes that do not wait after waits ran out.
HOLD_BACKOFF = 64


class DecisionBatcher:
    """Collects single decisions and runs them as batches on the server's engine."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self._waiting: list[tuple[DecideIn, asyncio.Future[dict[str, Any]]]] = []
        self._batch_scheduled = False
        self._in_flight = 0  # passes decided but not yet durable
        self._expect = 0  # requests the next pass waits for (module docstring)
        self._hold: asyncio.TimerHandle | None = None  # its deadline while it waits
        self._hold_times = [0.0, 0.0]  # (loop time) it began waiting, the last arrival
        self._backoff = 0  # passes left that do not wait (a wait ran out)
        self._backoff_next = 1  # ... after the next wait that runs out

    async def decide(self, req: DecideIn) -> dict[str, Any]:
        """One decision, micro-batched with the others that arrived in the same event-loop
        tick: one vectorised pass through the pipeline and one group commit for all of them
        (each user still sees its own requests in order)."""
        return await self.submit(req)

    def submit(self, req: DecideIn) -> asyncio.Future[dict[str, Any]]:
        """:meth:`decide` without its coroutine: the future of the answer (the hot path
        awaits it directly)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiting.append((req, fut))
        if self._hold is None:
            self._schedule(loop)
        elif len(self._waiting) >= self._expect:  # all that were expected came back
            self._hold.cancel()
            self._hold = None
            self._backoff_next = 1
            loop.call_soon(self._run_batch, False, loop)
        else:
            self._hold_times[1] = loop.time()
        return fut

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._waiting and not self._batch_scheduled and not self._in_flight:
            self._batch_scheduled = True
            loop.call_soon(self._run_batch, True, loop)

    def _run_batch(self, hold: bool = True,
                   loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Decide the waiting requests (``loop``: the running loop, when the caller has it:
        each ``asyncio.get_running_loop()`` is a ``getpid()`` system call)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        if hold and len(self._waiting) < self._expect:  # wait for the answered clients
            self._hold_times[:] = [loop.time()] * 2
            self._hold = loop.call_later(HOLD_SECONDS, self._release)
            return
        busy = self.srv.busy
        if busy is not None:  # a worker thread works on the state: go once it is done
            busy.add_done_callback(lambda _: self._run_batch(False, loop))
            return
        self._batch_scheduled = False
        self._expect = 0
        waiting, self._waiting = self._waiting, []
        while waiting:
            batch: list[tuple[DecideIn, asyncio.Future[dict[str, Any]]]] = []
            later: list[tuple[DecideIn, asyncio.Future[dict[str, Any]]]] = []
            seen: set[str] = set()
            for item in waiting:  # one decision per user per pass
                uid = item[0].user_id
                if uid in seen:
                    later.append(item)
                else:
                    seen.add(uid)
                    if not item[1].done():  # (else the client went away before its turn)
                        batch.append(item)
            waiting = later
            rows, futs = [], []
            for row, (_, fut) in zip(self.srv.pass_rows([req for req, _ in batch]), batch,
                                     strict=True):
                if isinstance(row, Exception):  # refused alone: only its own request fails
                    fut.set_exception(row)
                else:
                    rows.append(row)
                    futs.append(fut)
            if not rows:
                continue
            self.srv.metrics.pass_rows.observe(len(rows))
            try:
                outs, stmts = self.srv.engine.decide(rows)
            except Exception as exc:
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
                continue
            self._in_flight += 1
            self.srv.commit_cb(stmts, self._finisher(outs, futs, loop))

    def _release(self) -> None:
        """The wait's timer: wait on while requests keep coming (module docstring), else
        decide what came, after the requests the loop has read (timers run before the tasks
        of the last poll's requests)."""
        loop = asyncio.get_running_loop()
        now, (start, last) = loop.time(), self._hold_times
        if now - last < HOLD_SECONDS and now - start < HOLD_MAX_SECONDS:
            self._hold = loop.call_later(max(last + HOLD_SECONDS - now, 0.001), self._release)
            return
        self._hold = None
        self._backoff = self._backoff_next
        self._backoff_next = min(2 * self._backoff_next, HOLD_BACKOFF)
        loop.call_soon(self._run_batch, False, loop)

    def _finisher(self, outs: list[dict[str, Any]], futs: list[asyncio.Future[dict[str, Any]]],
                  loop: asyncio.AbstractEventLoop) -> Callable[[BaseException | None], None]:
        """The callback that answers a pass's requests once its commit is durable (on
        ``loop``, the running one, called by the log writer's wake-up: no task, no commit
        future)."""
        def finish(err: BaseException | None) -> None:
            self._in_flight -= 1
            loop.call_soon(answer, err)

        def answer(err: BaseException | None) -> None:
            # one loop iteration after the commit (as when a task awaited it): these answers,
            # then the next pass, which runs after their tasks sent them and waits for their
            # clients to come back (module docstring; answering first without the wait made
            # passes smaller at concurrency 16)
            for f, o in zip(futs, outs, strict=True):
                if not f.done():
                    if err is None:
                        f.set_result(o)
                    else:
                        f.set_exception(err)
            if self._backoff:
                self._backoff -= 1
            else:
                self._expect = min(len(futs) + len(self._waiting), HOLD_ROWS)
            self._schedule(loop)
        return finish
