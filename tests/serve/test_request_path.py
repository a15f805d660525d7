"""The request path around the engine pass (issue 20): the writer's callbacks, the fast
histograms and the unix-seconds fast path of the time validator give what they replace."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from pushrl.serve import schemas
from pushrl.serve.metrics import FastHistogram
from pushrl.serve.store import DurableLog
from tests.serve.conftest import FullDisk

_ROW = "INSERT INTO activity VALUES (?,?,?,?,?,?)"


@pytest.mark.parametrize("buckets", [
    (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
     1.0, 2.5),
    (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)])
def test_fast_histogram_exports_what_a_prometheus_histogram_exports(
        buckets: tuple[float, ...]) -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    slow = Histogram("x_seconds", "Doc.", buckets=buckets, registry=r1)
    fast = FastHistogram("x_seconds", "Doc.", buckets, r2)
    rng = random.Random(0)
    values: list[float] = [0, *buckets, 1e9, -1.0]  # every bucket edge (inclusive), beyond
    values += [rng.expovariate(1 / buckets[3]) for _ in range(2000)]
    values += [rng.randint(1, 300) for _ in range(200)]  # ints, as the commit sizes
    for v in values:
        slow.observe(v)
        fast.observe(v)

    def text(r: CollectorRegistry) -> str:
        return re.sub(r"_created \S+", "_created T", generate_latest(r).decode())

    assert text(r1) == text(r2)
    assert f'x_seconds_count {float(len(values))}' in text(r2)


def _outcome(v: Any) -> Any:
    try:
        return schemas._parse_ts(v)
    except ValueError as exc:
        return f"ValueError: {exc}"


def test_unix_seconds_fast_path_equals_the_general_path() -> None:
    """An int takes the fast path, the same number as an integral float the general one
    (``_json_int`` then the int branch): same datetime or same message, also at the edges
    of the 2000..2099 range and of the time window."""
    now = int(time.time())
    past, future = schemas._window
    corpus = [e + d for e in (schemas._MIN_SEC, schemas._MAX_SEC)
              for d in (-86400, -1, 0, 1, 86400)]
    # the window's edges move with the clock: 5 s off them (no flip between the two calls)
    corpus += [e + d for e in (now - past * schemas.DAY, now + future * schemas.DAY)
               for d in (-86400, -5, 5, 86400)]
    corpus += [now, 1_800_000_000, 0, -5, 10**12]
    corpus += random.Random(1).sample(range(schemas._MIN_SEC, schemas._MAX_SEC), 500)
    for v in corpus:
        assert type(_outcome(v)) is type(_outcome(float(v)))
        if isinstance(_outcome(v), str):  # messages name "now": allow a second's drift
            assert re.sub(r"\d[\d,]* days", "N days", _outcome(v)) == re.sub(
                r"\d[\d,]* days", "N days", _outcome(float(v))), v
        else:
            assert _outcome(v) == _outcome(float(v)), v
    # the inputs the fast path must leave alone
    assert _outcome(True).startswith("ValueError")
    assert _outcome("2027-01-15T08:00:00Z") == schemas._parse_ts(1_800_000_000)


def test_submit_callbacks_run_on_the_loop_after_the_commit_in_order(tmp_path: Path) -> None:
    log = DurableLog(tmp_path, sync="normal")
    got: list[tuple[str, Any]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def cb(name: str) -> Any:
            def call(err: BaseException | None) -> None:
                assert asyncio.get_running_loop() is loop  # on the loop, not the writer
                n = log.query("SELECT count(*) FROM activity")[0][0]  # durable by now
                got.append((name, err, n))
                if name == "c":
                    done.set_result(None)
            return call

        log.submit_cb([(_ROW, (1, "u", 0, "session", None, None))], cb("a"))
        fut = log.submit([(_ROW, (2, "u", 0, "session", None, None))])
        log.submit_cb([(_ROW, (3, "u", 0, "session", None, None))], cb("c"))
        await fut
        await done
        good = log._writer_conn
        log._writer_conn = FullDisk(good)  # type: ignore[assignment]
        failed = loop.create_future()
        log.submit_cb([(_ROW, (4, "u", 0, "session", None, None))],
                      lambda err: failed.set_result(err))
        err = await failed
        log._writer_conn = good
        got.append(("failed", type(err).__name__, None))

    try:
        asyncio.run(run())
    finally:
        log.close()
    assert got[0][:2] == ("a", None) and got[0][2] >= 1
    assert got[1] == ("c", None, 3)
    assert got[2] == ("failed", "OperationalError", None)


def _batcher_server(tmp: Path, n_users: int) -> Any:
    """A Server (no sockets) with users ``u0..`` and two items."""
    from pushrl.serve.server import Server
    from tests.serve.conftest import T0, doubles, make_cfg

    srv = Server(make_cfg(tmp, sync="normal"), overrides=doubles())
    stmts = []
    for j in range(2):
        stmts += srv.state.put_item(f"i{j}", "ab"[j], {"price": j})[1]
    for k in range(n_users):
        stmts += srv.state.put_user(f"u{k}", "UTC", {}, T0 // 3600)[1]
    srv.log.write(stmts)
    return srv



def _closed_loop(tmp: Path, clients: int, rounds: int, stop_after: int | None = None,
                 late: int = 0) -> tuple[float, float]:
    """``clients`` closed-loop clients (each decides again, an hour later, as soon as it is
    answered, as wrk's connections do); client 0 stops after ``stop_after`` answers; the
    last ``late`` clients start once the first pass is in flight. Returns the micro-batcher's
    (rows, passes)."""
    from pushrl.serve.schemas import DecideIn
    from tests.serve.conftest import T0

    srv = _batcher_server(tmp, clients)

    async def client(j: int) -> None:
        if j >= clients - late:
            while not srv.batcher._in_flight:
                await asyncio.sleep(0)
        for r in range(rounds if j or stop_after is None else stop_after):
            got = await asyncio.wait_for(srv.batcher.submit(
                DecideIn.model_validate({"user_id": f"u{j}", "ts": T0 + 3600 * (r + 1)})), 10)
            assert got["decision_id"]

    async def run() -> None:
        await asyncio.gather(*(client(j) for j in range(clients)))

    try:
        asyncio.run(run())
    finally:
        srv.log.close()
    text = generate_latest(srv.metrics.registry).decode()
    got = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
           if ln.startswith("serve_decide_pass_rows_")}
    return got["serve_decide_pass_rows_sum"], got["serve_decide_pass_rows_count"]


def test_answered_clients_are_decided_together(tmp_path: Path) -> None:
    """8 closed-loop clients that start as two groups (the second while the first's commit
    is in flight) end up in passes of 8: the next pass waits for the answered ones (without
    the wait the groups alternate in passes of 4 forever)."""
    rows, passes = _closed_loop(tmp_path, 8, 12, late=4)
    assert rows == 8 * 12
    assert rows / passes >= 6, (rows, passes)


def test_a_client_that_does_not_come_back_delays_one_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait ends at its deadline: the others are still decided (client 0 leaves after
    its first answer; the pass after it waits once, then no more)."""
    from pushrl.serve import batcher

    monkeypatch.setattr(batcher, "HOLD_SECONDS", 0.05)
    t0 = time.perf_counter()
    rows, _ = _closed_loop(tmp_path, 2, 6, stop_after=1)
    assert rows == 1 + 6
    assert time.perf_counter() - t0 < 5


def test_clients_that_do_not_come_back_stop_the_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open-loop traffic (each request from a new client): after a wait ran out, the next
    passes do not wait, more of them after each further one (each wait takes 0.25 s here: 12
    without the back-off, 4 with it: rounds 1, 3, 5 and 8)."""
    from pushrl.serve import batcher
    from pushrl.serve.schemas import DecideIn
    from tests.serve.conftest import T0

    monkeypatch.setattr(batcher, "HOLD_SECONDS", 0.25)
    srv = _batcher_server(tmp_path, 36)

    def one(u: int) -> Any:
        return srv.batcher.submit(DecideIn.model_validate({"user_id": f"u{u}", "ts": T0}))

    async def run() -> None:
        for r in range(12):  # a pass of 2 answered, then 1 new request: it waits for 2
            await asyncio.gather(one(3 * r), one(3 * r + 1))
            await one(3 * r + 2)

    t0 = time.perf_counter()
    try:
        asyncio.run(run())
    finally:
        srv.log.close()
    assert 1.0 <= time.perf_counter() - t0 < 2.0


def test_a_lone_client_never_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One client: each pass has what was expected (its one request), so no deadline is
    ever waited for (it would take 30 s here)."""
    from pushrl.serve import batcher

    monkeypatch.setattr(batcher, "HOLD_SECONDS", 30.0)
    t0 = time.perf_counter()
    rows, passes = _closed_loop(tmp_path, 1, 5)
    assert (rows, passes) == (5, 5)
    assert time.perf_counter() - t0 < 10
