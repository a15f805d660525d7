"""Micro-batching of concurrent ``/v1/decide`` requests.

Requests are decided in vectorised passes through the pipeline and made durable by one group
commit per pass; each is answered only after its commit. A pass starts at the next event-loop
tick, unless the previous pass's commit is still in flight (an fsync): then the requests wait
for it and go together. They could not be answered earlier anyway (their commit would queue
behind it), so latency barely changes, while passes (and commits) get several times larger and
the per-request cost of the pipeline falls. A user with several waiting requests is decided
in order (one pass per repetition).

(Deciding the next pass while the previous one commits was tried, issue 20: the pass holds the
GIL while the writer thread needs it to bind its rows; commits took about twice as long and
8-connection throughput fell, measured under load 8. ``serve_decide_pass_rows`` shows the pass
sizes.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pushrl.serve.schemas import DecideIn

if TYPE_CHECKING:
    from pushrl.serve.server import Server


class DecisionBatcher:
    """Collects single decisions and runs them as batches on the server's engine."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self._waiting: list[tuple[DecideIn, asyncio.Future[dict[str, Any]]]] = []
        self._batch_scheduled = False
        self._in_flight = 0  # passes decided but not yet durable

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
        self._schedule(loop)
        return fut

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._waiting and not self._batch_scheduled and not self._in_flight:
            self._batch_scheduled = True
            loop.call_soon(self._run_batch)

    def _run_batch(self) -> None:
        busy = self.srv.busy
        if busy is not None:  # a worker thread works on the state: go once it is done
            busy.add_done_callback(lambda _: self._run_batch())
            return
        self._batch_scheduled = False
        waiting, self._waiting = self._waiting, []
        while waiting:
            batch: list[tuple[DecideIn, asyncio.Future[dict[str, Any]]]] = []
            later: list[tuple[DecideIn, asyncio.Future[dict[str, Any]]]] = []
            seen: set[str] = set()
            for item in waiting:  # one decision per user per pass
                (later if item[0].user_id in seen else batch).append(item)
                seen.add(item[0].user_id)
            waiting = later
            rows, futs = [], []
            for req, fut in batch:
                if fut.done():  # the client went away before its turn: do not decide
                    continue
                try:
                    row = self.srv.rows([req])[0]
                    self.srv.engine.check_row(row)
                except Exception as exc:
                    fut.set_exception(exc)
                    continue
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
            self.srv.commit_cb(stmts, self._finisher(outs, futs))

    def _finisher(self, outs: list[dict[str, Any]], futs: list[asyncio.Future[dict[str, Any]]]
                  ) -> Callable[[BaseException | None], None]:
        """The callback that answers a pass's requests once its commit is durable (on the
        loop, called by the log writer's wake-up: no task, no commit future)."""
        def finish(err: BaseException | None) -> None:
            self._in_flight -= 1
            asyncio.get_running_loop().call_soon(answer, err)

        def answer(err: BaseException | None) -> None:
            # one loop iteration after the commit (as when a task awaited it): the pass of
            # the requests that waited for it is scheduled, then these answers (the order
            # main had; answering first made passes smaller at concurrency 16, NOTES)
            self._schedule(asyncio.get_running_loop())
            for f, o in zip(futs, outs, strict=True):
                if not f.done():
                    if err is None:
                        f.set_result(o)
                    else:
                        f.set_exception(err)
        return finish
