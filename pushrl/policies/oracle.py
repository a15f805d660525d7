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
import numpy.typing as npt

from pushrl.data.features import FeatureState
from pushrl.data.synth import TrueWorld
from pushrl.errors import ScenarioError
from pushrl.policies.base import SEND, WAIT, TimingContext, TimingPolicy
from pushrl.rules import reward
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.reward import RewardWeights
from pushrl.sim.engine import PushSim
from pushrl.sim.response import ResponseModel, TruthResponse
from pushrl.units import HOUR

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
        weights: Reward weights (send cost and unsubscribe penalty enter ``J``).
        guardrails: The scenario's guardrails (caps; quiet hours are in ``allowed``).
        s24_pre: ``(n, T)`` pushes sent before step 0 that are in each step's 24-h window
            (replanning mid-episode); None = no earlier pushes.
        s7_pre: ``(n, T)`` the same for the 7-day window.
        today_pre: ``(n,)`` pushes already sent in step 0's local day.
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
    weights: RewardWeights
    guardrails: Guardrails
    s24_pre: np.ndarray | None = None
    s7_pre: np.ndarray | None = None
    today_pre: np.ndarray | None = None


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
    if tb.s24_pre is not None and tb.s7_pre is not None:
        s24, s7 = s24 + tb.s24_pre, s7 + tb.s7_pre
    value = _interp(tb.g, tb.act - tb.fatigue_24h * s24 - tb.fatigue_7d * s7)
    h = _sigmoid(tb.unsub_base[:, None] + tb.unsub_volume * s7)
    log_surv = np.cumsum(np.log1p(-h) * xf, axis=1) - np.log1p(-h) * xf  # sends before t
    r = reward.expected(tb.weights, value, h)
    return np.asarray((xf * np.exp(log_surv) * r).sum(axis=1))


def _sends_today(x: np.ndarray, tb: Tables) -> np.ndarray:
    """Sends of schedules ``x`` earlier in each step's local day (plus ``today_pre`` in step
    0's day), ``(n, T)``."""
    before = np.cumsum(x, axis=1) - x
    new_day = np.ones(x.shape, bool)
    new_day[:, 1:] = tb.day[:, 1:] != tb.day[:, :-1]
    first = np.maximum.accumulate(np.where(new_day, np.arange(x.shape[1]), 0), axis=1)
    today = before - np.take_along_axis(before, first, axis=1)
    if tb.today_pre is not None:
        today = today + np.where(tb.day == tb.day[:, :1], tb.today_pre[:, None], 0.0)
    return today


def feasible(x: np.ndarray, tb: Tables) -> np.ndarray:
    """Per user: ``x`` sends only where the guardrails allow (quiet hours, and both caps
    counted on the schedule itself by :meth:`Guardrails.within_caps`), ``(n,)`` bool."""
    xf = x.astype(np.float64)
    s7 = _window(xf, 7 * tb.steps_24h)
    if tb.s7_pre is not None:
        s7 = s7 + tb.s7_pre
    ok = tb.allowed & tb.guardrails.within_caps(_sends_today(xf, tb), s7)
    return np.asarray(~(x & ~ok).any(axis=1))


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
    cap = tb.guardrails.max_sends_per_day or candidates_per_day
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


