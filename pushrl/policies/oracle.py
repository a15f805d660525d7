"""A ground-truth send-timing oracle for the synthetic world (``truth = true`` scenarios).

Why an open-loop plan is the right oracle: in the synthetic world
(:class:`~pushrl.data.synth.TrueWorld`) a push's open probability depends on the local hour
(the user's true relative activity), the item, and fatigue from the pushes *sent* in the last
24 h and 7 days; the unsubscribe hazard depends on the pushes sent in the last 7 days. Opens,
clicks and organic activity never change later probabilities. The only random event that
matters for the future is an unsubscribe, which ends the episode. So for each user the best
policy is a fixed schedule ``x`` (send / wait at every slot), and its expected return has a
closed form::

    J(x) = sum_t x_t * S_t * (g(L_t) - send_cost - unsubscribe_penalty * h_t)
    L_t  = open_activity * log rel_activity(t) - fatigue_24h * s24_t - fatigue_7d * s7_t
    S_t  = prod_{t' < t, x_t'} (1 - h_t'),   h_t = unsub_hazard(s7_t)

with ``s24_t, s7_t`` the schedule's own sends in the windows before ``t`` and ``g(L)`` the
expected open, click and revenue reward of a push over the item policy's distribution
(tabulated on a grid of ``L`` per user). :func:`plan` maximises ``J`` per user, vectorised
over users: the best of a family of regular schedules (``k`` pushes on every ``d``-th day at the
user's truly most active allowed hours), then coordinate ascent over single-slot toggles and
within-day moves among the ``candidates_per_day`` best hours of every day, respecting the
scenario's guardrails (quiet hours, daily and 7-day caps). The result is a lower bound on the
true optimum (a local optimum of ``J``), not a certificate; it fatigue-plans where one-step
greedy cannot. ``mode="greedy"`` is the one-step rule (send when the true expected immediate
reward of a push, net of send cost and unsubscribe penalty, is positive) for comparison.

The oracle reads the simulator from ``ctx.extra["sim"]`` (the engine passes it); it refuses
a fitted (non-truth) simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pushrl.data.timezones import HOUR, local_clock
from pushrl.errors import ScenarioError
from pushrl.policies.base import SEND, WAIT, TimingContext, TimingPolicy

_GRID = np.linspace(-12.0, 4.0, 801)  # L grid for g(L); step 0.02


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Tables:
    """Everything :func:`expected_return` needs, for ``n`` users over ``T`` steps.

    Attributes:
        act: ``(n, T)`` open-logit term of the local hour (``open_activity * log rel``).
        allowed: ``(n, T)`` bool, outside quiet hours.
        day: ``(n, T)`` local day number of each step.
        g: ``(n, len(_GRID))`` expected reward of a delivered push (opens, clicks, revenue)
            as a function of the open-logit offset ``L``.
        unsub_base: ``(n,)`` unsubscribe logit with no recent push.
        unsub_volume: Unsubscribe logit per push in the last 7 days.
        fatigue_24h: Open-logit drop per push in the last 24 h.
        fatigue_7d: Open-logit drop per push in the last 7 days.
        steps_24h: Steps per 24 h.
        send_cost: Reward weight of a delivered push.
        unsubscribe_penalty: Reward weight of an unsubscribe.
        max_per_day: Daily cap (0 = none).
        max_per_week: 7-day cap (0 = none).
    """

    act: np.ndarray
    allowed: np.ndarray
    day: np.ndarray
    g: np.ndarray
    unsub_base: np.ndarray
    unsub_volume: float
    fatigue_24h: float
    fatigue_7d: float
    steps_24h: int
    send_cost: float
    unsubscribe_penalty: float
    max_per_day: int
    max_per_week: int


def _window(x: np.ndarray, w: int) -> np.ndarray:
    """Sends in the ``w`` steps before each step, ``(n, T)`` (history before 0 is empty)."""
    c = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, out=c[:, 1:])
    lag = np.concatenate([np.zeros((x.shape[0], w)), c], axis=1)[:, : x.shape[1]]
    return c[:, :-1] - lag


def _interp(g: np.ndarray, L: np.ndarray) -> np.ndarray:
    pos = np.clip((L - _GRID[0]) / (_GRID[1] - _GRID[0]), 0, _GRID.size - 1.000001)
    i = pos.astype(np.int64)
    f = pos - i
    rows = np.arange(g.shape[0])[:, None]
    return g[rows, i] * (1 - f) + g[rows, i + 1] * f


def expected_return(x: np.ndarray, tb: Tables) -> np.ndarray:
    """Expected episode return ``J`` of schedules ``x`` ``(n, T)`` bool, shape ``(n,)``."""
    xf = x.astype(np.float64)
    s24 = _window(xf, tb.steps_24h)
    s7 = _window(xf, 7 * tb.steps_24h)
    value = _interp(tb.g, tb.act - tb.fatigue_24h * s24 - tb.fatigue_7d * s7)
    h = _sigmoid(tb.unsub_base[:, None] + tb.unsub_volume * s7)
    log_surv = np.cumsum(np.log1p(-h) * xf, axis=1) - np.log1p(-h) * xf  # sends before t
    r = value - tb.send_cost - tb.unsubscribe_penalty * h
    return np.asarray((xf * np.exp(log_surv) * r).sum(axis=1))


def feasible(x: np.ndarray, tb: Tables) -> np.ndarray:
    """Per user: ``x`` sends only in allowed slots and respects both caps, ``(n,)`` bool."""
    ok = ~(x & ~tb.allowed).any(axis=1)
    if tb.max_per_day:
        d = tb.day - tb.day[:, :1]
        per_day = np.zeros((x.shape[0], int(d.max()) + 1))
        r, c = np.nonzero(x)
        np.add.at(per_day, (r, d[r, c]), 1)
        ok &= per_day.max(axis=1) <= tb.max_per_day
    if tb.max_per_week:
        s7 = _window(x.astype(np.float64), 7 * tb.steps_24h)
        ok &= ~(x & (s7 >= tb.max_per_week)).any(axis=1)
    return np.asarray(ok)


def _candidates(tb: Tables, per_day: int) -> np.ndarray:
    """``(n, n_days, per_day)`` step indices of each local day's most active allowed hours
    (-1 where a day has fewer allowed steps), best first."""
    n = tb.act.shape[0]
    d = tb.day - tb.day[:, :1]
    n_days = int(d.max()) + 1
    score = np.where(tb.allowed, tb.act, -np.inf)
    out = np.full((n, n_days, per_day), -1, np.int64)
    for k in range(n_days):
        s = np.where(d == k, score, -np.inf)
        order = np.argsort(-s, axis=1, kind="stable")[:, :per_day]
        good = np.take_along_axis(s, order, axis=1) > -np.inf
        out[:, k, :] = np.where(good, order, -1)
    return out


def _from_slots(cand: np.ndarray, on: np.ndarray, T: int) -> np.ndarray:
    """Schedule ``(n, T)`` from candidate slots ``cand`` switched ``on`` (same shape)."""
    x = np.zeros((cand.shape[0], T), bool)
    sel = on & (cand >= 0)
    rows = np.broadcast_to(np.arange(cand.shape[0])[:, None, None], cand.shape)
    x[rows[sel], cand[sel]] = True
    return x


def plan(tb: Tables, *, candidates_per_day: int = 3, sweeps: int = 3) -> np.ndarray:
    """Near-optimal schedules under the truth (module docstring), ``(n, T)`` bool."""
    n, T = tb.act.shape
    cand = _candidates(tb, candidates_per_day)
    n_days = cand.shape[1]
    cap = tb.max_per_day or candidates_per_day
    best_on = np.zeros(cand.shape, bool)
    best_j = np.zeros(n)
    for k in range(1, min(cap, candidates_per_day) + 1):
        for every in (1, 2, 3, 4, 7):
            on = np.zeros(cand.shape, bool)
            on[:, ::every, :k] = True
            x = _from_slots(cand, on, T)
            j = np.where(feasible(x, tb), expected_return(x, tb), -np.inf)
            better = j > best_j
            best_on[better], best_j[better] = on[better], j[better]
    rows = np.arange(n)
    for _ in range(sweeps):
        improved = False
        for day in range(n_days):
            moves = [(r, -1) for r in range(candidates_per_day)]
            moves += [(r, s) for r in range(candidates_per_day)
                      for s in range(candidates_per_day) if r != s]
            for r, s in moves:
                on = best_on.copy()
                if s < 0:  # toggle slot r
                    on[:, day, r] = ~on[:, day, r]
                    valid = cand[:, day, r] >= 0
                else:  # move a send from slot r to slot s of the same day
                    valid = on[:, day, r] & ~on[:, day, s] & (cand[:, day, s] >= 0)
                    on[rows[valid], day, r] = False
                    on[rows[valid], day, s] = True
                if not valid.any():
                    continue
                x = _from_slots(cand, on, T)
                j = np.where(valid & feasible(x, tb), expected_return(x, tb), -np.inf)
                better = j > best_j + 1e-12
                if better.any():
                    improved = True
                    best_on[better], best_j[better] = on[better], j[better]
        if not improved:
            break
    return _from_slots(cand, best_on, T)


def truth_tables(sim: Any, slots: np.ndarray, weights: Any) -> Tables:
    """Build :class:`Tables` for engine ``slots`` from a ``truth = true`` :class:`PushSim`.

    Raises:
        ScenarioError: the simulator is not the synthetic ground truth.
    """
    resp = sim.response
    if not getattr(resp, "truth", False):
        raise ScenarioError("the oracle needs the ground truth: run it in a truth = true "
                            "scenario (e.g. `default_truth`, or truth=True as an override)")
    world, cfg = resp.world, sim.cfg
    p = world.params
    s = np.asarray(slots, np.int64)
    gt = resp.gt[sim.pop[s]]
    T, step_h = int(cfg.horizon), int(cfg.step_hours)
    buckets = cfg.start_bucket + np.arange(T) * step_h
    tz = sim.state.a.tz_idx[s]
    off = sim.state.tzt.offset_seconds(tz[:, None], buckets[None, :])
    hour, dow, day = local_clock(buckets[None, :] * HOUR, off)
    weekend = (dow >= 5).astype(np.int64)
    rel = world.rel_activity[gt[:, None], weekend, (hour - int(resp.shift)) % 24]
    n_items = world.items.shape[0]
    items = np.arange(n_items)
    pol = sim.item_policy
    probs = (pol.probabilities(np.broadcast_to(items, (s.size, n_items)),
                               np.ones((s.size, n_items), bool))
             if hasattr(pol, "probabilities") else np.full((s.size, n_items), 1.0 / n_items))
    w = weights
    g = np.empty((s.size, _GRID.size))
    for a in range(0, s.size, 64):  # chunks keep the (users, items, grid) temporary small
        u = gt[a:a + 64]
        base = (world.open_logit(u[:, None], 0, 0, items[None, :], 0.0, 0.0)
                - p.open_activity * np.log(world.rel_activity[u, 0, 0])[:, None])
        per_open = w.open + world.p_click(u[:, None], items[None, :]) * (
            w.click + w.revenue * world.p_convert(items)[None, :] * world.price[None, :])
        pr = probs[a:a + 64] * per_open
        g[a:a + 64] = np.einsum("ui,uig->ug", pr, _sigmoid(base[:, :, None] + _GRID))
    g_cfg = cfg.guardrails
    return Tables(
        act=p.open_activity * np.log(rel), allowed=~g_cfg.quiet(hour), day=day, g=g,
        unsub_base=p.unsub_intercept + p.unsub_engagement * world.z[gt],
        unsub_volume=float(p.unsub_volume_7d), fatigue_24h=float(p.fatigue_24h),
        fatigue_7d=float(p.fatigue_7d), steps_24h=24 // step_h, send_cost=float(w.send_cost),
        unsubscribe_penalty=float(w.unsubscribe_penalty),
        max_per_day=int(g_cfg.max_sends_per_day), max_per_week=int(g_cfg.max_sends_per_week))


class TrueOracle(TimingPolicy):
    """Ground-truth timing oracle (module docstring); deterministic, ``pscore`` 1.

    Args:
        mode: ``"plan"`` (fatigue-aware schedule per user) or ``"greedy"`` (one-step).
        candidates_per_day: Hours per local day the planner considers.
        sweeps: Coordinate-ascent sweeps of the planner.
        reward: Reward weights ``{open, click, revenue, send_cost, unsubscribe_penalty}``;
            default the scenario's (``ctx.extra["scenario"].reward``).
    """

    name = "timing-oracle"

    def __init__(self, mode: Literal["plan", "greedy"] = "plan", candidates_per_day: int = 3,
                 sweeps: int = 3, reward: dict[str, float] | None = None) -> None:
        if mode not in ("plan", "greedy"):
            raise ValueError(f"`mode` must be 'plan' or 'greedy', got {mode!r}")
        if candidates_per_day < 1 or sweeps < 0:
            raise ValueError(f"`candidates_per_day` must be >= 1 and `sweeps` >= 0, got "
                             f"{candidates_per_day} and {sweeps}")
        self.mode, self.candidates_per_day, self.sweeps = mode, candidates_per_day, sweeps
        self.reward = reward
        # the schedules of the current episodes of one simulator: (sim, episode keys, x)
        self._cache: tuple[Any, np.ndarray, np.ndarray] | None = None

    def _weights(self, ctx: TimingContext) -> Any:
        from pushrl.sim.engine import RewardWeights

        if self.reward is not None:
            return RewardWeights(**self.reward)
        sc = ctx.extra.get("scenario")
        w = sc.reward if sc is not None else ctx.extra.get("reward")
        if w is None:
            raise ValueError("the oracle needs the scenario's reward weights: pass "
                             "`reward={...}` or run it in pushrl.envs.rollout (which sets "
                             "ctx.extra['scenario'])")
        return w

    def _schedule(self, sim: Any, slots: np.ndarray, w: Any) -> np.ndarray:
        if self._cache is None or self._cache[0] is not sim:
            self._cache = (sim, np.zeros(sim.n, np.uint64),
                           np.zeros((sim.n, sim.cfg.horizon), bool))
        _, keys, x = self._cache
        stale = slots[keys[slots] != sim.key[slots]]
        if stale.size:
            x[stale] = plan(truth_tables(sim, stale, w),
                            candidates_per_day=self.candidates_per_day, sweeps=self.sweeps)
            keys[stale] = sim.key[stale]
        t = np.minimum(sim.t[slots], x.shape[1] - 1)
        return np.asarray(x[slots, t])

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        sim = ctx.extra.get("sim")
        if sim is None:
            raise ValueError("the oracle needs the simulator in ctx.extra['sim']; it runs "
                             "only inside pushrl's simulated environments")
        slots = np.asarray(ctx.user_index, np.int64)
        w = self._weights(ctx)
        if self.mode == "greedy":
            if not getattr(sim.response, "truth", False):
                raise ScenarioError("the oracle needs the ground truth: run it in a "
                                    "truth = true scenario")
            send = sim.expected_send_value(w, slots) > 0
        else:
            send = self._schedule(sim, slots, w)
        out = np.zeros((slots.size, 2))
        out[:, SEND], out[:, WAIT] = send, ~send
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode,
                "candidates_per_day": self.candidates_per_day, "sweeps": self.sweeps}
