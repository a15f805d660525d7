"""The synthetic world with trigger dynamics (issue #16): `pushrl data synth --world triggers`.

On top of the default world's users, rhythms, organic sessions and scheduled pushes
(:func:`pushrl.data.synth.generate`, world family ``triggers``: no in-session cart purchases,
fewer scheduled pushes), this world adds:

* **Item updates**: each item's price changes (drops of 10-35 % or rises back) and stock-outs
  of 12-72 h as Poisson events (``item_updates`` table).
* **Triggers** from the one definition (:class:`~pushrl.rules.triggers.TriggerTracker`, the
  world's :data:`WORLD_TRIGGERS` config) fed with every activity event and item update.
* **Purchase intent** per trigger: ``I(t) = I0 * exp(-(t - t0) / tau)``, with
  ``logit I0 = a_kind + b_z z + b_price log(price / median) + b_aff log affinity`` and
  ``tau = tau_kind * (sessions_per_day / 1.6) ** -0.5`` (frequent visitors decide faster).
* **Organic return**: at each of the user's organic sessions (the default world's Poisson
  sessions, rate ``lambda(t)``) the user buys the item with probability ``c * I(t)``, with
  or without a push; a purchase ends the intent and cancels the trigger (tracker). A cart or
  browse event is followed by ``Poisson(continuation_kind)`` more visits at
  ``Exp(continuation_h)`` hours (the user is still shopping; logged as sessions), each also a
  chance ``c * I(t)`` to buy: the "would have bought anyway" share right after the event.
* **Push response**: a trigger push sent at ``t`` (the delay arm's due time, polled at hour
  starts, re-queued by quiet hours and caps) is opened with
  ``sigmoid(open_logit(local hour, affinity, z) + open_shift)`` (the default world's open
  model, no fatigue) and, if opened, converts with ``min(1, boost * I(t))``; it unsubscribes
  with the default world's hazard.
* **Logging policy**: each trigger's arm is drawn at creation from
  ``0.5 * [arm = 1 h] + 0.5 * uniform(arms incl. drop)``; ``triggers.pscore`` logs it.

**Truth** (``ground_truth_triggers.parquet``, one row per trigger): with
``S(a, b) = exp(-c * integral_a^b lambda(t) I(t) dt)`` (the Poisson probability of no organic
purchase; ``lambda`` includes the continuation visits' rate
``n_kind / continuation_h * exp(-(t - t0) / continuation_h)``),
``p_organic = 1 - S(t0, t0 + H)`` and, for arm ``d`` sent at ``t_d``
(:func:`~pushrl.sim.trigger_send.send_times`), the expected **incremental** conversion
``incr_d = S(t0, H) * p_open(t_d) * min(1, boost * I(t_d))`` (0 for drop and for sends after
expiry), the expected sends ``send_d = S(t0, t_d)`` (a purchase before the push cancels it)
and the revenue ``incr_d * price``. It is exact for this process except where caps delay a
send, or where two triggers of one user and item fall within the horizon (each has its own
intent and push; column ``overlap``): their outcomes include each other's.
"""

from __future__ import annotations

import bisect
import heapq
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.data.io import Dataset, from_unix_seconds, to_unix_seconds, write_dataset, write_table
from pushrl.data.synth import CATEGORIES, SynthConfig, TrueWorld, generate
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import KINDS, TriggerConfig, TriggerKind, TriggerStatus, TriggerTracker
from pushrl.sim.trigger_send import send_times
from pushrl.units import DAY, HOUR

#: The trigger rules of the world (defaults, win-back after 7 days, cancelled by a purchase).
WORLD_TRIGGERS: dict[str, dict[str, Any]] = {
    "winback": {"inactive_days": 7, "cancel": "item_purchase"}}
#: Guardrails the world's sender applies: the default quiet hours; caps loose enough that
#: they almost never delay a trigger push (6/day, 30/week), so the truth's send times are
#: exact (with the default 2/day, 29 % of trigger pushes waited ~16 h for the cap). How caps
#: shared with scheduled pushes re-queue triggers is the tracker's rule, tested on its own.
WORLD_GUARDRAILS = Guardrails(quiet_start=22, quiet_end=8, max_sends_per_day=6,
                              max_sends_per_week=30)
TRUTH_FILE = "ground_truth_triggers.parquet"


