"""Customer lifecycles of the ``lapsing`` world (issue 17): shoppers who lapse and come back.

In the other worlds organic sessions are a stationary Poisson process per user, so nobody
ever stops visiting and "churn" is only the chance of a 14-day gap. Here every user is, at
each hour, **active** (sessions at the world's rate ``rate[u, weekend, hour]``) or
**dormant** (sessions at ``lapse_residual`` times that rate). The lifecycle is *not* a
BG/NBD process (no per-visit coin flip, no gamma-mixed permanent dropout):

* an active spell ends at a user-specific **stop time**: the spell's length is drawn from a
  heavy-tailed Lomax (Pareto II) law with shape ``lapse_tail`` and median
  ``lapse_median_days`` (most spells short, a few very long);
* or earlier, through a **gap hazard** that rises with the time since the user's last
  session: per day ``lapse_gap_hazard * (gap / lapse_gap_days) ** 2``;
* a dormant user's (rare) session **re-activates** them with probability ``lapse_return``
  (a visit or a purchase that re-engages), which starts a new spell with a fresh stop time;
* at the start of the log a share ``lapse_dormant_start`` of users are already dormant, and
  every user's last session before the log is 0-48 h back.

Order within an hour bucket ``b``: lapses (stop time reached, or the gap hazard at
``b - last session``), then sessions at ``rate * multiplier``, then re-activations by the
hour's sessions (in effect from ``b + 1``). The lifecycle draws from its own stream
``default_rng([seed, 29, first_user])``, so it changes nothing in the worlds without it.

Ground truth: ``ground_truth.json["lifecycle"]`` holds every transition (bucket, user,
active after it, stop bucket of the spell; bucket ``b0 - 1`` rows are the initial states and
``last0`` the last session before the log). :func:`p_no_session` gives the exact probability
of no session in a window from the state at its start: lifecycle transitions happen at
sessions (re-activation) or by the deterministic-given-no-session hazard, so on the event
"no session" the lapse time has a known law and the probability is a finite sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.io import to_unix_seconds
from pushrl.data.timezones import TimezoneTable, local_clock
from pushrl.units import HOUR


def lomax_hours(rng: np.random.Generator, n: int, median_days: float, tail: float
                ) -> np.ndarray:
    """``(n,)`` spell lengths in hours: Lomax with shape ``tail`` and median ``median_days``."""
    scale = median_days / (2.0 ** (1.0 / tail) - 1.0)
    return 24.0 * scale * (rng.random(n) ** (-1.0 / tail) - 1.0)


def gap_hazard(gap_hours: np.ndarray, per_day: float, gap_days: float) -> np.ndarray:
    """Per-hour probability that an active user lapses after ``gap_hours`` without a session."""
    return np.minimum(1.0, per_day / 24.0 * (gap_hours / (24.0 * gap_days)) ** 2)


class Lifecycle:
    """The lifecycle state of ``n`` users during :func:`pushrl.data.synth.generate`.

    Args:
        params: The world's ``WorldParams`` (the ``lapse_*`` fields).
        n: Users.
        b0: First hour bucket of the log.
        rng: The lifecycle's own stream.
        first_user: Index of the first user (the transitions' user ids are global).
    """

    def __init__(self, params: Any, n: int, b0: int, rng: np.random.Generator,
                 first_user: int = 0) -> None:
        self.p = params
        self.rng = rng
        self.first_user = first_user
        self.active = rng.random(n) >= params.lapse_dormant_start
        self.stop = b0 + lomax_hours(rng, n, params.lapse_median_days, params.lapse_tail)
        self.stop = np.where(self.active, np.floor(self.stop), -1.0)
        self.last = b0 - 1 - np.floor(rng.uniform(0.0, 48.0, n))
        self.last0 = self.last.copy()
        self._rows: list[tuple[np.ndarray, ...]] = [
            (np.full(n, b0 - 1), np.arange(n), self.active.copy(), self.stop.copy())]

    @classmethod
    def of(cls, params: Any, n: int, b0: int, seed: int, first_user: int = 0
           ) -> Lifecycle | None:
        """The lifecycle of a world with ``lapse_median_days > 0`` on its own stream
        ``default_rng([seed, 29, first_user])``; None otherwise (no draws)."""
        if params.lapse_median_days <= 0:
            return None
        return cls(params, n, b0, np.random.default_rng([seed, 29, first_user]), first_user)

    def multiplier(self, b: int) -> np.ndarray:
        """Lapses at bucket ``b``, then the ``(n,)`` session-rate multiplier of the hour."""
        p = self.p
        a = np.flatnonzero(self.active)
        h = gap_hazard(b - self.last[a], p.lapse_gap_hazard, p.lapse_gap_days)
        lapse = (b >= self.stop[a]) | (self.rng.random(a.size) < h)
        self._move(b, a[lapse], False)
        return np.where(self.active, 1.0, p.lapse_residual)

    def sessions(self, b: int, had: np.ndarray) -> None:
        """Record the hour's sessions (``had``: ``(n,)`` bool) and re-activate dormant users."""
        u = np.flatnonzero(had)
        self.last[u] = b
        d = u[~self.active[u]]
        back = d[self.rng.random(d.size) < self.p.lapse_return]
        self.stop[back] = b + 1 + np.floor(lomax_hours(
            self.rng, back.size, self.p.lapse_median_days, self.p.lapse_tail))
        self._move(b, back, True)

    def _move(self, b: int, users: np.ndarray, active: bool) -> None:
        if users.size:
            self.active[users] = active
            self._rows.append((np.full(users.size, b), users, self.active[users].copy(),
                               self.stop[users].copy()))

    def to_json(self) -> dict[str, Any]:
        """The transitions for ``ground_truth.json`` (see the module docstring)."""
        b, u, a, s = (np.concatenate(x) for x in zip(*self._rows, strict=True))
        return {"bucket": b.astype(np.int64).tolist(),
                "user": (u + self.first_user).astype(np.int64).tolist(),
                "active": a.astype(bool).tolist(), "stop": s.astype(np.int64).tolist(),
                "last0": self.last0.astype(np.int64).tolist()}


def state_at(lifecycle: dict[str, Any], n: int, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """``(active, stop)`` of each of ``n`` users just before the lapses of ``bucket``
    (after every transition of earlier buckets)."""
    t = pd.DataFrame({k: lifecycle[k] for k in ("bucket", "user", "active", "stop")})
    t = t.loc[t["bucket"] < bucket]
    last = t.groupby("user", sort=False).tail(1)  # rows are in time order
    active = np.zeros(n, bool)
    stop = np.full(n, -1.0)
    active[last["user"].to_numpy()] = last["active"].to_numpy(bool)
    stop[last["user"].to_numpy()] = last["stop"].to_numpy(float)
    return active, stop


def hourly_rates(rate: np.ndarray, timezones: np.ndarray, start: int, hours: int
                 ) -> np.ndarray:
    """``(n, hours)`` active session rates of the users in the hour buckets from ``start``."""
    tzt = TimezoneTable(sorted(set(timezones.tolist())))
    idx = np.array([tzt.index(t) for t in timezones], np.int64)
    rows = np.arange(timezones.size)
    out = np.empty((timezones.size, hours))
    for k in range(hours):
        b = start + k
        hour, dow, _ = local_clock(b * HOUR, tzt.offset_seconds(idx, np.full(idx.size, b)))
        out[:, k] = rate[rows, (dow >= 5).astype(np.int64), hour]
    return out


def p_no_session(params: Any, rate: np.ndarray, timezones: np.ndarray,
                 lifecycle: dict[str, Any], last_session: np.ndarray, start: int,
                 hours: int) -> np.ndarray:
    """True P(no session in buckets ``[start, start + hours)``) per user, given the world's
    full state at ``start`` (lifecycle, last session bucket before ``start``: ``(n,)``, from
    the log or ``last0``). Shape ``(n,)``.

    On the event "no session", a dormant user stays dormant and an active one lapses at the
    first hour ``k`` where the stop time is reached or the gap hazard fires, so
    ``P = sum_k P(lapse at k) exp(-R[:k] - eps R[k:]) + P(no lapse) exp(-R)``.
    """
    n = rate.shape[0]
    active, stop = state_at(lifecycle, n, start)
    r = hourly_rates(rate, timezones, start, hours)  # (n, H)
    eps = params.lapse_residual
    b = start + np.arange(hours)[None, :]
    q = gap_hazard(b - last_session[:, None], params.lapse_gap_hazard, params.lapse_gap_days)
    q = np.where(b >= stop[:, None], 1.0, q)
    # P(active through hour k-1, lapse at k) for k = 0..H-1, and P(active throughout)
    surv = np.cumprod(np.concatenate([np.ones((n, 1)), 1.0 - q], axis=1), axis=1)  # (n, H+1)
    lapse_at = surv[:, :-1] * q
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(r, axis=1)], axis=1)  # R[:k]
    tot = cum[:, -1:]
    no_sess = np.exp(-cum[:, :-1] - eps * (tot - cum[:, :-1]))
    p_active = (lapse_at * no_sess).sum(axis=1) + surv[:, -1] * np.exp(-tot[:, 0])
    return np.where(active, p_active, np.exp(-eps * tot[:, 0]))


def last_sessions(activity: pd.DataFrame, user_ids: np.ndarray, last0: list[int] | np.ndarray,
                  bucket: int) -> np.ndarray:
    """``(n,)`` hour bucket of each user's last session before ``bucket`` in the activity log
    (``user_ids``: the users table's ids, in order), ``last0`` where the log has none."""
    ts = to_unix_seconds(activity["ts"]) // HOUR
    keep = (activity["event"].astype(str).to_numpy() == "session") & (ts < bucket)
    last = pd.Series(ts[keep]).groupby(activity["user_id"].astype(str).to_numpy()[keep]).max()
    out = np.asarray(last0, float).copy()
    pos = pd.Index(user_ids).get_indexer(last.index)
    out[pos] = last.to_numpy(float)
    return out
