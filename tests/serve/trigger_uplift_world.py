"""A seeded closed-loop trigger world around the real server app (per-kind holdout tests).

Users (UTC) and items go in over the API, then a week of sessions (even users active: two a day;
odd users one every other day, so ``activity_7d`` tells them apart), then EPISODES episodes
three days apart: each user views a browse item three times and carts a cart item (a
``browse`` and a ``cart`` trigger; the server's fixed 1 h delay, per-kind holdouts). The
sender pulls ``/v1/triggers/due`` every hour for 6 h. The response is the world's truth:

* **Organic**: every trigger's user buys its item on their own with probability
  ``P0[kind][active]`` (a ``purchase`` event 7-60 h after the event, after every send: it
  cancels nothing that was due), whatever the arm.
* **Push**: a sent push of a user who would not buy on their own converts with probability
  ``U[kind][active] / (1 - P0)`` (feedback ``converted``), so a treated trigger converts with
  ``P0 + U`` and a held-out one with ``P0``: the incremental conversions per trigger are
  exactly ``U[kind][active]``.

The truth of a kind is the mean of ``U`` over its triggers (every user has EPISODES of each
kind): :func:`truth`. A last session per user at the end closes every conversion window of
:data:`HORIZON_H` hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pushrl.units import HOUR

T0 = 1_772_409_600  # 2026-03-02T00:00:00Z, a Monday
EPISODES = 2
HORIZON_H = 72
#: Organic purchase probability per trigger, by kind and (inactive, active) user.
P0 = {"cart": (0.06, 0.16), "browse": (0.03, 0.08)}
#: Incremental conversions of a sent push, by kind and (inactive, active) user.
U = {"cart": (0.16, 0.05), "browse": (0.07, 0.02)}
#: The trigger rules of the server: cart and browse only (no win-back of the quiet users).
RULES = {"price_drop": {"enabled": False}, "back_in_stock": {"enabled": False},
         "winback": {"enabled": False}}
RULES_TOML = ("[triggers.price_drop]\nenabled = false\n[triggers.back_in_stock]\n"
              "enabled = false\n[triggers.winback]\nenabled = false\n")


@dataclass
class WorldRun:
    """What the loop did: sends and push conversions per kind, the end of the log."""

    sends: dict[str, int]
    converted: dict[str, int]
    end_ts: int


def active(n: int) -> np.ndarray:
    """``(n,)`` bool: user ``u{i}`` is an active one."""
    return np.arange(n) % 2 == 0


def truth(n: int) -> dict[str, float]:
    """Incremental conversions per trigger of a treated user, per kind."""
    a = active(n)
    return {k: float(np.where(a, u[1], u[0]).mean()) for k, u in U.items()}


def _post(c: Any, path: str, body: dict[str, Any]) -> Any:
    r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def run_world(c: Any, n: int, seed: int) -> WorldRun:
    """Drive the started client ``c`` (server with ``--triggers`` :data:`RULES`, open
    guardrails, a fixed delay) through the world (module docstring)."""
    rng = np.random.default_rng([seed, 2026])
    users = [f"u{i}" for i in range(n)]
    act = active(n)
    for j in range(2 * EPISODES):
        r = c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2], "features": {"price": 10}})
        assert r.status_code == 200, r.text
    for u in users:
        r = c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0})
        assert r.status_code == 200, r.text
    ev = [{"user_id": u, "event": "session", "ts": T0 + d * 24 * HOUR + 9 * HOUR + 60 * k + i}
          for i, u in enumerate(users) for d in range(7)
          for k in range(2 if act[i] else (1 if d % 2 == 0 else 0))]
    for s in range(0, len(ev), 4000):
        _post(c, "/v1/events", {"events": ev[s:s + 4000]})
    sends = {"cart": 0, "browse": 0}
    converted = {"cart": 0, "browse": 0}
    purchases: list[dict[str, Any]] = []
    e_ts = T0
    for e in range(EPISODES):
        e_ts = T0 + (7 + 3 * e) * 24 * HOUR + 10 * HOUR
        item = {"browse": f"i{2 * e}", "cart": f"i{2 * e + 1}"}
        ev = [{"user_id": u, "event": name, "item_id": item[kind], "ts": e_ts + 4 * i + k}
              for i, u in enumerate(users)
              for k, (name, kind) in enumerate([("view", "browse"), ("view", "browse"),
                                                ("view", "browse"), ("cart", "cart")])]
        _post(c, "/v1/events", {"events": ev})
        organic = {kind: rng.random(n) < np.where(act, P0[kind][1], P0[kind][0])
                   for kind in U}
        fb = []
        for h in range(1, 7):
            for s in _post(c, "/v1/triggers/due", {"users": users,
                                                   "ts": e_ts + h * HOUR})["sends"]:
                kind, i = s["kind"], int(s["user_id"][1:])
                sends[kind] += 1
                a = int(act[i])
                if not organic[kind][i] and rng.random() < U[kind][a] / (1 - P0[kind][a]):
                    converted[kind] += 1
                    fb.append({"decision_id": s["decision_id"], "opened": True,
                               "clicked": True, "converted": True,
                               "ts": e_ts + (h + 1) * HOUR})
        if fb:
            res = _post(c, "/v1/feedback/batch", {"feedback": fb})["results"]
            assert not any(x["late"] for x in res)  # every conversion counts
        for kind in U:
            for i in np.flatnonzero(organic[kind]):
                purchases.append({"user_id": users[i], "event": "purchase",
                                  "item_id": item[kind],
                                  "ts": e_ts + int(rng.uniform(7, 60) * HOUR)})
        purchases.sort(key=lambda x: x["ts"])
        _post(c, "/v1/events", {"events": purchases})
        purchases = []
    end = e_ts + (HORIZON_H + 2) * HOUR
    _post(c, "/v1/events", {"events": [{"user_id": u, "event": "session", "ts": end + i}
                                       for i, u in enumerate(users)]})
    return WorldRun(sends, converted, end + n)