@dataclass(frozen=True)
class TriggerWorldParams:
    """Ground-truth parameters of the trigger dynamics (per kind in :data:`KINDS` order:
    cart, browse, price_drop, back_in_stock, winback)."""

    intent_logit: tuple[float, ...] = (-0.6, -1.8, -1.2, -0.8, -2.6)
    tau_h: tuple[float, ...] = (6.0, 4.0, 30.0, 48.0, 72.0)
    intent_engagement: float = 0.4
    intent_price: float = -0.5
    intent_affinity: float = 0.4
    tau_activity: float = -0.5
    organic_buy: float = 0.6
    push_boost: float = 1.8
    open_shift: float = 0.8
    horizon_h: int = 168
    continuation: tuple[float, ...] = (1.2, 0.8, 0.0, 0.0, 0.0)
    continuation_h: float = 0.75
    price_changes_per_day: float = 0.05
    drop_share: float = 0.6
    stockouts_per_day: float = 0.015
    log_1h_share: float = 0.5


def arm_probs(arms: tuple[int | None, ...], share_1h: float) -> np.ndarray:
    """The logging policy's arm probabilities (module docstring), shape ``(len(arms),)``."""
    p = np.full(len(arms), (1 - share_1h) / len(arms))
    p[arms.index(1)] += share_1h
    return p


@dataclass
class _Created:
    rows: list[tuple[Any, ...]]

    def add(self, *row: Any) -> None:
        self.rows.append(row)


class _Sends:
    """Per-user send times (scheduled + triggered) for the caps."""

    def __init__(self, users: np.ndarray, ts: np.ndarray) -> None:
        self.by_user: dict[int, list[int]] = {}
        order = np.lexsort((ts, users))
        for u, t in zip(users[order].tolist(), ts[order].tolist(), strict=True):
            self.by_user.setdefault(u, []).append(t)

    def add(self, user: int, ts: int) -> None:
        bisect.insort(self.by_user.setdefault(user, []), ts)

    def counts(self, user: int, now: int, day_start: int) -> tuple[int, int]:
        s = self.by_user.get(user, [])
        hi = bisect.bisect_right(s, now)
        return (hi - bisect.bisect_left(s, day_start),
                hi - bisect.bisect_left(s, now - 7 * DAY))


def _item_updates(items: pd.DataFrame, start: int, end: int, p: TriggerWorldParams,
                  rng: np.random.Generator) -> pd.DataFrame:
    rows: list[tuple[int, int, float | None, bool | None]] = []
    days = (end - start) / DAY
    for j, price0 in enumerate(items["price"].to_numpy(float)):
        n = rng.poisson(p.price_changes_per_day * days)
        price = price0
        for t in np.sort(rng.integers(start, end, n)):
            if rng.random() < p.drop_share:
                price = round(price * (1 - rng.uniform(0.10, 0.35)), 2)
            else:
                price = round(price0 * rng.uniform(0.95, 1.1), 2)
            rows.append((j, int(t), price, None))
        for t in np.sort(rng.integers(start, end, rng.poisson(p.stockouts_per_day * days))):
            back = int(t + rng.uniform(12, 72) * HOUR)
            rows.append((j, int(t), None, False))
            if back < end:
                rows.append((j, back, None, True))
    df = pd.DataFrame(rows, columns=["item", "ts", "price", "in_stock"])
    return df.sort_values(["ts", "item"], kind="stable").reset_index(drop=True)


