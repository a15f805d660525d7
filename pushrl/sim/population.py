"""The fitted user population: one entry per logged user, bootstrapped by the simulator.

A simulated user is a logged user re-drawn with replacement: it keeps the user's time zone,
fitted activity rhythm and category mix, and its :class:`~pushrl.data.features.FeatureState`
is warm-started from the user's logged counts (activity per local hour of week and per
category, pushes sent and opened), so ``activity_at_hour``, ``engagement`` and item affinity
start from the user's own history. Recent windows start empty (no push in the last 14 days).
Organic activity then flows from the fitted rhythm during the episode. A user who
unsubscribed in the log (:func:`pushrl.data.subscription.unsubscribed_users`, the rule the
server's ``pushrl state import`` blocks them by) starts the episode unsubscribed under the
``"week"`` and ``"full"`` warm starts (episodes start after the log); ``"none"`` starts
everyone subscribed, as the log did.

Warm-start modes (scenario ``warm_start``): ``"week"`` (default) replays the user's first
:data:`WARM_DAYS` logged days, so episode features stay within the history lengths the
response models were fitted on (the log started from empty states); ``"full"`` replays the
whole log (more history than any fitting row had: the fitted open model then extrapolates,
see the validation report); ``"none"`` starts empty, exactly as the log did (the replay
test uses it).

Rhythm (expected events in one hour at local hour of week ``h = 24 * dow + hour``)::

    rate_how[u, h] = rate[u] * 168 * share[u, h]

``rate`` is a gamma-Poisson posterior mean of the user's events per hour,
``(n_u + 2) / (H + 2 / m)`` with ``m`` the population mean. ``share`` is shrunk in two levels
from the user's logged counts per local hour of week (the pipeline's lifetime counts):

1. hour-of-day profile ``q[u, hour]``: the user's counts pooled over the 7 days, circularly
   smoothed (Gaussian, ``smooth`` hours), shrunk toward the population hour-of-day profile
   with ``k_pop`` pseudo-events;
2. ``share[u, h]``: the user's hour-of-week counts shrunk with ``k_day`` pseudo-events toward
   ``q[u, hour]`` times the population's day-of-week modulation at that hour.

``(k_pop, k_day, smooth)`` are chosen by held-out likelihood on the last quarter of the log
(:func:`pushrl.sim.fit.select_rhythm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pushrl.data.features import FeatureSpec, ReplayResult
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.subscription import unsubscribed_users
from pushrl.units import HOUR

RATE_PRIOR_EVENTS = 2.0
#: Days of logged history replayed into a user's state by the ``"week"`` warm start.
WARM_DAYS = 7
WARM_STARTS = ("week", "full", "none")
#: Default rhythm shrinkage ``(k_pop, k_day, smooth_hours)``; fitting selects its own.
DEFAULT_RHYTHM: tuple[float, float, float] = (20.0, 80.0, 1.0)


def _smooth24(x: np.ndarray, sigma: float) -> np.ndarray:
    """Circular Gaussian smoothing along the last axis (24 hours)."""
    if sigma <= 0:
        return x
    d = np.arange(24)
    d = np.minimum(d, 24 - d)
    kern = np.exp(-0.5 * (d / sigma) ** 2)
    kern /= kern.sum()
    f = np.fft.rfft(x, axis=-1) * np.fft.rfft(kern)
    return np.maximum(np.fft.irfft(f, n=24, axis=-1), 0.0)


def rhythm_share(counts: np.ndarray, prior_how: np.ndarray, k_pop: float, k_day: float,
                 smooth: float) -> np.ndarray:
    """Two-level shrunk hour-of-week share (module docstring), shape ``(n, 168)``.

    Args:
        counts: ``(n, 168)`` activity counts per local hour of week.
        prior_how: ``(168,)`` population share per local hour of week.
        k_pop: Pseudo-events pulling the hour-of-day profile to the population's.
        k_day: Pseudo-events pulling the hour-of-week counts to the pooled profile.
        smooth: Gaussian smoothing of the hour-of-day counts, in hours (0 = none).
    """
    c = np.asarray(counts, np.float64)
    tot = c.sum(axis=1, keepdims=True)
    pop = np.asarray(prior_how, np.float64).reshape(7, 24)
    pop_hod = pop.sum(axis=0)
    day_mod = (pop / pop_hod).reshape(168)
    hod = _smooth24(c.reshape(-1, 7, 24).sum(axis=1), smooth)
    q = (hod + k_pop * pop_hod) / (hod.sum(axis=1, keepdims=True) + k_pop)
    pooled = np.tile(q, 7) * day_mod
    return (c + k_day * pooled) / (tot + k_day)


@dataclass
class Population:
    """Per logged user parameters, aligned with ``user_id`` (``n`` users).

    Attributes:
        user_id: ``(n,)`` logged user ids.
        timezone: ``(n,)`` IANA zone names.
        rate_how: ``(n, 168)`` expected organic events per hour at each local hour of week.
        cat_cdf: ``(n, n_categories + 1)`` cumulative distribution of an event's category,
            column 0 = event without an item.
        hist_how: ``(n, 168)`` logged activity counts per local hour of week (warm start).
        hist_cat: ``(n, n_categories)`` logged activity counts per category (warm start).
        hist_sends: ``(n,)`` pushes sent in the log.
        hist_opens: ``(n,)`` pushes opened in the log.
        p_send: ``(n,)`` logging policy's send probability per opportunity (mean
            ``pscore_send``, else the send rate).
        warm_how, warm_cat, warm_sends, warm_opens: The same counts over the first
            :data:`WARM_DAYS` days of the log.
        unsubscribed: ``(n,)`` bool, the user unsubscribed in the log (all False for
            populations fitted before this field existed: refit to get it).
    """

    user_id: np.ndarray
    timezone: np.ndarray
    rate_how: np.ndarray
    cat_cdf: np.ndarray
    hist_how: np.ndarray
    hist_cat: np.ndarray
    hist_sends: np.ndarray
    hist_opens: np.ndarray
    p_send: np.ndarray
    warm_how: np.ndarray
    warm_cat: np.ndarray
    warm_sends: np.ndarray
    warm_opens: np.ndarray
    unsubscribed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        if self.unsubscribed.size == 0 and len(self):  # an artifact from before the field
            self.unsubscribed = np.zeros(len(self), bool)

    def subscribed(self, idx: np.ndarray, kind: str = "week") -> np.ndarray:
        """Whether population rows ``idx`` ``(k,)`` start subscribed under warm start
        ``kind`` (module docstring), bool ``(k,)``."""
        idx = np.asarray(idx, np.int64)
        if kind == "none":
            return np.ones(idx.shape, bool)
        return ~np.asarray(self.unsubscribed, bool)[idx]

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def history(self, idx: np.ndarray, shift_hours: int = 0,
                kind: str = "week") -> dict[str, np.ndarray] | None:
        """Warm-start counts for population rows ``idx`` (rhythm rolled by ``shift_hours``).

        Args:
            idx: ``(k,)`` population rows.
            shift_hours: What-if rhythm shift.
            kind: ``"week"``, ``"full"`` or ``"none"`` (returns None).
        """
        if kind == "none":
            return None
        pre = "warm" if kind == "week" else "hist"
        how = getattr(self, f"{pre}_how")[idx]
        if shift_hours:
            how = np.roll(how, shift_hours, axis=1)
        return {"how": how, "cat": getattr(self, f"{pre}_cat")[idx],
                "sends": getattr(self, f"{pre}_sends")[idx],
                "opens": getattr(self, f"{pre}_opens")[idx]}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the artifact's ``npz`` (strings as fixed-width unicode)."""
        return {f"pop_{k}": (v.astype(str) if v.dtype == object else v)
                for k, v in vars(self).items()}

    @classmethod
    def from_arrays(cls, arrs: Mapping[str, npt.ArrayLike]) -> Population:
        """Inverse of :meth:`to_arrays`."""
        return cls(**{k: np.asarray(arrs[f"pop_{k}"]) for k in cls.__dataclass_fields__
                      if f"pop_{k}" in arrs or k != "unsubscribed"})


