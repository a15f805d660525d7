"""User profiles: what a growth team can read about each user, from the one feature pipeline.

One row per user at a point in time ``as_of`` (the profile sees only events in hour buckets
before ``as_of``'s bucket: the :class:`~pushrl.data.features.FeatureState` rule). The batch
CLI (``pushrl profiles``) and the server (``GET /v1/users/{id}/profile``) both call
:func:`profile_rows` on a :class:`FeatureState` and :class:`ProfileCounters`; the batch path
builds them with :func:`~pushrl.data.features.replay`, the server from its live state.

Columns (:data:`PROFILE_COLUMNS`, plus ``affinity_<category>`` and ``<metric>_<channel>``):

- ``peak_hour_weekday`` / ``peak_hour_weekend``: local hour 0-23 with the largest share of the
  user's organic activity, from :meth:`FeatureState.day_profile` (``pool="weekpart"``: the
  hour-of-week profile shrunk toward the population, averaged over weekdays or the weekend).
- ``engagement_score`` in [0, 1): the mean of an activity part ``1 - exp(-activity_7d / 7)``
  (0.63 at one event a day over the last 7 days) and a push part ``e / (e + p)`` where ``e``
  is the pipeline's ``engagement`` (open rate shrunk toward the population rate ``p``), so
  0.5 = an average opener. Fixed formula: no population statistic beyond the spec's.
- ``churn_risk``: probability of no activity event (any session, view, cart or purchase) in
  the next :data:`CHURN_DAYS` days. Method: logistic regression (IRLS, small ridge) on
  :data:`CHURN_FEATURES` computed point-in-time at ``as_of - 14 d``, with labels "no event in
  ``[as_of - 14 d, as_of)``", applied to the same features at ``as_of``, clipped to their
  range over the training users (no extrapolation: at as-of the log is 14 days longer, and
  the hours since the last activity are capped at the log's length at fit time). The
  Poisson-gamma feature counts sessions and observed days over a lookback window of the UTC
  days the fit cut's history spans (:attr:`ProfileModel.window_days`, at most
  :data:`DAY_SLOTS`), at fit time and at as-of alike: with the whole (longer) history at
  as-of, a user's long history met a long gap in combinations the fit never saw, and on a
  world where users lapse the risk came out too low (drift between the fit and as-of). But
  where the rate is stationary the extra history estimates it better (AUC +0.02-0.045), so
  the fit chooses window or whole history (``window_days`` 0) per log,
  :func:`choose_window_days`: an emulation of that drift on the training users.
  Validation:
  5-fold cross-fitted predictions over users (or held-out users of a scenario split) give the
  Brier score, AUC, expected calibration error (10 equal-count bins) and a reliability table
  (:attr:`ProfileModel.validation`). A logistic fit's score equations make the mean
  prediction equal the base rate; the quadratic terms let it bend where a Poisson user's
  ``exp(-rate)`` does.
- ``top_category`` and ``affinity_<c>``: :meth:`FeatureState.affinity` (1.0 = population;
  the columns only up to :data:`MAX_AFFINITY_COLUMNS` categories).
- RFM from ``purchase`` events: ``recency_days`` (since the last purchase, NaN if none),
  ``frequency`` (purchases), ``monetary`` (their summed ``revenue``). Scores 1-3: R = 3 within
  7 days, 2 within 30, else 1; F = 3 at >= 4 purchases, 2 at 2-3, else 1; M = terciles of the
  purchasers' ``monetary`` when the model was fitted (:attr:`ProfileModel.monetary_cuts`).
  ``rfm_segment``: ``champions`` (R3, F3), ``loyal`` (R >= 2, F >= 2), ``new`` (R3, F1),
  ``promising`` (R2, F1), ``at_risk`` (R1, F >= 2), ``hibernating`` (R1, F1) and
  ``no_purchase``.
- Push responsiveness per channel (the log's ``channel`` column, else one channel ``push``):
  ``sends_<ch>``, ``open_rate_<ch>`` and ``click_rate_<ch>`` (per sent push), shrunk toward
  the channel's population rate with ``spec.shrink_open`` pseudo-sends (for one channel the
  open rate is the pipeline's ``engagement`` exactly).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import F, FeatureSpec, FeatureState, replay, user_index
from pushrl.data.ece import equal_count_parts
from pushrl.data.io import Dataset, from_unix_seconds, to_unix_seconds
from pushrl.errors import DataError
from pushrl.units import DAY, HOUR

PROFILE_VERSION = "profiles/v1"
#: ``affinity_<c>`` columns are written up to this many categories (a log without an item
#: category has one "category" per item); ``top_category`` always.
MAX_AFFINITY_COLUMNS = 64
#: Files of a profile snapshot (:func:`write_snapshot`).
COUNTERS_FILE = "profiles.npz"
MODEL_FILE = "profile_model.json"
CHURN_DAYS = 14
CHURN_HOURS = CHURN_DAYS * 24
DEFAULT_CHANNEL = "push"
_NEVER = np.iinfo(np.int64).min // 4
_NO_FIRST = -_NEVER  # ``first`` of a user with no event yet
_RECENCY_CAP_H = 90 * 24
#: UTC days of per-day session counts :class:`ProfileCounters` keep (the last ``DAY_SLOTS``
#: days up to their latest session): the cap of the churn model's lookback window.
DAY_SLOTS = 28
#: Inputs of the churn model (before standardisation), in order.
CHURN_FEATURES: tuple[str, ...] = (
    "log_p0_poisson_gamma", "log1p_activity_7d", "log1p_hours_since_activity", "engagement",
    "log1p_purchases", "never_active",
)
SEGMENTS: tuple[str, ...] = ("champions", "loyal", "new", "promising", "at_risk",
                             "hibernating", "no_purchase")
PROFILE_COLUMNS: tuple[str, ...] = (
    "peak_hour_weekday", "peak_hour_weekend", "engagement_score", "churn_risk",
    "top_category", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score",
    "rfm_segment", "activity_7d", "lifetime_activity",
)


# --------------------------------------------------------------------- counters
@dataclass
class ProfileCounters:
    """Per-user lifetime aggregates the feature state does not keep (vectorised, ``n`` users).

    Every field is a sum, a minimum or a maximum, so feeding the same events in any order or
    in any number of calls (batch at once, the server per request) gives the same counters.

    Attributes:
        channels: Channel names; index = channel id.
        first: ``(n,)`` bucket of the user's first event or sent push (``_NEVER``: none).
        last_act: ``(n,)`` bucket of the last activity event.
        visits: ``(n,)`` ``session`` events.
        purchases: ``(n,)`` purchase events.
        revenue: ``(n,)`` summed ``revenue`` of purchase events.
        last_purchase: ``(n,)`` bucket of the last purchase.
        sends, opens, clicks: ``(n_channels, n)`` sent pushes and their opens and clicks.
        day_visits: ``(DAY_SLOTS, n)`` int32 ``session`` events per UTC day; row ``j`` is day
            ``day0 + j`` (days since the epoch). The rows end at the latest session's day: a
            later session shifts them (older days drop out), so the counts stay order-free.
        day0: UTC day of row 0 of ``day_visits``.
    """

    channels: tuple[str, ...]
    first: np.ndarray
    last_act: np.ndarray
    visits: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray
    last_purchase: np.ndarray
    sends: np.ndarray
    opens: np.ndarray
    clicks: np.ndarray
    day_visits: np.ndarray
    day0: int = _NEVER

    _ARRAYS = ("first", "last_act", "visits", "purchases", "revenue", "last_purchase", "sends",
               "opens", "clicks", "day_visits")

    @classmethod
    def empty(cls, n: int, channels: Sequence[str] = (DEFAULT_CHANNEL,)) -> ProfileCounters:
        """Counters of ``n`` users with no events."""
        c = len(channels)
        return cls(tuple(channels), np.full(n, _NO_FIRST, np.int64),
                   np.full(n, _NEVER, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                   np.zeros(n, np.float64), np.full(n, _NEVER, np.int64),
                   np.zeros((c, n), np.int64), np.zeros((c, n), np.int64),
                   np.zeros((c, n), np.int64), np.zeros((DAY_SLOTS, n), np.int32))

    @property
    def n(self) -> int:
        """Number of users."""
        return int(self.first.shape[0])

    def channel_ids(self, channels: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Channel id of each name (missing = :data:`DEFAULT_CHANNEL`), shape ``(k,)``.

        Raises:
            DataError: A channel the counters were not built with.
        """
        idx = {c: i for i, c in enumerate(self.channels)}
        out = np.empty(len(channels), np.int64)
        for j, c in enumerate(channels):
            name = DEFAULT_CHANNEL if c is None or (isinstance(c, float) and np.isnan(c)) else c
            if str(name) not in idx:
                raise DataError(f"channel {name!r} is not one of the profile's channels "
                                f"{list(self.channels)}; refit the profiles on logs with it")
            out[j] = idx[str(name)]
        return out

    def record_activity(self, users: np.ndarray, buckets: np.ndarray, events: np.ndarray,
                        revenue: np.ndarray) -> None:
        """Organic events: ``(k,)`` user indices, buckets, event names (``session``, ``view``,
        ``cart``, ``purchase``) and revenue (NaN = none; only purchases count)."""
        u, b = np.asarray(users, np.int64), np.asarray(buckets, np.int64)
        ev = np.asarray(events)  # (an object array compares elementwise, without a copy)
        np.minimum.at(self.first, u, b)
        np.maximum.at(self.last_act, u, b)
        np.add.at(self.visits, u[ev == "session"], 1)
        p = ev == "purchase"
        np.add.at(self.purchases, u[p], 1)
        np.add.at(self.revenue, u[p], np.nan_to_num(np.asarray(revenue, np.float64)[p]))
        np.maximum.at(self.last_purchase, u[p], b[p])
        s = ev == "session"
        if s.any():
            d = b[s] // 24
            self._advance(int(d.max()))
            j = d - self.day0
            ok = j >= 0
            np.add.at(self.day_visits, (j[ok], u[s][ok]), 1)

    def _advance(self, day: int) -> None:
        """Shift :attr:`day_visits` so that its last row is at least ``day``."""
        shift = day - (self.day0 + DAY_SLOTS - 1)
        if shift <= 0:
            return
        if self.day0 == _NEVER or shift >= DAY_SLOTS:
            self.day_visits[:] = 0
        else:
            self.day_visits[:-shift] = self.day_visits[shift:]
            self.day_visits[-shift:] = 0
        self.day0 = day - DAY_SLOTS + 1

    def visits_since(self, bucket: int, days: int) -> np.ndarray:
        """``(n,)`` sessions in the ``days`` UTC days up to the one of hour ``bucket - 1``
        (the churn model's lookback window at ``bucket``; ``days <= DAY_SLOTS``)."""
        last = (bucket - 1) // 24
        rows = self.day0 + np.arange(DAY_SLOTS)
        keep = (rows > last - days) & (rows <= last)
        return self.day_visits[keep].sum(axis=0)

    def record_pushes(self, users: np.ndarray, buckets: np.ndarray, channel: np.ndarray,
                      opened: np.ndarray, clicked: np.ndarray) -> None:
        """Sent pushes: ``(k,)`` user indices, buckets, channel ids and outcome flags."""
        u, b = np.asarray(users, np.int64), np.asarray(buckets, np.int64)
        ch = np.asarray(channel, np.int64)
        np.minimum.at(self.first, u, b)
        np.add.at(self.sends, (ch, u), 1)
        o, c = np.asarray(opened, bool), np.asarray(clicked, bool)
        np.add.at(self.opens, (ch[o], u[o]), 1)
        np.add.at(self.clicks, (ch[c], u[c]), 1)

    def take(self, users: np.ndarray) -> ProfileCounters:
        """A copy holding ``users`` (new indices ``0..k-1``)."""
        u = np.asarray(users, np.int64)
        parts: dict[str, Any] = {k: getattr(self, k)[..., u].copy() for k in self._ARRAYS}
        return ProfileCounters(self.channels, **parts, day0=self.day0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (for ``np.savez``); :meth:`from_arrays` restores them."""
        return {**{k: getattr(self, k) for k in self._ARRAYS},
                "channels": np.array(self.channels, dtype=str),
                "day0": np.array(self.day0, np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ProfileCounters:
        """Inverse of :meth:`to_arrays` (a snapshot saved before ``day_visits`` existed has
        none: zeros, which only a model with a lookback window reads)."""
        n = np.asarray(arrays["first"]).shape[0]
        days = (np.asarray(arrays["day_visits"]) if "day_visits" in arrays
                else np.zeros((DAY_SLOTS, n), np.int32))
        parts: dict[str, Any] = {k: np.asarray(arrays[k]) for k in cls._ARRAYS[:-1]}
        return cls(tuple(str(c) for c in arrays["channels"]), **parts, day_visits=days,
                   day0=int(arrays["day0"]) if "day0" in arrays else _NEVER)


def counters_from_dataset(ds: Dataset, channels: Sequence[str] | None = None
                          ) -> ProfileCounters:
    """:class:`ProfileCounters` of every user of ``ds`` (rows of unknown users are ignored).

    Args:
        ds: The dataset (already cut at the profile time).
        channels: Channel vocabulary; None = the log's ``channel`` values (sorted), else
            ``("push",)``.
    """
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool)
    has_ch = "channel" in p.columns and p["channel"].notna().any()
    if channels is None:
        channels = (tuple(sorted(p.loc[sent, "channel"].dropna().astype(str).unique()))
                    if has_ch else ())
        if not channels or (has_ch and p.loc[sent, "channel"].isna().any()):
            channels = tuple(sorted({*channels, DEFAULT_CHANNEL}))
    out = ProfileCounters.empty(len(ds.users), channels)
    act = ds.activity
    if len(act):
        au = user_index(ds, act["user_id"])
        ok = au >= 0
        rev = (act["revenue"].to_numpy(np.float64, na_value=np.nan) if "revenue" in act.columns
               else np.full(len(act), np.nan))
        out.record_activity(au[ok], (to_unix_seconds(act["ts"]) // HOUR)[ok],
                            _names(act["event"])[ok], rev[ok])
    ps = p.loc[sent]
    if len(ps):
        pu = user_index(ds, ps["user_id"])
        ok = pu >= 0
        ch = (out.channel_ids(ps["channel"].astype(object).to_numpy()) if has_ch
              else np.zeros(len(ps), np.int64))

        def flag(col: str) -> np.ndarray:
            return (ps[col].fillna(False).to_numpy(bool) if col in ps.columns
                    else np.zeros(len(ps), bool))

        out.record_pushes(pu[ok], (to_unix_seconds(ps["ts"]) // HOUR)[ok], ch[ok],
                          flag("opened")[ok], flag("clicked")[ok])
    return out


def _names(s: pd.Series) -> np.ndarray:
    """A string column as an object array of its values, through its categories (a
    categorical or Arrow string column converted value by value is slow at millions of
    rows)."""
    c = s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("category")
    cats = np.asarray([str(x) for x in c.cat.categories], dtype=object)
    codes = c.cat.codes.to_numpy()
    return np.where(codes >= 0, cats[np.maximum(codes, 0)] if cats.size else "", "")


# --------------------------------------------------------------------- model
@dataclass
class ProfileModel:
    """Fitted, versioned parameters of the profiles (saved with a sha256, see
    :meth:`to_json`).

    Attributes:
        as_of: Unix seconds of the time the model was fitted for (labels end there).
        coef: Churn logistic coefficients, intercept first, shape ``(1 + len(CHURN_FEATURES),)``
            (None when the log is too short to fit one: ``churn_risk`` is then NaN).
        mean, scale: Standardisation of :data:`CHURN_FEATURES`.
        visit_unit: What a visit is for the Poisson-gamma feature: ``session`` events, or
            every ``event`` when the log has no sessions.
        gamma: ``(shape, rate per day)`` of the population's visit-rate prior.
        monetary_cuts: The two tercile cuts of the purchasers' ``monetary``.
        channels: Channel vocabulary of the responsiveness columns.
        open_rate, click_rate: Population rates per channel (shrinkage targets).
        validation: Brier, AUC, ECE, base rate, counts and the reliability table.
        version: :data:`PROFILE_VERSION`.
        x_min, x_max: Range of each raw churn feature over the training users (empty for a
            model saved before they existed: no clipping). :meth:`churn` clips features to
            it, so the logistic never extrapolates past what it was fitted on (at as-of the
            log is 14 days longer than at fit time: longer gaps, more history).
        recency_cap_h: Cap of the hours-since-last-activity feature (and its value for a
            user with no activity): the log's length before the fit time (at most 90 days),
            so a gap means the same at as-of as in the fit (default 90 days: older models).
        window_days: Lookback of the visit count and exposure of the Poisson-gamma feature,
            in UTC days (the days up to the profile time's): the whole days of history the
            log had at fit time, at most :data:`DAY_SLOTS`, so the feature means the same at
            as-of as in the fit (0: the whole history, as models saved before it did; also
            when the log has no ``session`` events, or when :func:`choose_window_days`
            chose it: ``validation["window_choice"]``).
    """

    as_of: int
    coef: list[float] | None
    mean: list[float]
    scale: list[float]
    visit_unit: str
    gamma: list[float]
    monetary_cuts: list[float]
    channels: list[str]
    open_rate: list[float]
    click_rate: list[float]
    validation: dict[str, Any] = field(default_factory=dict)
    version: str = PROFILE_VERSION
    x_min: list[float] = field(default_factory=list)
    x_max: list[float] = field(default_factory=list)
    recency_cap_h: float = float(_RECENCY_CAP_H)
    window_days: int = 0

    def to_json(self) -> str:
        """JSON with a ``sha256`` of the canonical body (checked by :meth:`from_json`)."""
        body = json.dumps(asdict(self), sort_keys=True)
        return json.dumps({"model": json.loads(body),
                           "sha256": hashlib.sha256(body.encode()).hexdigest()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProfileModel:
        """Inverse of :meth:`to_json`.

        Raises:
            DataError: Damaged (checksum) or of another version.
        """
        d = json.loads(text)
        body = json.dumps(d["model"], sort_keys=True)
        if hashlib.sha256(body.encode()).hexdigest() != d.get("sha256"):
            raise DataError("the profile model fails its sha256 check (damaged); refit it with "
                            "`pushrl profiles` or `pushrl state import`")
        if d["model"].get("version") != PROFILE_VERSION:
            raise DataError(f"profile model version {d['model'].get('version')!r} != "
                            f"{PROFILE_VERSION!r}; refit it with this pushrl version")
        return cls(**d["model"])

    def churn(self, x: np.ndarray) -> np.ndarray:
        """P(no activity in the next 14 days) for raw churn features ``(n, n_features)``."""
        if self.coef is None:
            return np.full(x.shape[0], np.nan)
        if self.x_min:
            x = np.clip(x, np.asarray(self.x_min), np.asarray(self.x_max))
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        c = np.asarray(self.coef)
        # an elementwise product summed per row: the same bits for one user (server) as for
        # many (batch), which a BLAS matrix product does not promise
        return _sigmoid(c[0] + (z * c[1:]).sum(axis=1))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -35, 35)))


def _exposure(counters: ProfileCounters, bucket: int) -> np.ndarray:
    """Days each user has been observed at ``bucket`` (since the first event; >= 1)."""
    first = counters.first
    return np.where(first >= _NO_FIRST, 1.0, np.maximum((bucket - first) * HOUR / DAY, 1.0))


def _visits(fs: FeatureState, users: np.ndarray, counters: ProfileCounters,
            unit: str) -> np.ndarray:
    return (counters.visits.astype(np.float64) if unit == "session"
            else fs.a.how_tot[users].astype(np.float64))


def _visits_exposure(fs: FeatureState, users: np.ndarray, counters: ProfileCounters,
                     bucket: int, model: ProfileModel) -> tuple[np.ndarray, np.ndarray]:
    """``(visits, observed days)`` of ``users`` at ``bucket`` for the Poisson-gamma feature:
    over the model's lookback window (:attr:`ProfileModel.window_days`), else the history."""
    e = _exposure(counters, bucket)
    w = model.window_days
    if w <= 0 or model.visit_unit != "session":
        return _visits(fs, users, counters, model.visit_unit), e
    span = (bucket - ((bucket - 1) // 24 - w + 1) * 24) * HOUR / DAY  # window length, days
    return counters.visits_since(bucket, w).astype(np.float64), np.minimum(e, span)


def fit_gamma(visits: np.ndarray, days: np.ndarray) -> list[float]:
    """Method-of-moments Gamma(shape, rate) prior of per-day visit rates from counts over
    exposures (the Poisson noise ``mean(rate / days)`` is taken out of the variance)."""
    r = visits / days
    m = max(float(r.mean()), 1e-6)
    var = max(float(r.var()) - m * float(np.mean(1.0 / days)), 1e-3 * m * m)
    return [m * m / var, m / var]


def churn_features(fs: FeatureState, users: np.ndarray, counters: ProfileCounters,
                   bucket: int, model: ProfileModel, raw: np.ndarray | None = None
                   ) -> np.ndarray:
    """:data:`CHURN_FEATURES` of ``users`` at ``bucket`` (advances them), ``(k, 6)`` float64.

    The first is the Poisson-gamma probability of no visit in the next 14 days, in logs:
    ``(a + v) * log((b + e) / (b + e + 14))`` for ``v`` visits in ``e`` observed days under the
    population prior Gamma(a, b) (:attr:`ProfileModel.gamma`), counted over the model's
    lookback window (:attr:`ProfileModel.window_days`: the history the fit saw, so a model
    fitted 14 days earlier meets the same feature at as-of). ``never_active``: no activity
    within the recency cap (for a model with a window; else none ever).

    Args:
        fs: Feature state (its users' clocks must be <= ``bucket``).
        users: ``(k,)`` user indices in ``fs``.
        counters: Counters aligned with ``users`` (row ``i`` = ``users[i]``).
        bucket: The profile's hour bucket.
        model: Supplies ``visit_unit`` and ``gamma``.
        raw: The raw features of ``users`` at ``bucket`` if already computed.
    """
    u = np.asarray(users, np.int64)
    f = fs.features(u, bucket) if raw is None else raw
    act7 = f[:, F["activity_7d"]].astype(np.float64)
    life = fs.a.how_tot[u].astype(np.float64)
    a, b = model.gamma
    v, e = _visits_exposure(fs, u, counters, bucket, model)
    logp0 = (a + v) * np.log((b + e) / (b + e + CHURN_DAYS))
    last = counters.last_act
    cap = model.recency_cap_h
    gap = np.where(last < 0, cap, np.minimum(bucket - last, cap)).astype(np.float64)
    never = (gap >= cap) if model.window_days > 0 else (life == 0)
    return np.stack([logp0, np.log1p(act7), np.log1p(gap),
                     f[:, F["engagement"]].astype(np.float64),
                     np.log1p(counters.purchases.astype(np.float64)),
                     never.astype(np.float64)], axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-3,
                 iters: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge logistic regression by Newton's method (IRLS) on standardised ``x``.

    Args:
        x: ``(n, d)`` raw features; y: ``(n,)`` 0/1 labels.
        ridge: L2 penalty per user on the slopes (not the intercept).

    Returns:
        ``(coef (1 + d,), mean (d,), scale (d,))``.
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    pen = np.full(z.shape[1], ridge * len(x))
    pen[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(z @ w)
        g = z.T @ (p - y) + pen * w
        h = (z * (p * (1 - p))[:, None]).T @ z + np.diag(pen) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w, mean, scale


def calibration(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Brier score, AUC, expected calibration error and a reliability table.

    Bins hold equal numbers of users sorted by ``p``; ECE = sum over bins of
    ``n_bin / n * |mean p - mean y|``.
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    table = []
    ece = 0.0
    for part in equal_count_parts(p, bins):
        mp, my = float(p[part].mean()), float(y[part].mean())
        ece += part.size / len(p) * abs(mp - my)
        table.append({"n": int(part.size), "mean_predicted": mp, "observed": my,
                      "p_low": float(p[part].min()), "p_high": float(p[part].max())})
    pos, neg = y == 1, y == 0
    if pos.any() and neg.any():
        r = pd.Series(p).rank().to_numpy()
        auc = float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))
    else:
        auc = float("nan")
    return {"brier": float(np.mean((p - y) ** 2)), "auc": auc, "ece": float(ece),
            "base_rate": float(y.mean()) if len(y) else float("nan"), "n": len(y),
            "reliability": table}


# --------------------------------------------------------------------- rows
def rfm_scores(recency_days: np.ndarray, frequency: np.ndarray, monetary: np.ndarray,
               cuts: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """R, F, M scores (1-3; 0 = no purchase) and the segment name (module docstring bins)."""
    buyer = frequency > 0
    r = np.where(recency_days <= 7, 3, np.where(recency_days <= 30, 2, 1))
    f = np.where(frequency >= 4, 3, np.where(frequency >= 2, 2, 1))
    m = 1 + (monetary > cuts[0]).astype(np.int64) + (monetary > cuts[1]).astype(np.int64)
    seg = np.select([(r == 3) & (f == 3), (r >= 2) & (f >= 2), (r == 3) & (f == 1),
                     (r == 2) & (f == 1), (r == 1) & (f >= 2)],
                    ["champions", "loyal", "new", "promising", "at_risk"], "hibernating")
    z = np.zeros_like(frequency, dtype=np.int64)
    return (np.where(buyer, r, z), np.where(buyer, f, z), np.where(buyer, m, z),
            np.where(buyer, seg, "no_purchase"))


def profile_rows(fs: FeatureState, users: np.ndarray, counters: ProfileCounters, bucket: int,
                 model: ProfileModel) -> dict[str, np.ndarray]:
    """The profile columns of ``users`` at hour ``bucket`` (advances their clocks to it).

    The one profile computation: the batch CLI calls it on the replayed state of every
    user, the server on a copy of one user's live state.

    Args:
        fs: Feature state; ``users``' clocks must be <= ``bucket``.
        users: ``(k,)`` user indices in ``fs``.
        counters: :class:`ProfileCounters` aligned with ``users``.
        bucket: UTC hour bucket of the profile time (events of earlier buckets count).
        model: The fitted :class:`ProfileModel`.

    Returns:
        Column name -> ``(k,)`` array (:data:`PROFILE_COLUMNS`, then ``affinity_<c>``, then
        ``sends_<ch>``, ``open_rate_<ch>``, ``click_rate_<ch>`` for each channel).
    """
    u = np.asarray(users, np.int64)
    k = u.size
    spec = fs.spec
    raw = fs.features(u, bucket)
    prof_wd = fs.day_profile(u, np.zeros(k, np.int64), "weekpart")
    prof_we = fs.day_profile(u, np.full(k, 5, np.int64), "weekpart")
    act7 = raw[:, F["activity_7d"]].astype(np.float64)
    e = raw[:, F["engagement"]].astype(np.float64)
    p0 = max(spec.prior_open_rate, 1e-9)
    out: dict[str, np.ndarray] = {
        "peak_hour_weekday": prof_wd.argmax(axis=1).astype(np.int64),
        "peak_hour_weekend": prof_we.argmax(axis=1).astype(np.int64),
        "engagement_score": 0.5 * (1 - np.exp(-act7 / 7.0)) + 0.5 * e / (e + p0),
        "churn_risk": model.churn(churn_features(fs, u, counters, bucket, model, raw)),
    }
    nc = spec.n_categories
    aff = (fs.affinity(u, np.broadcast_to(np.arange(nc), (k, nc))).astype(np.float64)
           if nc else np.zeros((k, 0)))
    out["top_category"] = (np.asarray(spec.categories, dtype=object)[aff.argmax(axis=1)]
                           if nc else np.full(k, None, dtype=object))
    lp = counters.last_purchase
    freq = counters.purchases.astype(np.int64)
    rec = np.where(freq > 0, (bucket - lp) * HOUR / DAY, np.nan)
    mon = counters.revenue.astype(np.float64)
    r, f, m, seg = rfm_scores(rec, freq, mon, model.monetary_cuts)
    out.update({"recency_days": rec, "frequency": freq, "monetary": mon, "r_score": r,
                "f_score": f, "m_score": m, "rfm_segment": seg.astype(object),
                "activity_7d": act7, "lifetime_activity": fs.a.how_tot[u].astype(np.float64)})
    if nc <= MAX_AFFINITY_COLUMNS:
        for j, c in enumerate(spec.categories):
            out[f"affinity_{c}"] = aff[:, j]
    ks = spec.shrink_open
    for j, ch in enumerate(model.channels):
        cj = counters.channels.index(ch) if ch in counters.channels else -1
        s = counters.sends[cj] if cj >= 0 else np.zeros(k, np.int64)
        o = counters.opens[cj] if cj >= 0 else np.zeros(k, np.int64)
        c_ = counters.clicks[cj] if cj >= 0 else np.zeros(k, np.int64)
        out[f"sends_{ch}"] = s.astype(np.int64)
        out[f"open_rate_{ch}"] = (o + ks * model.open_rate[j]) / (s + ks)
        out[f"click_rate_{ch}"] = (c_ + ks * model.click_rate[j]) / (s + ks)
    return out


# --------------------------------------------------------------------- batch
@dataclass
class ProfileResult:
    """Output of :func:`build_profiles`.

    Attributes:
        table: One row per user (``user_id`` first), the columns of :func:`profile_rows`.
        model: The fitted :class:`ProfileModel` (``validation`` holds the churn figures).
        as_of: Unix seconds of the profile time (the start of its hour bucket).
        how: ``(n_users, 2, 24)`` weekday / weekend activity shares per local hour (the
            report's heat map).
        counters: The users' :class:`ProfileCounters` at ``as_of``.
    """

    table: pd.DataFrame
    model: ProfileModel
    as_of: int
    how: np.ndarray
    counters: ProfileCounters


def cut(ds: Dataset, bucket: int) -> Dataset:
    """The activity and *sent* pushes of ``ds`` in hour buckets before ``bucket`` (all that
    moves the feature state or the counters: decisions that did not send change nothing)."""
    end = bucket * HOUR
    act = ds.activity
    if len(act):
        act = act.loc[to_unix_seconds(act["ts"]) < end].reset_index(drop=True)
    p = ds.pushes
    keep = p["sent"].fillna(False).to_numpy(bool) & (to_unix_seconds(p["ts"]) < end)
    return Dataset(ds.users, ds.items, act, p.loc[keep].reset_index(drop=True), meta=ds.meta)


def last_bucket(ds: Dataset) -> int:
    """Hour bucket of the last event or decision of ``ds``.

    Raises:
        DataError: ``ds`` has no events or decisions.
    """
    ts = [to_unix_seconds(t["ts"]) for t in (ds.activity, ds.pushes) if len(t)]
    if not ts:
        raise DataError("the log has no activity and no decisions; nothing to profile")
    return int(max(int(t.max()) for t in ts)) // HOUR


def _state(ds: Dataset, spec: FeatureSpec, bucket: int) -> FeatureState:
    """The replayed feature state of ``ds`` cut at ``bucket`` (the one pipeline)."""
    return replay(cut(ds, bucket), spec, with_affinity=False).state


def fit_model(ds: Dataset, as_of_bucket: int, *, train: np.ndarray | None = None,
              evaluate: np.ndarray | None = None, channels: Sequence[str] | None = None,
              folds: int = 5, seed: int = 0,
              counters: ProfileCounters | None = None,
              choose_window: bool = True) -> ProfileModel:
    """Fit the :class:`ProfileModel` for profiles at ``as_of_bucket``, point-in-time.

    The churn model's features come from the log cut at ``as_of - 14 d`` (users with an event
    before then), its labels from ``[as_of - 14 d, as_of)``; nothing at or after ``as_of`` is
    read. Validation: ``evaluate`` users (e.g. a scenario's held-out part) scored by the
    model fitted on ``train``; without them, ``folds``-fold cross-fitting over users.

    Args:
        ds: The whole dataset (it is cut here).
        as_of_bucket: Hour bucket of the profile time.
        train, evaluate: Optional boolean masks over ``ds.users``.
        channels: Channel vocabulary (None: from the log).
        folds: Cross-fitting folds when ``evaluate`` is None.
        seed: Fold assignment seed.
        counters: :func:`counters_from_dataset` of ``ds`` cut at ``as_of_bucket`` if the
            caller has them (their channels are the model's).
        choose_window: Choose between the lookback window and the whole history by
            :func:`choose_window_days` (False: the window, as models before the choice).
    """
    now = cut(ds, as_of_bucket)
    if counters is None:
        counters = counters_from_dataset(now, channels)
    s = counters.sends.sum(axis=1)
    open_rate = np.where(s > 0, counters.opens.sum(axis=1) / np.maximum(s, 1), 0.0)
    click_rate = np.where(s > 0, counters.clicks.sum(axis=1) / np.maximum(s, 1), 0.0)
    mon = counters.revenue[counters.purchases > 0]
    cuts = (np.quantile(mon, [1 / 3, 2 / 3]).tolist() if mon.size else [0.0, 0.0])
    b0 = as_of_bucket - CHURN_HOURS
    past = cut(ds, b0)
    model = ProfileModel(as_of_bucket * HOUR, None, [], [], "event", [1.0, 1.0], cuts,
                         list(counters.channels), open_rate.tolist(), click_rate.tolist())
    if not (len(past.activity) or len(past.pushes)):
        model.validation = {"error": f"no events before as-of minus {CHURN_DAYS} days: the "
                                     "churn model needs a longer log"}
        return model
    c0 = counters_from_dataset(past, counters.channels)
    fs0 = _state(past, FeatureSpec.fit(past), b0)
    users = np.flatnonzero(c0.first < _NO_FIRST)  # users known at b0
    tr = np.ones(users.size, bool) if train is None else np.asarray(train, bool)[users]
    cu = c0.take(users)
    model.recency_cap_h = float(min(b0 - int(cu.first.min()), _RECENCY_CAP_H))
    model.visit_unit = "session" if cu.visits.sum() > 0 else "event"
    # the UTC days the history at b0 touches (the window then covers all of it at b0)
    model.window_days = int(min((b0 - 1) // 24 - int(cu.first.min()) // 24 + 1, DAY_SLOTS))
    v0, e0 = _visits_exposure(fs0, users, cu, b0, model)
    model.gamma = fit_gamma(v0[tr], e0[tr])
    x = churn_features(fs0, users, cu, b0, model)
    later = counters_from_dataset(Dataset(ds.users, ds.items, _window(now.activity, b0),
                                          now.pushes.iloc[:0]), counters.channels)
    y = (later.last_act[users] < b0).astype(np.float64)  # no activity in [b0, as_of)
    choice: dict[str, Any] = {}
    if choose_window and model.window_days > 1 and 0 < y[tr].mean() < 1:
        choice = choose_window_days(past, fs0, users, cu, y, tr, model, folds=folds, seed=seed)
        if choice["window_days"] == 0:
            model.window_days = 0
            x = churn_features(fs0, users, cu, b0, model)
    if y[tr].min(initial=1) == y[tr].max(initial=0):
        what = "active" if y[tr].max(initial=0) == 0 else "inactive"
        model.validation = {"error": f"all {int(tr.sum())} training users were {what} in the "
                                     f"{CHURN_DAYS} days before as-of: no churn to learn from, "
                                     "churn_risk is left empty", "n": int(tr.sum())}
        return model
    coef, mean, scale = fit_logistic(x[tr], y[tr])
    model.coef, model.mean, model.scale = coef.tolist(), mean.tolist(), scale.tolist()
    model.x_min, model.x_max = x[tr].min(axis=0).tolist(), x[tr].max(axis=0).tolist()
    if evaluate is not None:
        ev = np.asarray(evaluate, bool)[users]
        val = calibration(model.churn(x[ev]), y[ev])
        val["method"] = "held-out users (fitted on the training users)"
    else:
        fold = np.random.default_rng(seed).integers(0, folds, users.size)
        pred = np.empty(users.size)
        for k in range(folds):
            te = fold == k
            c, m_, sc = fit_logistic(x[~te], y[~te])
            pred[te] = _sigmoid(c[0] + ((x[te] - m_) / sc) @ c[1:])
        val = calibration(pred, y)
        val["method"] = f"{folds}-fold cross-fitted over users"
    val["fitted_at_utc"] = str(from_unix_seconds(np.array([b0 * HOUR]))[0])
    if choice:
        val["window_choice"] = choice
    model.validation = val
    return model


def choose_window_days(past: Dataset, fs0: FeatureState, users: np.ndarray,
                       cu: ProfileCounters, y: np.ndarray, train: np.ndarray,
                       model: ProfileModel, *, folds: int = 5, seed: int = 0
                       ) -> dict[str, Any]:
    """Lookback window or whole history at as-of, chosen on the training users.

    At as-of the log is longer than at the fit cut ``b0``. Whether the extra history helps
    (a stationary user's rate is estimated better) or hurts (a combination of long history
    and long gap the fit never saw) is measured by emulating it inside the fit: a model
    fitted on the log cut down to its last ``h = window_days // 2`` UTC days before ``b0``
    (the fit's history halved, as the real fit's is half the as-of history on a 28-day log)
    is applied at ``b0`` to the full log's features with the ``h``-day window and with the
    whole history, cross-fitted over ``folds`` folds of the training users against the
    labels of ``[b0, as_of)``. The whole history is chosen if its mean log-loss is lower.

    Args:
        past: The log cut at ``b0``; fs0: its feature state at ``b0``.
        users: ``(k,)`` users known at ``b0``; cu: their counters; y: ``(k,)`` labels.
        train: ``(k,)`` training mask; model: the model being fitted (``gamma``,
            ``window_days``, ``recency_cap_h`` and ``visit_unit`` set).

    Returns:
        ``{"window_days": the choice (model.window_days or 0), "fit_window_days":
        model.window_days, "emulated_days": h, "logloss_window", "logloss_whole"}``.
    """
    b0 = (model.as_of // HOUR) - CHURN_HOURS
    h = model.window_days // 2
    lo = ((b0 - 1) // 24 - h + 1) * 24 * HOUR
    act, pu = past.activity, past.pushes
    short = Dataset(past.users, past.items,
                    act.loc[to_unix_seconds(act["ts"]) >= lo].reset_index(drop=True),
                    pu.loc[to_unix_seconds(pu["ts"]) >= lo].reset_index(drop=True),
                    meta=past.meta)
    cs = counters_from_dataset(short, cu.channels).take(users)
    known = cs.first < _NO_FIRST
    m_s = replace(model, window_days=h,
                  recency_cap_h=float(min(b0 - int(cs.first[known].min()), model.recency_cap_h))
                  if known.any() else model.recency_cap_h)
    v, e = _visits_exposure(fs0, users, cs, b0, m_s)
    m_s.gamma = fit_gamma(v[train], e[train])
    x_fit = churn_features(_state(short, FeatureSpec.fit(short), b0), users, cs, b0, m_s)
    x_win = churn_features(fs0, users, cu, b0, m_s)
    x_all = churn_features(fs0, users, cu, b0, replace(m_s, window_days=0))
    idx = np.flatnonzero(train)
    fold = np.random.default_rng(seed).integers(0, folds, idx.size)
    loss = np.zeros(2)
    for k in range(folds):
        fit, te = idx[fold != k], idx[fold == k]
        if not 0 < y[fit].mean() < 1 or not te.size:
            continue
        c, m_, sc = fit_logistic(x_fit[fit], y[fit])
        lo_x, hi_x = x_fit[fit].min(axis=0), x_fit[fit].max(axis=0)
        for j, xa in enumerate((x_win, x_all)):
            p = np.clip(_sigmoid(c[0] + ((np.clip(xa[te], lo_x, hi_x) - m_) / sc) @ c[1:]),
                        1e-9, 1 - 1e-9)
            loss[j] -= (y[te] * np.log(p) + (1 - y[te]) * np.log(1 - p)).sum()
    loss /= max(idx.size, 1)
    return {"window_days": model.window_days if loss[0] <= loss[1] else 0,
            "fit_window_days": model.window_days, "emulated_days": h,
            "logloss_window": round(float(loss[0]), 6), "logloss_whole": round(float(loss[1]), 6)}


def _window(act: pd.DataFrame, b0: int) -> pd.DataFrame:
    if not len(act):
        return act
    return act.loc[to_unix_seconds(act["ts"]) >= b0 * HOUR].reset_index(drop=True)


def as_of_bucket(ds: Dataset, as_of: str | int | None) -> int:
    """Hour bucket of ``as_of`` (ISO time or unix seconds; None = the hour after the log's
    last event, so every event counts).

    Raises:
        DataError: ``as_of`` is unparsable or not after the log's first event.
    """
    if as_of is None:
        return last_bucket(ds) + 1
    text = str(as_of).strip()
    try:
        t = (pd.Timestamp(int(text), unit="s") if text.isascii() and text.isdigit()
             else pd.Timestamp(text))
    except (ValueError, TypeError, OverflowError):
        t = pd.NaT
    if t is pd.NaT:
        raise DataError(f"--as-of {as_of!r} is not a time; pass an ISO time such as "
                        "2026-03-29T00:00:00Z or unix seconds")
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    b = int(pd.Timestamp(t).timestamp()) // HOUR
    first = min(int(to_unix_seconds(x["ts"]).min()) for x in (ds.activity, ds.pushes)
                if len(x)) // HOUR if (len(ds.activity) or len(ds.pushes)) else b
    if b <= first:
        raise DataError(f"--as-of {as_of} is not after the log's first event "
                        f"({from_unix_seconds(np.array([first * HOUR]))[0]}); nothing to profile")
    return b


def build_profiles(ds: Dataset, as_of: str | int | None = None, *,
                   train: np.ndarray | None = None, evaluate: np.ndarray | None = None,
                   model: ProfileModel | None = None,
                   spec: FeatureSpec | None = None) -> ProfileResult:
    """Profiles of every user of ``ds`` at ``as_of`` (see the module docstring).

    Args:
        ds: The dataset.
        as_of: Profile time (see :func:`as_of_bucket`).
        train, evaluate: Optional user masks for the churn model (:func:`fit_model`).
        model: Use this fitted model instead of fitting one.
        spec: Use this feature spec instead of fitting one on the log cut at ``as_of`` (e.g.
            a server's, to compare with its live profiles).
    """
    b = as_of_bucket(ds, as_of)
    now = cut(ds, b)
    counters = counters_from_dataset(now, None if model is None else model.channels)
    if model is None:
        model = fit_model(ds, b, train=train, evaluate=evaluate, counters=counters)
    spec = FeatureSpec.fit(now) if spec is None else spec
    fs = _state(now, spec, b)
    users = np.arange(len(ds.users))
    cols = profile_rows(fs, users, counters, b, model)
    how = np.stack([fs.day_profile(users, np.zeros(users.size, np.int64), "weekpart"),
                    fs.day_profile(users, np.full(users.size, 5, np.int64), "weekpart")],
                   axis=1)
    table = pd.DataFrame({"user_id": ds.users["user_id"].astype(str).to_numpy(), **cols})
    return ProfileResult(table, model, b * HOUR, how, counters)


def write_snapshot(ds: Dataset, directory: Path) -> tuple[str, ...]:
    """Fit the profile model at the end of ``ds`` and write it (:data:`MODEL_FILE`) with
    every user's counters (:data:`COUNTERS_FILE`) into ``directory`` (``pushrl state
    import``'s history dir, for the server); returns the file names."""
    b = last_bucket(ds) + 1
    counters = counters_from_dataset(cut(ds, b))
    model = fit_model(ds, b, counters=counters)
    np.savez(directory / COUNTERS_FILE, **counters.to_arrays())  # type: ignore[arg-type]
    (directory / MODEL_FILE).write_text(model.to_json())
    return COUNTERS_FILE, MODEL_FILE
