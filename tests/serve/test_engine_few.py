"""The engine's few-rows pass (:meth:`Engine._decide_few`, plain Python numbers) makes the
same decisions as the array pass, bit for bit: answers and journal rows (raw feature bytes
included) and the state after them.

ONE randomised test for the scalar forms of the rules it runs (``FeatureState.features_few``
/ ``decision_clock_few`` / ``advance_few``, ``SendHistory.counts_few`` / ``DayCount.get_few``,
``Guardrails.verdict_few``, ``MostActiveHour.send_few``, ``normalise_two`` / ``sample_two``,
``Subscriptions.get_few``): two servers from the same seed take the same random stream of
decide passes (1-34 users: both sides of ``FEW_ROWS``; sometimes with candidates), organic
events, feedback (opens, clicks, unsubscribes) and late decisions; one decides every pass with the
array pass (``few_rows = 0``), the other with the few-rows pass where it applies. Users
live in zones with non-whole-hour offsets and DST changes inside an hour bucket (Lord_Howe),
and the guardrails are tight, so blocked rows, fallbacks and sends all occur.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.policies.timing_baselines import MostActiveHour
from pushrl.rules.guardrails import Guardrails
from pushrl.serve.config import ServeConfig
from pushrl.serve.errors import ServeError
from pushrl.serve.policyset import Loaded
from pushrl.serve.rows import Columns
from pushrl.serve.schemas import DecideIn, Event, FeedbackIn
from pushrl.serve.server import Server

ROOT = Path(__file__).resolve().parents[2]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "America/Los_Angeles", "Australia/Lord_Howe", "Australia/Sydney"]
N_USERS = 60


def _server(tmp: Path, seed: int, few: bool, guard: Guardrails | None) -> Server:
    cfg = ServeConfig(registry=tmp / "policies", state=tmp / "state", seed=seed,
                      watch_seconds=0, catalog=ROOT / "simulator_data" / "synth",
                      sync="normal", guardrails=guard)
    srv = Server(cfg)
    srv.engine._id_prefix = "parity"  # (a random per-process prefix otherwise)
    if not few:
        srv.engine.few_rows = 0
    return srv


def _key(outs: Any, stmts: list[Any]) -> str:
    """Answers and journal rows as text (column-wise statements row by row)."""
    rows = [[sql, list(p.rows()) if isinstance(p, Columns) else p] for sql, p in stmts]
    return json.dumps([outs, rows], sort_keys=True,
                      default=lambda x: x.hex() if isinstance(x, bytes) else repr(x))


def _step(srv: Server, rng: np.random.Generator, t: int, items: list[str],
          recent: list[str]) -> tuple[str, list[str]]:
    """One random step on ``srv`` (``rng`` drawn identically for both servers)."""
    kind = rng.random()
    try:
        if kind < 0.6:
            late = rng.random() < 0.05  # a decision before a user's state: refused alike
            reqs = []
            for u in rng.choice(N_USERS, int(rng.integers(1, 35)), replace=False).tolist():
                cands = (None if rng.random() < 0.9 else
                         [items[int(i)] for i in rng.choice(len(items), 4, replace=False)])
                reqs.append(DecideIn(user_id=f"u{u}", ts=t - 7200 * late, candidates=cands))
            outs, s = srv.decide(reqs)
            srv.log.write(s)
            return _key(outs, s), [o["decision_id"] for o in outs if o["send"]]
        if kind < 0.85:
            evs = []
            for u in rng.choice(N_USERS, int(rng.integers(1, 8)), replace=False).tolist():
                e = ["session", "view", "cart", "purchase"][int(rng.integers(0, 4))]
                it = None if e == "session" else items[int(rng.integers(0, len(items)))]
                evs.append(Event(user_id=f"u{u}", event=e, ts=t - int(rng.integers(0, 5400)),
                                 item_id=it, revenue=10.0 if e == "purchase" else None))
            s = srv.events(evs)
            srv.log.write(s)
            return _key([], s), []
        if not recent:
            return "", []
        did = recent[int(rng.integers(0, len(recent)))]
        r = rng.random()
        fb = FeedbackIn(decision_id=did, opened=True, clicked=bool(r < 0.3) or None,
                        unsubscribed=True if r > 0.9 else None, ts=t)
        body, s, token = srv.feedback(fb)
        srv.log.write(s)
        srv.feedback_done(did, token)
        return _key(body, s), []
    except (ServeError, ValueError) as exc:
        return f"refused {type(exc).__name__}: {exc}", []


def _random_setup(seed: int) -> tuple[Guardrails | None, MostActiveHour | None]:
    """Seed 0: the server's defaults; others: random guardrails (0-9 quiet hours, possibly
    wrapping midnight or off; caps possibly off) and a random most-active-hour."""
    if seed == 0:
        return None, None
    rng = np.random.default_rng(1000 + seed)
    quiet = int(rng.integers(0, 24))
    guard = Guardrails(quiet_start=quiet, quiet_end=(quiet + int(rng.integers(0, 10))) % 24,
                       max_sends_per_day=int(rng.integers(0, 3)),
                       max_sends_per_week=int(rng.integers(0, 6)))
    k = int(rng.integers(1, 3))
    start = int(rng.integers(0, 24))
    pol = MostActiveHour(sends_per_day=k, pool=str(rng.choice(["day", "weekpart", "week"])),
                         min_gap_hours=int(rng.integers(0, 6)),
                         window=(start, (start + int(rng.integers(k, 20))) % 24))
    return guard, pol


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_few_rows_pass_equals_array_pass(tmp_path: Path, seed: int) -> None:
    guard, pol = _random_setup(seed)
    # t0 a few days before Lord_Howe's and Sydney's 2026 DST change (offsets move at hh:30)
    t0 = 1_790_900_000 + 3600 * int(np.random.default_rng(seed).integers(0, 96))
    few, arr = (_server(tmp_path / name, seed, f, guard)
                for name, f in (("few", True), ("arr", False)))
    for srv in (few, arr):
        if pol is not None:
            srv.engine.policies = replace(srv.engine.policies,
                                          timing=Loaded(pol, "most-active-hour@test"))
        stmts: list[Any] = []
        for k in range(N_USERS):
            stmts += srv.state.put_user(f"u{k}", ZONES[k % len(ZONES)], {}, t0 // 3600)[1]
        srv.log.write(stmts)
    items = [it.item_id for it in few.state.item_list]
    rngs = [np.random.default_rng(100 + seed), np.random.default_rng(100 + seed)]
    t, recent, n_few, n_sent = t0, [], 0, 0
    counted = few.engine._decide_few
    calls = {"covered": 0}

    def spy(rows: Any) -> Any:
        got = counted(rows)
        calls["covered"] += got is not None
        return got

    few.engine._decide_few = spy  # type: ignore[method-assign]
    for step in range(700):
        t += int(rngs[0].integers(0, 5400))
        rngs[1].integers(0, 5400)
        a, sent = _step(few, rngs[0], t, items, recent)
        b, _ = _step(arr, rngs[1], t, items, recent)
        assert a == b, f"step {step}: the passes differ"
        recent = (recent + sent)[-100:]
        n_sent += len(sent)
    n_few = calls["covered"]
    fa, fb = few.state.fs.to_arrays(), arr.state.fs.to_arrays()
    for name in fa:
        np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)
    # the stream exercised the pass: many covered passes, with sends and guardrail blocks
    assert n_few > 80 and n_sent > 10
    for srv in (few, arr):
        srv.log.close()