def _clock(sim: PushSim, s: np.ndarray, t0: int = 0,
           steps: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local ``(hour, weekend, day)`` of steps ``t0 .. t0 + steps`` (default: to the horizon)
    of slots ``s``, each ``(n, steps)``."""
    cfg = sim.cfg
    n_steps = int(cfg.horizon) - t0 if steps is None else int(steps)
    buckets = cfg.start_bucket + (t0 + np.arange(n_steps)) * int(cfg.step_hours)
    hour, dow, day = sim.state.local_time_at(s[:, None], buckets[None, :] * HOUR)
    return hour, (dow >= 5).astype(np.int64), day


def _truth(sim: PushSim) -> TruthResponse:
    resp = sim.response
    if not isinstance(resp, TruthResponse):
        raise ScenarioError("the oracle needs the ground truth: run it in a truth = true "
                            "scenario (e.g. `default_truth`, or truth=True as an override)")
    return resp


def _truth_world(sim: PushSim) -> TrueWorld:
    return _truth(sim).world


def _tables(sim: PushSim, s: np.ndarray, weights: RewardWeights, log_rel: np.ndarray, z: np.ndarray,
            log_aff: np.ndarray, logit_sd: np.ndarray | float = 0.0, t0: int = 0) -> Tables:
    """:class:`Tables` under the true response model for given per-user latents.

    Args:
        sim: A ``truth = true`` :class:`~pushrl.sim.engine.PushSim`.
        s: ``(n,)`` engine slots.
        weights: Reward weights.
        log_rel: ``(n, T)`` log relative activity at each step's local hour.
        z: ``(n,)`` engagement latent.
        log_aff: ``(n, n_items)`` log affinity of each item (``log(pref[cat] * n_cat)``).
        logit_sd: ``(n,)`` or scalar standard deviation of the open logit's unknown part: the
            expected open probability is ``E[sigmoid(m + e)] ~ sigmoid(m / sqrt(1 + pi
            sd^2 / 8))`` (probit approximation); 0 for known latents.
        t0: First step of the tables (``log_rel`` covers steps ``t0 ..``).
    """
    world, cfg = _truth_world(sim), sim.cfg
    p = world.params
    hour, _, day = _clock(sim, s, t0, log_rel.shape[1])
    n_items = world.items.shape[0]
    items = np.arange(n_items)
    pol = sim.item_policy
    probs = (pol.probabilities(np.broadcast_to(items, (s.size, n_items)),
                               np.ones((s.size, n_items), bool))
             if hasattr(pol, "probabilities") else np.full((s.size, n_items), 1.0 / n_items))
    w = weights
    shrink = 1.0 / np.sqrt(1.0 + np.pi * np.broadcast_to(np.asarray(logit_sd, float) ** 2,
                                                         (s.size,)) / 8.0)
    g = np.empty((s.size, _GRID.size))
    for a in range(0, s.size, 64):  # chunks keep the (users, items, grid) temporary small
        la = log_aff[a:a + 64]
        base = world.open_logit_given(0.0, la, z[a:a + 64, None], 0.0, 0.0)
        p_click = world.p_click_given(la, items[None, :])
        per_open = reward.value_per_open(w, p_click, world.p_convert(items)[None, :],
                                         world.price[None, :])
        pr = probs[a:a + 64] * per_open
        logit = (base[:, :, None] + _GRID) * shrink[a:a + 64, None, None]
        g[a:a + 64] = np.einsum("ui,uig->ug", pr, _sigmoid(logit))
    g_cfg = cfg.guardrails
    return Tables(
        act=p.open_activity * log_rel, allowed=~g_cfg.quiet(hour), day=day, g=g,
        unsub_base=p.unsub_intercept + p.unsub_engagement * z,
        unsub_volume=float(p.unsub_volume_7d), fatigue_24h=float(p.fatigue_24h),
        fatigue_7d=float(p.fatigue_7d), steps_24h=24 // int(cfg.step_hours),
        weights=w, guardrails=g_cfg)


def truth_tables(sim: PushSim, slots: np.ndarray, weights: RewardWeights) -> Tables:
    """Build :class:`Tables` for engine ``slots`` from a ``truth = true`` :class:`PushSim`.

    Raises:
        ScenarioError: the simulator is not the synthetic ground truth.
    """
    resp = _truth(sim)
    world = resp.world
    s = np.asarray(slots, np.int64)
    gt = resp.gt[sim.pop[s]]
    hour, weekend, _ = _clock(sim, s)
    rel = world.rel_activity[gt[:, None], weekend, (hour - int(resp.shift)) % 24]
    log_aff = world.log_affinity(gt[:, None], np.arange(world.items.shape[0])[None, :])
    return _tables(sim, s, weights, np.log(rel), world.z[gt], log_aff)


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
        self._cache: tuple[PushSim, np.ndarray, np.ndarray] | None = None

    def _weights(self, ctx: TimingContext) -> RewardWeights:
        if self.reward is not None:
            return RewardWeights(**self.reward)
        sc = ctx.extra.get("scenario")
        w = sc.reward if sc is not None else ctx.extra.get("reward")
        if w is None:
            raise ValueError("the oracle needs the scenario's reward weights: pass "
                             "`reward={...}` or run it in pushrl.envs.rollout (which sets "
                             "ctx.extra['scenario'])")
        return w

    def _tables(self, sim: PushSim, slots: np.ndarray, w: RewardWeights) -> Tables:
        """The planning tables of new episodes in ``slots`` (hook: what the oracle knows)."""
        return truth_tables(sim, slots, w)

    def _schedule(self, sim: PushSim, slots: np.ndarray, w: RewardWeights) -> np.ndarray:
        if self._cache is None or self._cache[0] is not sim:
            self._cache = (sim, np.zeros(sim.n, np.uint64),
                           np.zeros((sim.n, sim.cfg.horizon), bool))
        _, keys, x = self._cache
        stale = slots[keys[slots] != sim.key[slots]]
        if stale.size:
            x[stale] = plan(self._tables(sim, stale, w),
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


# ---------------------------------------------------------------------- information-matched
def _logged_estimates(state: FeatureState, users: np.ndarray, bucket: int,
                      n_categories: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the logged history says about ``users`` at ``bucket``, from the one pipeline.

    Returns:
        ``log_rel`` ``(n, 2, 24)``: log relative activity per (weekend, local hour) from the
        shrunk hour-of-week profile pooled over weekdays / weekend days; ``x_z`` ``(n, 3)``:
        ``[1, logit(engagement), log1p(logged events)]``; ``log_aff`` ``(n, n_categories)``:
        log pipeline affinity per category.
    """
    from pushrl.data.features import F, weekpart_means

    log_rel = np.log(weekpart_means(state.hour_of_week_profile(users).reshape(-1, 7, 24) * 168.0))
    raw = state.features(users, bucket)
    eng = np.clip(raw[:, F["engagement"]].astype(np.float64), 1e-4, 1 - 1e-4)
    events = state.export_history(users)["how"].sum(axis=1)
    x_z = np.stack([np.ones(users.size), np.log(eng / (1 - eng)), np.log1p(events)], axis=1)
    cats = np.broadcast_to(np.arange(n_categories), (users.size, n_categories))
    log_aff = np.log(np.maximum(state.affinity(users, cats), 1e-3).astype(np.float64))
    return log_rel, x_z, log_aff


@dataclass(frozen=True)
class Calibration:
    """Least-squares maps from logged estimates to the hidden per-user latents, fitted over
    the whole simulated population (the population-level truth an informed planner may know:
    it is the prior, not any user's value).

    Attributes:
        rel: ``(a, b)`` of ``log rel ~ a + b * log rel_hat`` over the allowed hours.
        rel_sd: Residual standard deviation of that map.
        z: ``(3,)`` coefficients of ``z ~ x_z`` (see :func:`_logged_estimates`).
        z_sd: Residual standard deviation.
        aff: ``(a, b)`` of ``log(pref * n_cat) ~ a + b * log affinity``.
        aff_sd: Residual standard deviation.
    """

    rel: tuple[float, float]
    rel_sd: float
    z: np.ndarray
    z_sd: float
    aff: tuple[float, float]
    aff_sd: float


def _linfit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef, float(np.std(y - x @ coef))


def calibrate(sim: PushSim, history: str | None = None) -> Calibration:
    """Fit :class:`Calibration` for a ``truth = true`` simulator over its whole population,
    each user warm-started as an episode starts (``history=None``: the scenario's warm start;
    ``"full"``: the whole logged history, 28 days, for decisions late in an episode)."""
    resp = _truth(sim)
    world, cfg, pop = resp.world, sim.cfg, sim.population
    n = len(pop)
    users = np.arange(n)
    state = FeatureState(sim.model.spec, pop.timezone.tolist(), cfg.start_bucket)
    state.reset_users(users, cfg.start_bucket, pop.timezone.tolist(),
                      pop.history(users, cfg.activity_shift_hours, history or cfg.warm_start))
    n_cat = world.pref.shape[1]
    log_rel_hat, x_z, log_aff_hat = _logged_estimates(state, users, cfg.start_bucket, n_cat)
    gt = resp.gt[users]
    hours = (np.arange(24) - int(resp.shift)) % 24
    true_rel = np.log(world.rel_activity[gt][:, :, hours])
    allowed = ~cfg.guardrails.quiet(np.arange(24))
    xr = log_rel_hat[:, :, allowed].ravel()
    rel, rel_sd = _linfit(np.stack([np.ones(xr.size), xr], axis=1),
                          true_rel[:, :, allowed].ravel())
    z, z_sd = _linfit(x_z, world.z[gt])
    xa = log_aff_hat.ravel()
    aff, aff_sd = _linfit(np.stack([np.ones(xa.size), xa], axis=1),
                          np.log(world.pref[gt] * n_cat).ravel())
    return Calibration((float(rel[0]), float(rel[1])), rel_sd, z, z_sd,
                       (float(aff[0]), float(aff[1])), aff_sd)


class InformedOracle(TrueOracle):
    """Information-matched yardstick: the true response model, the deployed information.

    A receding-horizon planner: every ``replan_hours`` it plans the next ``window_days`` with
    :func:`plan` under the true response model (true fatigue, unsubscribe, click and revenue
    model, the same item policy, the pushes it already sent), and executes the plan until the
    next replan. Every hidden per-user parameter (relative activity per hour, engagement,
    category preferences) is replaced by its estimate from what a deployed policy sees at that
    moment: the pipeline's feature state (shrunk hour-of-week profile, engagement, affinity,
    updated with the episode's events), mapped to the latent scale by :func:`calibrate`
    (population-level least squares, interpolated between the warm-start and the full-log
    history length; the residual spread enters the expected open probability when
    ``uncertainty``). So it knows the response *model* and the population's prior but no
    user's hidden parameters: its gap to :class:`TrueOracle` is what knowing them is worth,
    and a policy that only sees logged information can close at most the rest (up to the
    planner's own suboptimality: it is a heuristic lower bound on the information-matched
    optimum, not a certificate).

    Args:
        candidates_per_day: Hours per local day the planner considers.
        sweeps: Coordinate-ascent sweeps per plan.
        reward: Reward weights (default the scenario's).
        uncertainty: Account for the estimates' residual spread in P(open).
        window_days: Planning window.
        replan_hours: Steps between replans.
    """

    name = "timing-oracle-info"

    def __init__(self, mode: Literal["plan", "greedy"] = "plan", candidates_per_day: int = 3,
                 sweeps: int = 2, reward: dict[str, float] | None = None,
                 uncertainty: bool = True, window_days: int = 5, replan_hours: int = 24) -> None:
        if mode != "plan":
            raise ValueError(f"`mode` must be 'plan' for the informed oracle, got {mode!r}")
        if window_days < 1 or replan_hours < 1:
            raise ValueError(f"`window_days` and `replan_hours` must be >= 1, got {window_days} "
                             f"and {replan_hours}")
        super().__init__(mode, candidates_per_day, sweeps, reward)
        self.uncertainty = bool(uncertainty)
        self.window_days, self.replan_hours = int(window_days), int(replan_hours)
        self._cal: tuple[ResponseModel, Calibration, Calibration] | None = None
        # per simulator: (sim, episode keys, step of the last plan, planned x, sent so far)
        self._mpc: tuple[PushSim, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _calibration(self, sim: PushSim, t: int) -> Calibration:
        if self._cal is None or self._cal[0] is not sim.response:
            self._cal = (sim.response, calibrate(sim), calibrate(sim, "full"))
        early, late = self._cal[1], self._cal[2]
        # history grows from the warm-start week to ~the full log's 28 days
        f = float(np.clip(t / sim.cfg.step_hours / 24 / 21, 0.0, 1.0)) \
            if sim.cfg.warm_start == "week" else 0.0

        def mix(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
            return (1 - f) * np.asarray(a, float) + f * np.asarray(b, float)

        rel, aff = mix(early.rel, late.rel), mix(early.aff, late.aff)
        return Calibration((float(rel[0]), float(rel[1])), float(mix(early.rel_sd, late.rel_sd)),
                           mix(early.z, late.z), float(mix(early.z_sd, late.z_sd)),
                           (float(aff[0]), float(aff[1])), float(mix(early.aff_sd, late.aff_sd)))

    def _window_tables(self, sim: PushSim, s: np.ndarray, t0: int, sent: np.ndarray,
                       w: RewardWeights) -> Tables:
        world = _truth_world(sim)
        cal = self._calibration(sim, t0)
        steps = min(self.window_days * 24 // sim.cfg.step_hours, int(sim.cfg.horizon) - t0)
        n_cat = world.pref.shape[1]
        log_rel_hat, x_z, log_aff_hat = _logged_estimates(sim.state, s, int(sim.bucket()[s][0]),
                                                          n_cat)
        hour, weekend, _ = _clock(sim, s, t0, steps)
        rows = np.arange(s.size)[:, None]
        log_rel = cal.rel[0] + cal.rel[1] * log_rel_hat[rows, weekend, hour]
        log_aff = (cal.aff[0] + cal.aff[1] * log_aff_hat)[:, world.item_cat]
        p = world.params
        sd = float(np.sqrt((p.open_activity * cal.rel_sd) ** 2 + (p.open_affinity * cal.aff_sd)
                           ** 2 + (p.open_engagement * cal.z_sd) ** 2))
        tb = _tables(sim, s, w, log_rel, x_z @ cal.z, log_aff,
                     sd if self.uncertainty else 0.0, t0)
        # pushes already sent: in each planned step's 24-h / 7-day window, and today
        day = 24 // sim.cfg.step_hours
        past = np.zeros((s.size, 7 * day))
        lo = max(t0 - 7 * day, 0)
        past[:, 7 * day - (t0 - lo):] = sent[s, lo:t0]
        suffix = np.concatenate([np.zeros((s.size, 1)), np.cumsum(past[:, ::-1], axis=1)], axis=1)
        j = np.arange(steps)
        tb.s24_pre = suffix[:, np.maximum(day - j, 0)]
        tb.s7_pre = suffix[:, np.maximum(7 * day - j, 0)]
        tb.today_pre = sim.observe().sends_today[s].astype(np.float64)
        return tb

    def _schedule(self, sim: PushSim, slots: np.ndarray, w: RewardWeights) -> np.ndarray:
        T = int(sim.cfg.horizon)
        if self._mpc is None or self._mpc[0] is not sim:
            self._mpc = (sim, np.zeros(sim.n, np.uint64), np.zeros(sim.n, np.int64),
                         np.zeros((sim.n, T), bool), np.zeros((sim.n, T), bool))
        _, keys, planned_at, x, sent = self._mpc
        t = np.minimum(sim.t[slots], T - 1)
        new = keys[slots] != sim.key[slots]
        if new.any():
            ns = slots[new]
            keys[ns], x[ns], sent[ns] = sim.key[ns], False, False
        due = new | (t - planned_at[slots] >= self.replan_hours // sim.cfg.step_hours)
        for t0 in np.unique(t[due]):
            s = slots[due & (t == t0)]
            tb = self._window_tables(sim, s, int(t0), sent, w)
            x[s, t0:t0 + tb.act.shape[1]] = plan(tb, candidates_per_day=self.candidates_per_day,
                                                  sweeps=self.sweeps)
            planned_at[s] = t0
        send = np.asarray(x[slots, t])
        sent[slots, t] = send & np.asarray(sim.observe().allowed[slots])
        return send

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "uncertainty": self.uncertainty,
                "window_days": self.window_days, "replan_hours": self.replan_hours}
