"""A seeded closed-loop trigger world around the real server app, with a known truth: the
per-kind holdout uplift fit (``pushrl uplift fit --trigger-kinds``) is checked against it by
``tests/serve/test_trigger_uplift_fit.py`` and ``benchmarks/trigger_uplift_coverage.py``.

It drives a started client (a FastAPI ``TestClient`` or anything with ``.put``/``.post``
returning responses) over the HTTP API only, like :mod:`pushrl.compare.served`; it imports
nothing of the server.

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

**Truth** (:func:`truth`): the mean of ``U`` over a kind's triggers (every user has EPISODES
of each kind, so it is the mean over users): the expected incremental conversions per
trigger of a kind when every trigger of it is pushed vs none, the population average
treatment effect of the kind's push on "the trigger's item is bought within
:data:`HORIZON_H` h, or its push converted". That is the estimand of the per-kind fit (its
``incremental``): in this world every treated trigger is sent (open guardrails; a due cart
push only delays a due browse push by one hourly pull), nothing cancels or expires first,
and the kinds' pushes are independent (a push moves only its own trigger's outcome), so
there is no gap between the two.

**Oracle** (:attr:`WorldRun.outcomes`): both potential outcomes of every trigger, so a
seed's error can be split into its parts (``benchmarks/trigger_uplift_diag.py``): ``y0`` =
organic; ``y1`` = organic or the push converted, the realised push coin for a sent trigger
and, for a held-out (unsent) one, a counterfactual coin of the same probability drawn from
its own stream (``default_rng([seed, 2026, 1])``), so the world's draws, and so the log,
are those of the world without the oracle.
A last session per user at the end closes every conversion window of :data:`HORIZON_H`
hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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
    """What the loop did.

    Attributes:
        sends, converted: Pushes sent and push conversions per kind.
        end_ts: The log's last event time.
        outcomes: One row per trigger (``EPISODES * 2 * n``): ``episode``, ``kind``,
            ``user_id``, ``active``, ``organic`` (bought on their own), ``sent`` (its push was
            pulled), ``push_converted``, and the potential outcomes ``y0`` / ``y1`` without /
            with the push (module docstring, **Oracle**); the observed outcome is ``y1``
            where ``sent`` else ``y0``.
    """

    sends: dict[str, int]
    converted: dict[str, int]
    end_ts: int
    outcomes: pd.DataFrame


def active(n: int) -> np.ndarray:
    """``(n,)`` bool: user ``u{i}`` is an active one."""
    return np.arange(n) % 2 == 0


def truth(n: int) -> dict[str, float]:
    """Incremental conversions per trigger of a treated user, per kind."""
    a = active(n)
    return {k: float(np.where(a, u[1], u[0]).mean()) for k, u in U.items()}


def _ok(r: Any) -> Any:
    """The JSON of a 200 answer; else RuntimeError with the server's answer."""
    if r.status_code != 200:
        raise RuntimeError(f"the server answered {r.status_code}: {r.text}")
    return r.json()


def _post(c: Any, path: str, body: dict[str, Any]) -> Any:
    return _ok(c.post(path, json=body))


def run_world(c: Any, n: int, seed: int) -> WorldRun:
    """Drive the started client ``c`` (server with ``--triggers`` :data:`RULES`, open
    guardrails, a fixed delay) through the world (module docstring)."""
    rng = np.random.default_rng([seed, 2026])
    cf_rng = np.random.default_rng([seed, 2026, 1])  # the oracle's counterfactual coins
    users = [f"u{i}" for i in range(n)]
    act = active(n)
    for j in range(2 * EPISODES):
        _ok(c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2], "features": {"price": 10}}))
    for u in users:
        _ok(c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": T0}))
    ev = [{"user_id": u, "event": "session", "ts": T0 + d * 24 * HOUR + 9 * HOUR + 60 * k + i}
          for i, u in enumerate(users) for d in range(7)
          for k in range(2 if act[i] else (1 if d % 2 == 0 else 0))]
    for s in range(0, len(ev), 4000):
        _post(c, "/v1/events", {"events": ev[s:s + 4000]})
    sends = {"cart": 0, "browse": 0}
    converted = {"cart": 0, "browse": 0}
    purchases: list[dict[str, Any]] = []
    rows: list[pd.DataFrame] = []
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
        sent = {kind: np.zeros(n, bool) for kind in U}
        pconv = {kind: np.zeros(n, bool) for kind in U}
        for h in range(1, 7):
            for s in _post(c, "/v1/triggers/due", {"users": users,
                                                   "ts": e_ts + h * HOUR})["sends"]:
                kind, i = s["kind"], int(s["user_id"][1:])
                sends[kind] += 1
                sent[kind][i] = True
                a = int(act[i])
                if not organic[kind][i] and rng.random() < U[kind][a] / (1 - P0[kind][a]):
                    converted[kind] += 1
                    pconv[kind][i] = True
                    fb.append({"decision_id": s["decision_id"], "opened": True,
                               "clicked": True, "converted": True,
                               "ts": e_ts + (h + 1) * HOUR})
        if fb:
            res = _post(c, "/v1/feedback/batch", {"feedback": fb})["results"]
            if any(x["late"] for x in res):  # every conversion must count
                raise RuntimeError("the server took a push conversion of the world as late")
        for kind in U:
            grp = act.astype(int)
            q = np.asarray(U[kind])[grp] / (1 - np.asarray(P0[kind])[grp])
            cf = ~organic[kind] & (cf_rng.random(n) < q)
            rows.append(pd.DataFrame({
                "episode": e, "kind": kind, "user_id": users, "active": act,
                "organic": organic[kind], "sent": sent[kind], "push_converted": pconv[kind],
                "y0": organic[kind],
                "y1": organic[kind] | np.where(sent[kind], pconv[kind], cf)}))
            for b in np.flatnonzero(organic[kind]):
                purchases.append({"user_id": users[b], "event": "purchase",
                                  "item_id": item[kind],
                                  "ts": e_ts + int(rng.uniform(7, 60) * HOUR)})
        purchases.sort(key=lambda x: x["ts"])
        _post(c, "/v1/events", {"events": purchases})
        purchases = []
    end = e_ts + (HORIZON_H + 2) * HOUR
    _post(c, "/v1/events", {"events": [{"user_id": u, "event": "session", "ts": end + i}
                                       for i, u in enumerate(users)]})
    return WorldRun(sends, converted, end + n, pd.concat(rows, ignore_index=True))
