"""Property: whatever the policy wants, served decisions never violate a guardrail."""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushrl.rules.guardrails import Guardrails
from pushrl.serve.app import create_app
from tests.serve.conftest import T0, AlwaysSend, CoinFlip, doubles, make_cfg

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Adelaide",
         "America/St_Johns", "Pacific/Chatham", "Pacific/Kiritimati"]


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    qs, qe = draw(st.integers(0, 23)), draw(st.integers(0, 23))
    cfg = Guardrails(qs, qe, draw(st.integers(0, 3)), draw(st.integers(0, 8)))  # 0 = no cap
    n_users = draw(st.integers(1, 4))
    tzs = [draw(st.sampled_from(ZONES)) for _ in range(n_users)]
    # per step: a time gap (minutes), and the users asked at that time
    steps = draw(st.lists(st.tuples(st.integers(0, 600), st.integers(1, (1 << n_users) - 1),
                                    st.booleans()), min_size=5, max_size=60))
    start = T0 + draw(st.integers(0, 200)) * 86400  # crosses DST changes in March/April
    return {"cfg": cfg, "tzs": tzs, "steps": steps, "start": start,
            "p": draw(st.sampled_from([1.0, 0.7]))}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_guardrails_never_violated(sc: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        timing = AlwaysSend() if sc["p"] == 1.0 else CoinFlip(sc["p"])
        app = create_app(make_cfg(Path(tmp), guardrails=sc["cfg"]),
                         overrides=doubles(timing=timing))
        kill_on: set[str] = set()
        with TestClient(app) as c:
            c.put("/v1/items/i0", json={})
            for i, tz in enumerate(sc["tzs"]):
                c.put(f"/v1/users/u{i}", json={"timezone": tz, "ts": sc["start"]})
            t, kill = sc["start"], False
            for gap, mask, toggle in sc["steps"]:
                t += gap * 60
                if toggle and gap % 7 == 0:
                    kill = not kill
                    c.put("/v1/kill-switch", json={"enabled": kill, "reason": "test"})
                reqs = [{"user_id": f"u{i}", "ts": t} for i in range(len(sc["tzs"]))
                        if mask >> i & 1]
                r = c.post("/v1/decide/batch", json={"requests": reqs})
                assert r.status_code == 200, r.text
                for d in r.json()["decisions"]:
                    if kill:
                        kill_on.add(d["decision_id"])
        rows = sqlite3.connect(Path(tmp) / "state" / "log.sqlite3").execute(
            "SELECT decision_id, user_id, ts, reason FROM decisions WHERE sent=1 ORDER BY ts"
        ).fetchall()
    cfg = sc["cfg"]
    per_day: Counter = Counter()
    sends: dict[str, list[int]] = {}
    for did, uid, ts, reason in rows:
        assert did not in kill_on, "sent while the kill switch was on"
        local = dt.datetime.fromtimestamp(ts, ZoneInfo(sc["tzs"][int(uid[1:])]))
        assert not cfg.quiet(local.hour), f"sent at local {local}"
        per_day[(uid, local.date())] += 1
        b = ts // 3600
        # the weekly window of a decision in bucket b: sends in buckets b-168 .. b before it
        window = [x for x in sends.setdefault(uid, []) if b - 168 <= x <= b]
        assert not cfg.max_sends_per_week or len(window) < cfg.max_sends_per_week, \
            "weekly cap exceeded"
        sends[uid].append(b)
        assert reason == "policy"
    assert not cfg.max_sends_per_day or max(per_day.values(), default=0) <= \
        cfg.max_sends_per_day, per_day