def fit_population(ds: Dataset, spec: FeatureSpec, rr: ReplayResult,
                   rhythm: tuple[float, float, float] = DEFAULT_RHYTHM,
                   warm: dict[str, np.ndarray] | None = None) -> Population:
    """Fit the population from a replayed dataset.

    Args:
        ds: The dataset.
        spec: Feature pipeline parameters.
        rr: ``replay(ds, spec)``; its final state holds every user's lifetime counts.
        rhythm: ``(k_pop, k_day, smooth)`` of :func:`rhythm_share`.
        warm: ``export_history`` of the first :data:`WARM_DAYS` days (default: empty).
    """
    n = len(ds.users)
    users = np.arange(n)
    hist = rr.state.export_history(users)
    share = rhythm_share(hist["how"], np.asarray(spec.prior_how), *rhythm)
    act = ds.activity
    sec = to_unix_seconds(act["ts"]) if len(act) else np.zeros(0, np.int64)
    psec = to_unix_seconds(ds.pushes["ts"])
    lo = min(int(sec.min()) if sec.size else int(psec.min()), int(psec.min()))
    hi = max(int(sec.max()) if sec.size else int(psec.max()), int(psec.max()))
    hours = max((hi - lo) / HOUR, 1.0)
    n_ev = hist["how"].sum(axis=1).astype(np.float64)
    m = max(float(n_ev.mean()) / hours, 1e-6)
    rate = (n_ev + RATE_PRIOR_EVENTS) / (hours + RATE_PRIOR_EVENTS / m)
    rate_how = (rate[:, None] * 168.0 * share).astype(np.float32)
    # category of an event: no item with the user's (shrunk) no-item share, else the
    # shrunk category mix of the pipeline (the same shrinkage as its affinity feature)
    cat = hist["cat"].astype(np.float64)
    k = spec.shrink_cat
    prior_cat = np.asarray(spec.prior_cat)
    mix = (cat + k * prior_cat) / (cat.sum(axis=1, keepdims=True) + k)
    pop_item_share = float(cat.sum() / max(n_ev.sum(), 1.0))
    item_share = (cat.sum(axis=1) + 10 * pop_item_share) / (n_ev + 10)
    probs = np.concatenate([(1 - item_share)[:, None], item_share[:, None] * mix], axis=1)
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool)
    ps = (p["pscore_send"].to_numpy(float) if "pscore_send" in p
          else np.full(len(p), np.nan))
    ps = np.where(np.isnan(ps), sent.astype(float), ps)
    cnt = np.bincount(rr.user_index, minlength=n)
    p_send = np.bincount(rr.user_index, weights=ps, minlength=n) / np.maximum(cnt, 1)
    return Population(
        user_id=ds.users["user_id"].astype(str).to_numpy(),
        timezone=ds.users["timezone"].astype(str).to_numpy(),
        rate_how=rate_how, cat_cdf=np.cumsum(probs, axis=1).astype(np.float64),
        hist_how=hist["how"].astype(np.float32), hist_cat=hist["cat"].astype(np.float32),
        hist_sends=hist["sends"].astype(np.int32), hist_opens=hist["opens"].astype(np.int32),
        p_send=p_send.astype(np.float64),
        unsubscribed=np.isin(users, unsubscribed_users(ds)),
        **{f"warm_{k}": (warm[k] if warm is not None else np.zeros_like(hist[k])).astype(
            hist[k].dtype if k in ("sends", "opens") else np.float32)
           for k in ("how", "cat", "sends", "opens")})
