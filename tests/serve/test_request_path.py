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