def generate_triggers(cfg: SynthConfig, tp: TriggerWorldParams | None = None,
                      progress: Callable[[int, int], None] | None = None
                      ) -> tuple[Dataset, dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Generate the trigger world (module docstring).

    Returns:
        ``(dataset, ground_truth, ground_truth_users, trigger_truth)``.
    """
    tp = tp or TriggerWorldParams()
    ds, gt, gt_users = generate(cfg)
    run = _Run(cfg, tp, ds, gt_users)
    run.run(progress)
    truth = _truth(run.created.rows, run.config, run.clock, run.world, tp, run.g, run.spd)
    ds2 = _assemble(ds, run.tracker, run.created.rows, run.out_push, run.out_act, run.visits,
                    run.decision_ids, run.upd, run.uids, run.iids, ds.items)
    gt = {**gt, "triggers": {"params": asdict(tp), "config": run.config.to_dict(),
                             "guardrails": run.g.to_dict(), "overlapping_intents": run.overlap,
                             "truth_file": TRUTH_FILE,
                             "notes": "see pushrl.sim.trigger_world"}}
    ds2.meta = {**ds.meta, "world": "triggers"}
    return ds2, gt, gt_users, truth


class _Run:
    """One generation of the trigger dynamics over a default-world log (module docstring)."""

    def __init__(self, cfg: SynthConfig, tp: TriggerWorldParams, ds: Dataset,
                 gt_users: pd.DataFrame) -> None:
        self.tp = tp
        self.rng = np.random.default_rng([cfg.seed, 16])
        self.world = world = TrueWorld(cfg.params, gt_users, ds.items)
        items = ds.items
        self.uids = ds.users["user_id"].astype(str).to_numpy()
        self.iids = items["item_id"].astype(str).to_numpy()
        self.start = int(pd.Timestamp(cfg.start).timestamp())
        self.end = self.start + cfg.days * DAY
        spec = FeatureSpec(tuple(CATEGORIES), {}, tuple([1 / 168] * 168),
                           tuple([1 / len(CATEGORIES)] * len(CATEGORIES)))
        self.clock = FeatureState(spec, ds.users["timezone"].astype(str).tolist(),
                                  self.start // HOUR)
        self.config = TriggerConfig.parse(WORLD_TRIGGERS)
        self.tracker = TriggerTracker(self.config)
        self.g = WORLD_GUARDRAILS
        self.upd = _item_updates(items, self.start, self.end, tp, self.rng)
        self.price_now = items["price"].to_numpy(float).copy()
        self.median_price = float(np.median(self.price_now))
        for j in range(len(items)):
            self.tracker.set_item(j, price=float(self.price_now[j]), in_stock=True)
        self.spd = gt_users["sessions_per_day"].to_numpy(float)
        self.kidx = {k: n for n, k in enumerate(KINDS)}
        self.top_cat = np.argmax(world.pref, axis=1)
        self.cat_items = [np.flatnonzero(world.item_cat == c) for c in range(len(CATEGORIES))]
        act = ds.activity
        self.a_ts = to_unix_seconds(act["ts"])
        self.a_u = np.asarray(pd.Categorical(act["user_id"].astype(str),
                                             categories=self.uids).codes)
        self.a_ev = act["event"].astype(str).to_numpy()
        self.a_it = np.asarray(pd.Categorical(act["item_id"].astype(object),
                                              categories=self.iids).codes)
        p = ds.pushes
        sent = p["sent"].to_numpy(bool)
        self.sends = _Sends(np.asarray(pd.Categorical(p["user_id"].astype(str),
                                                      categories=self.uids).codes)[sent],
                            to_unix_seconds(p["ts"])[sent])
        self.alive = np.ones(len(self.uids), bool)
        self.intents: dict[str, tuple[int, int, float, float, int]] = {}  # user,item,I0,tau,t0
        self.by_user: dict[int, set[str]] = {}
        self.created = _Created([])  # per trigger: the truth's inputs
        self.arm_cache: dict[TriggerKind, tuple[tuple[int | None, ...], np.ndarray]] = {}
        self.out_push: list[tuple[Any, ...]] = []
        self.out_act: list[tuple[int, int, int, float]] = []  # user, ts, item, revenue
        self.visits: list[tuple[int, int]] = []
        self.decision_ids: dict[str, int] = {}
        self.next_decision = int(p["decision_id"].max()) + 1 if len(p) else 0
        self.overlap = 0
        # purchases (item >= 0) and continuation visits (item -1, trigger id) in time order
        self.pending: list[tuple[int, int, int, str]] = []

    def run(self, progress: Callable[[int, int], None] | None) -> None:
        # one time-ordered stream: (ts, order, kind, index); polls at every hour start
        events = [(int(t), 1, 0, k) for k, t in enumerate(self.a_ts)]
        events += [(int(t), 1, 1, k) for k, t in enumerate(self.upd["ts"].to_numpy())]
        events += [(h, 0, 2, 0) for h in range(self.start, self.end + 1, HOUR)]
        events.sort()
        for n, (ts, _, kind, k) in enumerate(events):
            self.flush(ts)
            if kind == 0:
                self.activity(ts, k)
            elif kind == 1:
                self.item_update(ts, k)
            else:
                self.on_created(self.tracker.advance(ts), ts)
                users = np.array(self.tracker.users_with_open(), np.int64)
                if users.size:
                    self.poll(ts, users)
            if progress is not None and n % 50_000 == 0:
                progress(n, len(events))
        self.flush(self.end + 30 * DAY)

    # --------------------------------------------------------------- intents
    def intent_now(self, tid: str, t: int) -> float:
        _, _, i0, tau, t0 = self.intents[tid]
        return i0 * float(np.exp(-(t - t0) / HOUR / tau))

    def consume(self, user: int, item: int) -> None:
        """A purchase of ``item`` ends the user's intents on it (and win-back intents)."""
        for tid in list(self.by_user.get(user, ())):
            t = self.tracker.get(tid)
            if self.intents[tid][1] == item or (t is not None and t.item is None):
                self.by_user[user].discard(tid)

    def buy(self, user: int, item: int, ts: int) -> None:
        self.out_act.append((user, ts, item, float(self.price_now[item])))
        heapq.heappush(self.pending, (ts, user, item, ""))
        self.consume(user, item)

    def on_created(self, trigs: list[Any], ts: int) -> None:
        """Intent, logged arm and continuation visits of each new open trigger."""
        tp, world, rng = self.tp, self.world, self.rng
        for t in trigs:
            if not t.is_open:
                continue
            u = t.user
            item = t.item if t.item is not None else int(
                rng.choice(self.cat_items[int(self.top_cat[u])]))
            k = self.kidx[t.kind]
            log_aff = float(world.log_affinity(np.array([u]), np.array([item]))[0])
            logit = (tp.intent_logit[k] + tp.intent_engagement * world.z[u]
                     + tp.intent_price * np.log(self.price_now[item] / self.median_price)
                     + tp.intent_affinity * log_aff)
            i0 = float(1 / (1 + np.exp(-logit)))
            tau = tp.tau_h[k] * (self.spd[u] / 1.6) ** tp.tau_activity
            if any(self.intents[o][1] == item for o in self.by_user.get(u, ())):
                self.overlap += 1
            self.intents[t.trigger_id] = (u, item, i0, tau, t.event_ts)
            self.by_user.setdefault(u, set()).add(t.trigger_id)
            if t.kind not in self.arm_cache:
                arms = self.config[t.kind].arms
                self.arm_cache[t.kind] = (arms, arm_probs(arms, tp.log_1h_share))
            arms, probs = self.arm_cache[t.kind]
            a = int(rng.choice(len(arms), p=probs))
            self.tracker.decide(t.trigger_id, arms[a], float(probs[a]), ts)
            self.created.add(t.trigger_id, u, k, item, t.event_ts, i0, tau, log_aff,
                             float(self.price_now[item]))
            for dt_h in rng.exponential(tp.continuation_h, rng.poisson(tp.continuation[k])):
                heapq.heappush(self.pending, (t.event_ts + 1 + int(dt_h * HOUR), u, -1,
                                              t.trigger_id))

    # ---------------------------------------------------------------- events
    def flush(self, until: int) -> None:
        """Purchases and continuation visits up to ``until``."""
        while self.pending and self.pending[0][0] <= until:
            pts, pu, pi, tid = heapq.heappop(self.pending)
            if pi >= 0:
                self.on_created(self.tracker.observe_activity(pu, pts, "purchase", pi), pts)
                continue
            self.visits.append((pu, pts))
            self.on_created(self.tracker.observe_activity(pu, pts, "session"), pts)
            if tid in self.by_user.get(pu, ()) and self.rng.random() < (
                    self.tp.organic_buy * self.intent_now(tid, pts)):
                self.buy(pu, self.intents[tid][1], pts + 1)

    def activity(self, ts: int, k: int) -> None:
        u, ev = int(self.a_u[k]), str(self.a_ev[k])
        it = int(self.a_it[k]) if self.a_it[k] >= 0 else None
        self.on_created(self.tracker.observe_activity(u, ts, ev, it), ts)
        if ev != "session":
            return
        for tid in sorted(self.by_user.get(u, ())):  # an organic visit: intents may convert
            if ts - self.intents[tid][4] > self.tp.horizon_h * HOUR:
                self.by_user[u].discard(tid)
            elif self.rng.random() < self.tp.organic_buy * self.intent_now(tid, ts):
                self.buy(u, self.intents[tid][1], ts + 1)
                break

    def item_update(self, ts: int, k: int) -> None:
        r = self.upd.iloc[k]
        j = int(r["item"])
        pr = None if pd.isna(r["price"]) else float(r["price"])
        st = None if pd.isna(r["in_stock"]) else bool(r["in_stock"])
        if pr is not None:
            self.price_now[j] = pr
        self.on_created(self.tracker.observe_item_update(j, ts, pr, st), ts)

    def poll(self, now: int, users: np.ndarray) -> None:
        """Send the triggers due at hour start ``now`` (the tracker's resolution)."""
        world, tp, rng = self.world, self.tp, self.rng
        hour, dow, _ = self.clock.local_time_at(users, np.full(users.shape, now, np.int64))
        off = self.clock.tzt.offset_seconds(self.clock.a.tz_idx[users],
                                            np.full(users.shape, now // HOUR))
        day_start = now - (now + off) % DAY
        counts = np.array([self.sends.counts(int(u), now, int(d))
                           for u, d in zip(users, day_start, strict=True)]).reshape(-1, 2)
        res = self.tracker.resolve_due(now, users.tolist(), self.g, hour, counts[:, 0],
                                       counts[:, 1], self.alive[users])
        for t in res.sent:
            u = t.user
            item = self.intents[t.trigger_id][1]
            j = int(np.searchsorted(users, u))
            log_rel = np.log(world.rel_activity[u, int(dow[j] >= 5), int(hour[j])])
            log_aff = world.log_affinity(np.array([u]), np.array([item]))[0]
            logit = world.open_logit_given(log_rel, log_aff, world.z[u], 0.0, 0.0)
            opened = bool(rng.random() < 1 / (1 + np.exp(-(logit + tp.open_shift))))
            live = t.trigger_id in self.by_user.get(u, ())
            converted = opened and live and bool(
                rng.random() < min(1.0, tp.push_boost * self.intent_now(t.trigger_id, now)))
            unsub = bool(rng.random() < float(world.unsub_hazard(np.array([u]),
                                                                 np.array([0.0]))[0]))
            did = self.next_decision + len(self.out_push)
            self.decision_ids[t.trigger_id] = did
            self.out_push.append((did, u, now, item, t.pscore, opened, converted, converted,
                                  unsub, t.trigger_id))
            self.sends.add(u, now)
            if converted:
                self.buy(u, item, now + 300)
            if unsub:
                self.alive[u] = False


def _truth(rows: list[tuple[Any, ...]], config: TriggerConfig, clock: FeatureState,
           world: TrueWorld, tp: TriggerWorldParams, g: Guardrails,
           spd: np.ndarray) -> pd.DataFrame:
    """Per trigger: organic probability and, per arm, expected incremental conversion,
    sends and revenue (module docstring)."""
    cols = ["trigger_id", "user", "kind", "item", "t0", "i0", "tau", "log_aff", "price"]
    c = pd.DataFrame(rows, columns=cols)
    if not len(c):
        return c
    u = c["user"].to_numpy(np.int64)
    t0 = c["t0"].to_numpy(np.int64)
    i0, tau = c["i0"].to_numpy(float), c["tau"].to_numpy(float)
    H = tp.horizon_h
    grid = (t0 // HOUR)[:, None] * HOUR + np.arange(H + 2)[None, :] * HOUR  # hour starts
    hour, dow, _ = clock.local_time_at(np.broadcast_to(u[:, None], grid.shape), grid)
    lam = world.rate[u[:, None], (dow >= 5).astype(np.int64), hour]  # sessions per hour
    a = np.maximum(grid[:, :-1], t0[:, None])
    b = np.maximum(grid[:, 1:], t0[:, None])
    end = (t0 + H * HOUR)[:, None]
    a, b = np.minimum(a, end), np.minimum(b, end)
    th = tau[:, None] * HOUR
    integral = i0[:, None] * tau[:, None] * (np.exp(-(a - t0[:, None]) / th)
                                             - np.exp(-(b - t0[:, None]) / th))
    n_cont = np.array(tp.continuation)[c["kind"].to_numpy()][:, None]
    r = 1 / tp.continuation_h + 1 / tau[:, None]  # per hour
    cont = (n_cont / tp.continuation_h * i0[:, None] / r
            * (np.exp(-r * (a - t0[:, None]) / HOUR) - np.exp(-r * (b - t0[:, None]) / HOUR)))
    cum = np.concatenate([np.zeros((len(c), 1)), np.cumsum(
        tp.organic_buy * (lam[:, :-1] * integral + cont), axis=1)], axis=1)
    s_total = np.exp(-cum[:, -1])
    out = {"trigger_id": c["trigger_id"], "kind": [KINDS[k].value for k in c["kind"]],
           "p_organic": 1 - s_total, "price": c["price"]}
    unsub = world.unsub_hazard(u, np.zeros(len(u)))
    kinds = c["kind"].to_numpy()
    for k, kind in enumerate(KINDS):
        m = kinds == k
        if not m.any():
            continue
        d = config[kind]
        tsend = send_times(clock, u[m], t0[m], np.array(d.delays_h), g)
        idx = np.clip((tsend - (t0[m] // HOUR)[:, None] * HOUR) // HOUR, 0, H + 1)
        s_before = np.exp(-np.take_along_axis(cum[m], idx, axis=1))
        hr, dw, _ = clock.local_time_at(np.broadcast_to(u[m][:, None], tsend.shape), tsend)
        log_rel = np.log(world.rel_activity[u[m][:, None], (dw >= 5).astype(np.int64), hr])
        logit = world.open_logit_given(log_rel, c["log_aff"].to_numpy()[m][:, None],
                                       world.z[u[m]][:, None], 0.0, 0.0) + tp.open_shift
        p_open = 1 / (1 + np.exp(-logit))
        i_at = i0[m][:, None] * np.exp(-(tsend - t0[m][:, None]) / (tau[m][:, None] * HOUR))
        ok = tsend < (t0[m] + d.expiry_h * HOUR)[:, None]
        incr = np.where(ok, s_total[m][:, None] * p_open * np.minimum(1, tp.push_boost * i_at),
                        0.0)
        for j, arm in enumerate(d.delays_h):
            for name, v in (("incr", incr[:, j]), ("send", np.where(ok[:, j], s_before[:, j],
                                                                   0.0))):
                col = out.setdefault(f"{name}_{arm}", np.zeros(len(c)))
                col[m] = v
    out["incr_drop"] = np.zeros(len(c))
    out["send_drop"] = np.zeros(len(c))
    out["unsub_hazard"] = unsub
    # another trigger of the same (user, item) within the horizon before or after: its
    # intent and push also act on this trigger's item (the truth ignores them)
    key = c["user"].astype(np.int64) * (1 << 20) + c["item"].astype(np.int64)
    o = np.lexsort((t0, key.to_numpy()))
    ks, ts_ = key.to_numpy()[o], t0[o]
    near = np.zeros(len(c), bool)
    close = (ks[1:] == ks[:-1]) & (ts_[1:] - ts_[:-1] < H * HOUR)
    near[o[1:]] |= close
    near[o[:-1]] |= close
    out["overlap"] = near
    return pd.DataFrame(out)


def _assemble(ds: Dataset, tracker: TriggerTracker, rows: list[tuple[Any, ...]],
              out_push: list[tuple[Any, ...]], out_act: list[tuple[int, int, int, float]],
              visits: list[tuple[int, int]],
              decision_ids: dict[str, int], upd: pd.DataFrame, uids: np.ndarray,
              iids: np.ndarray, items: pd.DataFrame) -> Dataset:
    """The v1.1 dataset: base tables plus trigger pushes, intent purchases, item updates and
    the triggers table."""
    push_cols = ["decision_id", "u", "ts", "item", "pscore", "opened", "clicked", "converted",
                 "unsubscribed", "trigger_id"]
    tp_ = pd.DataFrame(out_push, columns=push_cols)
    base = ds.pushes.copy()
    base["trigger_id"] = pd.Series([None] * len(base), dtype=object)
    item_rev = items["price"].to_numpy(float)
    price_at = {(r[1], r[2] + 300): r[3] for r in out_act}
    trig_p = pd.DataFrame({
        "decision_id": tp_["decision_id"].astype(np.int64),
        "user_id": uids[tp_["u"].to_numpy(np.int64)] if len(tp_) else [],
        "ts": from_unix_seconds(tp_["ts"].to_numpy(np.int64)),
        "sent": True,
        "item_id": iids[tp_["item"].to_numpy(np.int64)] if len(tp_) else [],
        "pscore": tp_["pscore"].astype(float), "pscore_send": tp_["pscore"].astype(float),
        "opened": tp_["opened"].astype("boolean"), "clicked": tp_["clicked"].astype("boolean"),
        "converted": tp_["converted"].astype("boolean"),
        "revenue": [price_at.get((u, t + 300), item_rev[i]) if c else 0.0 for u, t, i, c in
                    zip(tp_["u"], tp_["ts"], tp_["item"], tp_["converted"], strict=True)],
        "unsubscribed": tp_["unsubscribed"].astype("boolean"),
        "trigger_id": tp_["trigger_id"].astype(object)})
    for col in ("user_id", "item_id"):
        base[col] = base[col].astype(str)
    pushes = pd.concat([base, trig_p], ignore_index=True)
    pushes = pushes.sort_values(["ts", "decision_id"], kind="stable").reset_index(drop=True)
    extra = pd.DataFrame(out_act, columns=["u", "ts", "item", "revenue"])
    act = ds.activity.copy()
    for col in ("user_id", "event", "item_id"):
        act[col] = act[col].astype(object)
    act = pd.concat([act, pd.DataFrame({
        "user_id": uids[extra["u"].to_numpy(np.int64)] if len(extra) else [],
        "ts": from_unix_seconds(extra["ts"].to_numpy(np.int64)),
        "event": "purchase",
        "item_id": iids[extra["item"].to_numpy(np.int64)] if len(extra) else [],
        "revenue": extra["revenue"].astype(float)})], ignore_index=True)
    vis = np.array(visits, np.int64).reshape(-1, 2)
    act = pd.concat([act, pd.DataFrame({
        "user_id": uids[vis[:, 0]], "ts": from_unix_seconds(vis[:, 1]), "event": "session",
        "item_id": None, "revenue": np.nan})], ignore_index=True)
    act = act.sort_values("ts", kind="stable").reset_index(drop=True)
    trig = []
    for tid, u, _k, item, *_ in rows:
        t = tracker.get(tid)
        if t is None:
            continue
        trig.append({"trigger_id": tid, "user_id": uids[u], "kind": t.kind.value,
                     "item_id": None if t.item is None else iids[t.item],
                     "event_ts": t.event_ts, "decided_ts": t.decided_ts,
                     "delay_h": t.delay_h, "pscore": t.pscore, "status": t.status.value,
                     "decision_id": decision_ids.get(tid) if t.status is TriggerStatus.SENT
                     else None, "push_item": iids[item]})
    trig_df = pd.DataFrame(trig)
    if len(trig_df):
        trig_df["event_ts"] = from_unix_seconds(trig_df["event_ts"].to_numpy(np.int64))
        trig_df["decided_ts"] = from_unix_seconds(trig_df["decided_ts"].to_numpy(np.int64))
        trig_df["delay_h"] = trig_df["delay_h"].astype("Int64")
        trig_df["decision_id"] = trig_df["decision_id"].astype("Int64")
        trig_df = trig_df.drop(columns=["push_item"])
    updates = pd.DataFrame({
        "item_id": iids[upd["item"].to_numpy(np.int64)] if len(upd) else [],
        "ts": from_unix_seconds(upd["ts"].to_numpy(np.int64)),
        "price": upd["price"].astype(float),
        "in_stock": upd["in_stock"].astype("boolean")})
    return Dataset(ds.users, items, act, pushes, meta=dict(ds.meta), item_updates=updates,
                   triggers=trig_df)


def synthesize_triggers(out: str | Path, cfg: SynthConfig,
                        tp: TriggerWorldParams | None = None,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate and write the trigger world plus its ground truth; returns a summary."""
    t0 = time.perf_counter()
    ds, gt, gt_users, truth = generate_triggers(cfg, tp, progress)
    d = write_dataset(ds, out)
    (d / "ground_truth.json").write_text(json.dumps(gt, indent=2, sort_keys=True, default=str))
    write_table(gt_users, d / "ground_truth_users.parquet")
    write_table(truth, d / TRUTH_FILE)
    return {"out": str(d), "users": cfg.users, "days": cfg.days, "decisions": len(ds.pushes),
            "sent": int(ds.pushes["sent"].sum()), "activity_events": len(ds.activity),
            "triggers": len(ds.triggers), "item_updates": len(ds.item_updates),
            "trigger_pushes": int(ds.pushes["trigger_id"].notna().sum()),
            "seconds_total": round(time.perf_counter() - t0, 2)}
