"""A synthetic push world with known ground truth, written as pushlog v1.

Users live in several IANA time zones (DST included), each with an individual daily
activity rhythm (weekends peak later), category preferences and an engagement level.
Pushes are opened with a probability that rises with the user's activity at that local hour
and with the pushed item's category affinity, and falls with fatigue from recent pushes. The
unsubscribe hazard per push grows with the pushes of the last 7 days. Clicks and conversions
depend on the item (quality, price).

The logging policy is randomised: at every slot a user is considered, a push is sent with a
user-level probability ``p_send`` and the item is uniform over all items; both are logged
(``pscore`` = joint probability of the logged action, ``pscore_send`` = probability of
sending), including the not-sent opportunities.

The true parameters are written to ``ground_truth.json`` and the per-user latents to
``ground_truth_users.parquet`` so that later stages can check what they recover and compute
oracle policies with :class:`TrueWorld`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pushrl.data.channel_world import ChannelChooser, ChannelRun, ChannelTruth
from pushrl.data.contract import PUSHLOG_VERSION
from pushrl.data.features import F, FeatureSpec, FeatureState, TemplateRecency
from pushrl.data.loggers import make_logger
from pushrl.data.io import Dataset, from_unix_seconds, write_dataset, write_table
from pushrl.data.lapse_world import Lifecycle
from pushrl.data.timezones import TimezoneTable, local_clock
from pushrl.units import HOUR

TIMEZONES = ("America/Los_Angeles", "America/New_York", "America/Sao_Paulo", "Europe/London",
             "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney")
TZ_WEIGHTS = (0.16, 0.22, 0.08, 0.14, 0.16, 0.08, 0.10, 0.06)
CATEGORIES = ("shoes", "dresses", "tops", "bags", "jewelry", "outdoor", "home", "beauty")
#: Monday 2026-03-02 00:00 UTC: US, EU and Australian DST changes fall inside 28 days.
DEFAULT_START = "2026-03-02T00:00:00Z"


@dataclass(frozen=True)
class WorldParams:
    """Scalar ground-truth parameters of the synthetic world (see module docstring)."""

    open_intercept: float = -2.0
    open_activity: float = 0.7       # per unit of log relative activity at the local hour
    open_affinity: float = 0.6       # per unit of log category affinity
    open_engagement: float = 0.8     # per unit of the latent engagement z ~ N(0, 1)
    fatigue_24h: float = 0.35        # logit drop per push in the previous 24 h
    fatigue_7d: float = 0.06         # logit drop per push in the previous 7 days
    click_intercept: float = -0.4
    click_affinity: float = 0.5
    click_quality: float = 0.5
    convert_intercept: float = -1.6
    convert_price: float = -0.7      # per unit of log(price / median price)
    unsub_intercept: float = -6.0
    unsub_volume_7d: float = 0.16    # logit rise per push in the previous 7 days
    unsub_engagement: float = -0.3
    sessions_per_day_median: float = 1.6
    views_per_session: float = 1.5
    cart_per_view: float = 0.15
    purchase_per_cart: float = 0.3
    p_send_levels: tuple[float, ...] = (0.01, 0.02, 0.04)
    # World-family knobs (pushrl.data.worlds). Their defaults reproduce the default world
    # exactly; ground_truth.json records them only when they differ from the default.
    world: str = "default"
    peak_hours: tuple[float, ...] = (8.0, 12.5, 19.0, 21.0)   # main daily peak, local hour
    peak_probs: tuple[float, ...] = (0.2, 0.2, 0.35, 0.25)
    second_peak_offsets: tuple[float, ...] = (-10.0, -6.0, 4.0)  # hours from the main peak
    weekend_shift: float = 1.5       # weekend peaks move this many hours later
    weekend_amp: float = 1.2         # weekend activity multiplier
    weekend_peak_hours: tuple[float, ...] = ()  # non-empty: own weekend main peak, drawn
    third_peak_amp: float = 0.0      # > 0: a third daily peak, amplitude ~ U(0, this)
    night_share: float = 0.0         # share of users whose main peak is 23:00-04:00
    pref_concentration: float = 0.6  # Dirichlet alpha of category tastes (low = sharp)
    unsub_threshold_7d: float = 0.0  # hazard counts only pushes above this many in 7 days
    unsub_saturation_7d: float = 0.0  # > 0: the volume term saturates at this many pushes
    logger: str = "uniform"          # uniform | eps-greedy | thompson (pushrl.data.loggers)
    logger_epsilon: float = 0.1
    logger_send_high: float = 0.5
    # Message templates (off by default: no template columns, no extra draws). Arm t lifts
    # the open logit by template_lift[t] for light users and template_lift_heavy[t] for heavy
    # ones (sessions_per_day above the median), plus template_deal_lift[t] when the item's
    # discount_pct is >= 30 and minus it otherwise, minus template_fatigue * exp(-h /
    # recovery) when the user saw the same template h hours ago (a recovering arm).
    template_ids: tuple[str, ...] = ()
    template_lift: tuple[float, ...] = ()
    template_lift_heavy: tuple[float, ...] = ()
    template_deal_lift: tuple[float, ...] = ()
    template_fatigue: float = 0.0
    template_recovery_h: float = 48.0
    # Channels (off by default: no channel columns, no extra draws; issue 17): see
    # pushrl.data.channel_world for the meaning of each per-channel entry.
    channel_ids: tuple[str, ...] = ()
    channel_optin: tuple[float, ...] = ()
    channel_lift: tuple[float, ...] = ()
    channel_lift_heavy: tuple[float, ...] = ()
    channel_fatigue: tuple[float, ...] = ()
    channel_unsub: tuple[float, ...] = ()
    channel_session_only: tuple[float, ...] = ()
    channel_none: float = 0.0
    # Customer lifecycles (off while lapse_median_days is 0: no extra draws; issue 17): see
    # pushrl.data.lapse_world. Active spells end at a Lomax(lapse_tail) stop time of median
    # lapse_median_days or by a gap hazard (per day lapse_gap_hazard * (gap /
    # lapse_gap_days)^2); dormant users visit at lapse_residual times the rate and a visit
    # re-activates them with probability lapse_return.
    lapse_median_days: float = 0.0
    lapse_tail: float = 1.2
    lapse_gap_days: float = 10.0
    lapse_gap_hazard: float = 0.25
    lapse_residual: float = 0.03
    lapse_return: float = 0.25
    lapse_dormant_start: float = 0.3


#: WorldParams fields of the original default world (always written to ground_truth.json).
_BASE_PARAMS = ("open_intercept", "open_activity", "open_affinity", "open_engagement",
                "fatigue_24h", "fatigue_7d", "click_intercept", "click_affinity",
                "click_quality", "convert_intercept", "convert_price", "unsub_intercept",
                "unsub_volume_7d", "unsub_engagement", "sessions_per_day_median",
                "views_per_session", "cart_per_view", "purchase_per_cart", "p_send_levels")


def params_to_json(p: WorldParams) -> dict[str, Any]:
    """The parameters as written to ``ground_truth.json``: family knobs only when they differ
    from the default (so the default world's file is unchanged)."""
    base = WorldParams()
    return {k: v for k, v in asdict(p).items()
            if k in _BASE_PARAMS or v != getattr(base, k)}


@dataclass
class SynthConfig:
    """Size and seed of a synthetic dataset."""

    users: int = 2000
    days: int = 28
    seed: int = 0
    items: int = 100
    slots_per_day: int = 24
    start: str = DEFAULT_START
    params: WorldParams = field(default_factory=WorldParams)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _bump(hours: np.ndarray, peak: np.ndarray, width: np.ndarray | float) -> np.ndarray:
    d = np.abs(hours - peak) % 24
    d = np.minimum(d, 24 - d)
    return np.exp(-0.5 * (d / width) ** 2)


def _rhythm(users: pd.DataFrame, p: WorldParams) -> np.ndarray:
    """``rate[u, weekend, hour]``: expected organic sessions in that local hour.

    Two peaks per user (``peak1``, ``peak2``), a third when the users table has ``peak3``;
    on weekends every peak moves ``weekend_shift`` hours later, or the main peak is the
    user's own ``peak1_we`` when the table has it.
    """
    hours = np.arange(24, dtype=float)[None, :]
    rate = np.empty((len(users), 2, 24))
    col = {k: users[k].to_numpy()[:, None] for k in
           ("amp1", "peak1", "width1", "amp2", "peak2", "width2")}
    for we, shift, amp in ((0, 0.0, 1.0), (1, p.weekend_shift, p.weekend_amp)):
        centre1 = (users["peak1_we"].to_numpy()[:, None] if we and "peak1_we" in users
                   else col["peak1"] + shift)
        prof = (0.05 + col["amp1"] * _bump(hours, centre1, col["width1"])
                + col["amp2"] * _bump(hours, col["peak2"] + shift, col["width2"]))
        if "peak3" in users:
            prof = prof + users["amp3"].to_numpy()[:, None] * _bump(
                hours, users["peak3"].to_numpy()[:, None] + shift, 1.5)
        prof = prof / prof.sum(axis=1, keepdims=True)
        rate[:, we, :] = amp * users["sessions_per_day"].to_numpy()[:, None] * prof
    return rate


class TrueWorld:
    """Ground truth of a synthetic world: true rates and probabilities, vectorised over users.

    Args:
        params: Scalar parameters.
        users: Per-user latents (``ground_truth_users`` table).
        items: Items table with ``category``, ``price`` and ``quality``.
    """

    def __init__(self, params: WorldParams, users: pd.DataFrame, items: pd.DataFrame) -> None:
        self.params = params
        self.users = users.reset_index(drop=True)
        self.items = items.reset_index(drop=True)
        self.item_cat = pd.Categorical(items["category"], categories=CATEGORIES).codes.astype(
            np.int64)
        self.price = items["price"].to_numpy(float)
        self.quality = items["quality"].to_numpy(float)
        self.pref = np.stack([users[f"pref_{c}"].to_numpy(float) for c in CATEGORIES], axis=1)
        self.z = users["engagement_z"].to_numpy(float)
        self.p_send = users["p_send"].to_numpy(float)
        self.rate = _rhythm(users, params)
        rate = self.rate
        # relative activity: rate at the hour over the user's mean hourly rate across the week
        week_mean = (5 * rate[:, 0, :].sum(1) + 2 * rate[:, 1, :].sum(1)) / 168.0
        self.rel_activity = rate / week_mean[:, None, None]
        #: heavy users (sessions_per_day above the world's median): the template segment
        self.heavy = users["sessions_per_day"].to_numpy(float) > params.sessions_per_day_median
        self.n_templates = len(params.template_ids)
        lens = {len(getattr(params, k)) for k in ("template_ids", "template_lift",
                                                  "template_lift_heavy", "template_deal_lift")}
        if len(lens) > 1:
            raise ValueError("template_ids, template_lift, template_lift_heavy and "
                             "template_deal_lift must have one entry per template")
        #: +1 for items with discount_pct >= 30, else -1 (the deal copy's item effect)
        self.deal = (np.where(items["discount_pct"].to_numpy(float) >= 30, 1.0, -1.0)
                     if "discount_pct" in items else np.zeros(len(items)))
        #: channel effects (pushrl.data.channel_world), None in a push-only world
        self.channels = (ChannelTruth(params.channel_ids, params.channel_optin,
                                      params.channel_lift, params.channel_lift_heavy,
                                      params.channel_fatigue, params.channel_unsub,
                                      params.channel_session_only, self.heavy)
                         if params.channel_ids else None)

    @classmethod
    def load(cls, dirpath: str | Path) -> TrueWorld:
        """Load the ground truth written beside a synthetic dataset."""
        d = Path(dirpath)
        gt = json.loads((d / "ground_truth.json").read_text())
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in gt["params"].items()}
        params = WorldParams(**kw)
        users = pd.read_parquet(d / "ground_truth_users.parquet")
        items = pd.read_parquet(d / "items.parquet")
        return cls(params, users, items)

    def open_logit(self, users: np.ndarray, weekend: np.ndarray, hour: np.ndarray,
                   items: np.ndarray, sends_24h: np.ndarray, sends_7d: np.ndarray) -> np.ndarray:
        """Logit of P(open) for pushes of ``items`` to ``users`` (all arrays broadcast)."""
        return self.open_logit_given(np.log(self.rel_activity[users, weekend, hour]),
                                     self.log_affinity(users, items), self.z[users], sends_24h,
                                     sends_7d)

    def open_logit_given(self, log_rel: np.ndarray | float, log_aff: np.ndarray,
                         z: np.ndarray, sends_24h: np.ndarray | float,
                         sends_7d: np.ndarray | float) -> np.ndarray:
        """Logit of P(open) from the user's latents (true or estimated, all broadcast):
        ``log_rel`` log relative activity now, ``log_aff`` from :meth:`log_affinity`, ``z``
        engagement."""
        p = self.params
        return (p.open_intercept + p.open_activity * log_rel + p.open_affinity * log_aff
                + p.open_engagement * z - p.fatigue_24h * sends_24h - p.fatigue_7d * sends_7d)

    def template_logit(self, users: np.ndarray, items: np.ndarray, templates: np.ndarray,
                       hours_since: np.ndarray | float) -> np.ndarray:
        """Open-logit shift of showing arm ``templates`` with ``items`` to ``users`` who last
        saw it ``hours_since`` hours ago (broadcast; 336 = never): the segment and deal lifts
        minus the recovering fatigue."""
        p = self.params
        lift = np.stack([np.asarray(p.template_lift, float),
                         np.asarray(p.template_lift_heavy, float)])
        t = np.asarray(templates, np.int64)
        fat = p.template_fatigue * np.exp(-np.asarray(hours_since, float)
                                          / p.template_recovery_h)
        return (lift[self.heavy[users].astype(np.int64), t]
                + np.asarray(p.template_deal_lift, float)[t] * self.deal[items] - fat)

    def log_affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``log(pref[user, category of item] * n_categories)`` (broadcast); 0 = average."""
        return np.log(self.pref[users, self.item_cat[items]] * len(CATEGORIES))

    def p_click(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(click | open)."""
        return self.p_click_given(self.log_affinity(users, items), items)

    def p_click_given(self, log_aff: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(click | open) from a true or estimated log affinity (see :meth:`log_affinity`)."""
        p = self.params
        return _sigmoid(p.click_intercept + p.click_affinity * log_aff
                        + p.click_quality * self.quality[items])

    def p_convert(self, items: np.ndarray) -> np.ndarray:
        """P(convert | click)."""
        p = self.params
        med = float(np.median(self.price))
        return _sigmoid(p.convert_intercept + p.convert_price * np.log(self.price[items] / med))

    def unsub_hazard(self, users: np.ndarray, sends_7d: np.ndarray,
                     shift: np.ndarray | float = 0.0) -> np.ndarray:
        """P(unsubscribe | a push is sent now), given pushes in the previous 7 days
        (``shift``: the channel's logit shift, 0 for push-only worlds)."""
        p = self.params
        volume = sends_7d
        if p.unsub_threshold_7d > 0:
            volume = np.maximum(volume - p.unsub_threshold_7d, 0.0)
        if p.unsub_saturation_7d > 0:
            volume = p.unsub_saturation_7d * (1.0 - np.exp(-volume / p.unsub_saturation_7d))
        return _sigmoid(p.unsub_intercept + p.unsub_volume_7d * volume
                        + p.unsub_engagement * self.z[users] + shift)

    def p_no_session(self, start_bucket: int, hours: int) -> np.ndarray:
        """True probability that each user has no session (so no activity at all) in the
        hour buckets ``[start_bucket, start_bucket + hours)``: ``exp(-expected sessions)``
        (sessions are Poisson per hour). Shape ``(n_users,)``; the truth of churn risk."""
        tz = self.users["timezone"].astype(str).to_numpy()
        tzt = TimezoneTable(sorted(set(tz.tolist())))
        idx = np.array([tzt.index(t) for t in tz], np.int64)
        rows = np.arange(tz.size)
        lam = np.zeros(tz.size)
        for b in range(start_bucket, start_bucket + hours):
            hour, dow, _ = local_clock(b * HOUR, tzt.offset_seconds(idx, np.full(tz.size, b)))
            lam += self.rate[rows, (dow >= 5).astype(np.int64), hour]
        return np.exp(-lam)

    def expected_value_per_open(self, users: np.ndarray, items: np.ndarray,
                                w_click: float, w_revenue: float) -> np.ndarray:
        """E[click and revenue reward | open] for (user, item) pairs (broadcast)."""
        pc = self.p_click(users, items)
        return pc * (w_click + w_revenue * self.p_convert(items) * self.price[items])


def _make_items(cfg: SynthConfig, rng: np.random.Generator) -> pd.DataFrame:
    n = cfg.items
    cat = np.array(CATEGORIES)[np.arange(n) % len(CATEGORIES)]
    base = {"shoes": 80, "dresses": 60, "tops": 30, "bags": 90, "jewelry": 50, "outdoor": 70,
            "home": 40, "beauty": 25}
    price = np.round(np.array([base[c] for c in cat]) * rng.lognormal(0, 0.35, n), 2)
    items = pd.DataFrame({"item_id": [f"i{j:04d}" for j in range(n)], "category": cat,
                          "price": price, "quality": np.round(rng.normal(0, 1, n), 3)})
    if cfg.params.template_ids:  # what message templates fill in; an own stream
        trng = np.random.default_rng([cfg.seed, 7])
        items["name"] = [f"{c.capitalize()} No. {j}" for j, c in enumerate(cat)]
        items["discount_pct"] = trng.choice(np.array([0, 10, 20, 30, 40]), n).astype(float)
    return items


def _make_users(cfg: SynthConfig, rng: np.random.Generator, first: int = 0) -> pd.DataFrame:
    n = cfg.users
    p = cfg.params
    tz = rng.choice(np.array(TIMEZONES), size=n, p=np.array(TZ_WEIGHTS))
    peak1 = rng.choice(np.array(p.peak_hours), size=n, p=list(p.peak_probs))
    peak1 = (peak1 + rng.normal(0, 0.8, n)) % 24
    peak2 = (peak1 + rng.choice(np.array(p.second_peak_offsets), size=n)) % 24
    pref = rng.dirichlet(np.full(len(CATEGORIES), p.pref_concentration), size=n)
    df = pd.DataFrame({
        "user_id": [f"u{j:07d}" for j in range(first, first + n)],
        "timezone": tz,
        "engagement_z": rng.normal(0, 1, n),
        "sessions_per_day": p.sessions_per_day_median * rng.lognormal(0, 0.5, n),
        "peak1": peak1, "width1": rng.uniform(1.0, 2.5, n), "amp1": rng.uniform(0.6, 1.0, n),
        "peak2": peak2, "width2": rng.uniform(1.5, 3.0, n), "amp2": rng.uniform(0.0, 0.4, n),
        "p_send": rng.choice(np.array(p.p_send_levels), size=n),
        "platform": rng.choice(np.array(["ios", "android", "web"]), size=n, p=[0.45, 0.45, 0.1]),
        "tenure_days": rng.integers(1, 1500, n),
    })
    for j, c in enumerate(CATEGORIES):
        df[f"pref_{c}"] = pref[:, j]
    _family_users(df, p, rng)
    return df


def _family_users(df: pd.DataFrame, p: WorldParams, rng: np.random.Generator) -> None:
    """Latents of the world families; draws nothing in the default world (its stream and
    columns stay the original's)."""
    n = len(df)
    if p.night_share > 0:
        night = rng.random(n) < p.night_share
        df["night"] = night
        late = (rng.uniform(23.0, 28.0, n)) % 24
        df.loc[night, "peak1"] = late[night]
        df.loc[night, "peak2"] = ((late + rng.choice(np.array(p.second_peak_offsets), size=n))
                                  % 24)[night]
    if p.weekend_peak_hours:
        df["peak1_we"] = (rng.choice(np.array(p.weekend_peak_hours), size=n)
                          + rng.normal(0, 0.8, n)) % 24
        if p.night_share > 0:
            df.loc[df["night"], "peak1_we"] = df.loc[df["night"], "peak1"]
    if p.third_peak_amp > 0:
        df["peak3"] = (df["peak1"].to_numpy() + rng.uniform(5.0, 8.0, n)) % 24
        df["amp3"] = rng.uniform(0.0, p.third_peak_amp, n)


@dataclass
class _Cols:
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **cols: np.ndarray) -> None:
        for k, v in cols.items():
            self.parts.setdefault(k, []).append(v)

    def cat(self, k: str, dtype: npt.DTypeLike) -> np.ndarray:
        p = self.parts.get(k, [])
        return np.concatenate(p).astype(dtype, copy=False) if p else np.zeros(0, dtype)


def world_spec() -> FeatureSpec:
    """The feature spec the synthetic world's own state uses (uniform priors): a policy that
    decides inside :func:`generate` (``template_chooser``) sees features under this spec."""
    return FeatureSpec(tuple(CATEGORIES), {}, tuple([1 / 168] * 168),
                       tuple([1 / len(CATEGORIES)] * len(CATEGORIES)))


#: ``chooser(state, users, bucket, items, hours) -> (arms, pscore)``: the message template of
#: each sent push (``hours``: ``(n, n_templates)`` from the pipeline's
#: :class:`~pushrl.data.features.TemplateRecency`); None = uniform over the world's templates.
TemplateChooser = Callable[[FeatureState, np.ndarray, int, np.ndarray, np.ndarray],
                           tuple[np.ndarray, np.ndarray]]


def generate(cfg: SynthConfig, progress: Callable[[int, int], None] | None = None, *,
             rng: np.random.Generator | None = None,
             items: pd.DataFrame | None = None, first_user: int = 0,
             first_decision: int = 0, template_chooser: TemplateChooser | None = None,
             channel_chooser: ChannelChooser | None = None
             ) -> tuple[Dataset, dict[str, Any], pd.DataFrame]:
    """Generate a synthetic pushlog v1 dataset (or one user part of a larger one).

    Args:
        cfg: Size, seed and world parameters.
        progress: Optional callable ``progress(done_steps, total_steps)``.
        rng: Random stream; None = ``default_rng(cfg.seed)`` (the whole-dataset stream).
        items: The items table of a multi-part dataset; None draws it from ``rng`` first.
        first_user: Index of the first user (ids ``u{first_user:07d}`` on).
        first_decision: First ``decision_id``.
        template_chooser: Picks the template of every sent push in a world with templates
            (:data:`TemplateChooser`; None = uniform). It draws from its own generator, so
            every other draw of the world is the same whichever templates it picks.
        channel_chooser: Picks the channel (or none: -1) of every push the logger sends in a
            world with channels (:data:`~pushrl.data.channel_world.ChannelChooser`; None =
            uniform over the user's opted-in channels). With channels on, the logger decides
            for every user at every slot and each push's outcomes come from per-user uniforms
            drawn for everyone, so two choosers see the same draws (common random numbers).

    Returns:
        ``(dataset, ground_truth, ground_truth_users)``.
    """
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    p = cfg.params
    items = _make_items(cfg, rng) if items is None else items
    gt_users = _make_users(cfg, rng, first_user)
    world = TrueWorld(p, gt_users, items)
    users = gt_users[["user_id", "timezone", "platform", "tenure_days"]].copy()
    n, n_items = cfg.users, cfg.items
    start_sec = int(pd.Timestamp(cfg.start).timestamp())
    b0 = start_sec // HOUR
    n_steps = cfg.days * 24
    step_hours = 24 // cfg.slots_per_day
    tzt = TimezoneTable(list(TIMEZONES))
    tz_idx = np.array([tzt.index(t) for t in users["timezone"]])
    spec = world_spec()
    state = FeatureState(spec, users["timezone"].tolist(), b0, tz_table=tzt)
    cat_items = [np.flatnonzero(world.item_cat == c) for c in range(len(CATEGORIES))]
    logger = make_logger(p.logger, world.p_send, n_items, epsilon=p.logger_epsilon,
                         send_high=p.logger_send_high)
    pref_cdf = np.cumsum(world.pref, axis=1)
    alive = np.ones(n, dtype=bool)
    n_tmpl = world.n_templates
    recency = TemplateRecency(n, n_tmpl) if n_tmpl else None
    trng = np.random.default_rng([cfg.seed, 17, first_user])
    chan = world.channels
    crun = _channel_run(world, channel_chooser, cfg, first_user, users, gt_users)
    alive = alive if crun is None else crun.alive
    feed_state = recency is not None or chan is not None
    life = Lifecycle.of(p, n, b0, cfg.seed, first_user)
    act, push = _Cols(), _Cols()
    all_u = np.arange(n)
    for step in range(n_steps):
        b = b0 + step
        off = tzt.offset_seconds(tz_idx, b)
        hour, dow, _ = local_clock(b * HOUR, off)
        weekend = (dow >= 5).astype(np.int64)
        # organic activity (continues after unsubscribing from pushes)
        n_sess = _organic_sessions(rng, world.rate[all_u, weekend, hour], life, b)
        su = np.repeat(all_u, n_sess)
        if logger.needs_sessions:
            logger.observe_sessions(su, hour[su])
        if su.size:
            n_views = rng.poisson(p.views_per_session, su.size)
            vu = np.repeat(su, n_views)
            cat = (rng.random(vu.size)[:, None] > pref_cdf[vu]).sum(axis=1)
            cat = np.minimum(cat, len(CATEGORIES) - 1)
            pick = rng.random(vu.size)
            item = np.empty(vu.size, np.int64)
            for c in range(len(CATEGORIES)):
                m = cat == c
                item[m] = cat_items[c][(pick[m] * len(cat_items[c])).astype(np.int64)]
            cart = rng.random(vu.size) < p.cart_per_view
            buy = cart & (rng.random(vu.size) < p.purchase_per_cart)
            cu, bu = vu[cart], vu[buy]
            ev_u = np.concatenate([su, vu, cu, bu])
            ev_kind = np.concatenate([np.zeros(su.size, np.int8), np.ones(vu.size, np.int8),
                                      np.full(cu.size, 2, np.int8), np.full(bu.size, 3, np.int8)])
            ev_item = np.concatenate([np.full(su.size, -1), item, item[cart], item[buy]])
            ev_rev = np.where(ev_kind == 3, world.price[np.maximum(ev_item, 0)], np.nan)
            ev_ts = b * HOUR + rng.integers(0, HOUR * step_hours, ev_u.size)
            act.add(u=ev_u, kind=ev_kind, item=ev_item, rev=ev_rev, ts=ev_ts)
            if feed_state:  # a template/channel chooser here sees replay's features
                state.record_activity(ev_u, ev_ts // HOUR, np.where(
                    ev_item >= 0, world.item_cat[np.maximum(ev_item, 0)], -1))
        # the randomised logging policy, at every slot for every subscribed user
        if step % step_hours == 0:
            du, (send, it, pscore, pscore_send), draws = _log_decide(
                logger, alive, hour, rng, every=chan is not None)
            su_ = du[send]
            si = it[send]
            f = state.features(su_, b)
            wk, hr = weekend[su_], hour[su_]
            logit = world.open_logit(su_, wk, hr, si, f[:, F["sends_24h"]], f[:, F["sends_7d"]])
            u_shift = np.zeros(su_.size)
            with_item = send  # rows logged with their item
            sent_arm = None  # channel of each delivered push (channels on)
            if crun is not None:
                c_arm, p_c, l_shift, u_shift = crun.choose(
                    state, su_, b, si, n_sess[su_] > 0, f[:, F["sends_24h"]],
                    f[:, F["sends_7d"]])
                go = c_arm >= 0
                # "none" is logged unsent with its pscore_channel, no channel and its item
                with_item, send = send, send.copy()
                send[np.flatnonzero(send)[~go]] = False
                push.add(chan=_scatter(with_item, c_arm, -1, np.int64),
                         p_chan=_scatter(with_item, p_c, np.nan, float))
                pscore, pscore_send = crun.propensities(send, pscore, pscore_send)
                su_, si, f, u_shift, sent_arm = su_[go], si[go], f[go], u_shift[go], c_arm[go]
                logit = (logit + l_shift)[go]
            if recency is not None:
                hours = recency.hours(su_, b)
                if template_chooser is None:
                    arm = trng.integers(0, n_tmpl, su_.size)
                    p_arm = np.full(su_.size, 1.0 / n_tmpl)
                else:
                    arm, p_arm = template_chooser(state, su_, b, si, hours)
                logit = logit + world.template_logit(su_, si, arm,
                                                     hours[np.arange(su_.size), arm])
                recency.record(su_, b, arm)
                push.add(tmpl=_scatter(send, arm, -1, np.int64),
                         p_tmpl=_scatter(send, p_arm, np.nan, float))
            p_open = _sigmoid(logit)
            uo, uc, uv, uu = _uniforms(rng, draws, su_)
            opened = uo < p_open
            clicked = opened & (uc < world.p_click(su_, si))
            converted = clicked & (uv < world.p_convert(si))
            revenue = np.where(converted, world.price[si], 0.0)
            unsub = uu < world.unsub_hazard(su_, f[:, F["sends_7d"]], u_shift)
            state.record_push(su_, b, opened)
            logger.observe(si, clicked)
            push.add(u=du, ts=np.full(du.size, b * HOUR, np.int64), sent=send,
                     item=np.where(with_item, it, -1), pscore=pscore,
                     pscore_send=pscore_send, opened=_scatter(send, opened, False, bool),
                     clicked=_scatter(send, clicked, False, bool),
                     converted=_scatter(send, converted, False, bool),
                     revenue=_scatter(send, revenue, np.nan, float),
                     unsub=_scatter(send, unsub, False, bool))
            alive = _unsubscribe(alive, su_[unsub], crun, sent_arm, unsub)
        if progress is not None:
            progress(step + 1, n_steps)

    item_ids = items["item_id"].to_numpy()
    uid_cat = users["user_id"].to_numpy()
    ev_kind_names = np.array(["session", "view", "cart", "purchase"])
    a_item = act.cat("item", np.int64)
    activity = pd.DataFrame({
        "user_id": pd.Categorical.from_codes(act.cat("u", np.int64), categories=uid_cat),
        "ts": from_unix_seconds(act.cat("ts", np.int64)),
        "event": pd.Categorical.from_codes(act.cat("kind", np.int8), categories=ev_kind_names),
        "item_id": pd.Categorical.from_codes(a_item, categories=item_ids),
        "revenue": act.cat("rev", float),
    })
    activity = activity.sort_values("ts", kind="stable").reset_index(drop=True)
    sent = push.cat("sent", bool)
    nan_bool = lambda k: pd.array(  # noqa: E731
        np.where(sent, push.cat(k, bool), False), dtype="boolean").astype("boolean")
    pushes = pd.DataFrame({
        "decision_id": np.arange(first_decision, first_decision + sent.size, dtype=np.int64),
        "user_id": pd.Categorical.from_codes(push.cat("u", np.int64), categories=uid_cat),
        "ts": from_unix_seconds(push.cat("ts", np.int64)),
        "sent": sent,
        "item_id": pd.Categorical.from_codes(push.cat("item", np.int64), categories=item_ids),
        "pscore": push.cat("pscore", float),
        "pscore_send": push.cat("pscore_send", float),
        "opened": nan_bool("opened"),
        "clicked": nan_bool("clicked"),
        "converted": nan_bool("converted"),
        "revenue": np.where(sent, np.nan_to_num(push.cat("revenue", float)), np.nan),
        "unsubscribed": nan_bool("unsub"),
    })
    for col in ("opened", "clicked", "converted", "unsubscribed"):
        pushes.loc[~sent, col] = pd.NA
    if n_tmpl:
        pushes["template_id"] = pd.Categorical.from_codes(push.cat("tmpl", np.int64),
                                                          categories=list(p.template_ids))
        pushes["pscore_template"] = push.cat("p_tmpl", float)
    _channel_columns(pushes, push, chan)
    gt = {
        "format": "pushrl/ground_truth/v1",
        "params": params_to_json(p),
        "config": {k: v for k, v in asdict(cfg).items() if k != "params"},
        "categories": list(CATEGORIES),
        "logging_policy": _logging_policy(p),
        "notes": "open logit = intercept + activity*log(rel_activity[local hour, weekend]) + "
                 "affinity*log(pref[cat]*n_cat) + engagement*z - fatigue_24h*sends_24h - "
                 "fatigue_7d*sends_7d; unsubscribe logit = intercept + volume_7d*sends_7d + "
                 "engagement*z; see pushrl.data.synth.TrueWorld",
    }
    gt.update({} if life is None else {"lifecycle": life.to_json()})
    meta = {"generator": "pushrl.data.synth", "seed": cfg.seed, "users": cfg.users,
            "days": cfg.days, "slots_per_day": cfg.slots_per_day, "format": PUSHLOG_VERSION}
    if p.world != WorldParams.world:
        meta["world"] = p.world
    ds = Dataset(users, items, activity, pushes, meta=meta)
    return ds, gt, gt_users


def _organic_sessions(rng: np.random.Generator, lam: np.ndarray, life: Lifecycle | None,
                      b: int) -> np.ndarray:
    """``(n,)`` organic sessions in hour bucket ``b`` at rates ``lam``; a lifecycle world
    (:mod:`pushrl.data.lapse_world`) scales the rates and records the sessions."""
    if life is None:
        return rng.poisson(lam)
    n_sess = rng.poisson(lam * life.multiplier(b))
    life.sessions(b, n_sess > 0)
    return n_sess


def _channel_run(world: TrueWorld, chooser: ChannelChooser | None, cfg: SynthConfig,
                 first_user: int, users: pd.DataFrame,
                 gt_users: pd.DataFrame) -> ChannelRun | None:
    """The channel slot of a run (None without channels); writes the opt-in at the start to
    the users and ground-truth users tables. Its own stream: the push-only world's draws
    are untouched."""
    if world.channels is None:
        return None
    p = cfg.params
    crun = ChannelRun(world.channels, chooser,
                      np.random.default_rng([cfg.seed, 23, first_user]), len(users),
                      p.channel_none, p.fatigue_24h, p.fatigue_7d)
    gt_users["channels"] = users["channels"] = crun.opt_in_strings()
    return crun


def _channel_columns(pushes: pd.DataFrame, push: _Cols, chan: ChannelTruth | None) -> None:
    """``channel`` (null = not sent on a channel) and ``pscore_channel`` of a channel world."""
    if chan is not None:
        pushes["channel"] = pd.Categorical.from_codes(push.cat("chan", np.int64),
                                                      categories=list(chan.ids))
        pushes["pscore_channel"] = push.cat("p_chan", float)


def _logging_policy(p: WorldParams) -> str:
    """The ground truth's one-line description of the logging policy."""
    if p.logger != "uniform":
        return f"{p.logger}: see pushrl.data.loggers"
    return ("per slot: send ~ Bernoulli(p_send[user]); item ~ Uniform(items)"
            + ("; template ~ Uniform(template_ids)" if p.template_ids else "")
            + (f"; channel: none with p {p.channel_none:g}, else ~ Uniform(opted-in channels)"
               if p.channel_ids else ""))


def _log_decide(logger: Any, alive: np.ndarray, hour: np.ndarray, rng: np.random.Generator,
                every: bool) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray | None]:
    """The send logger at one slot: ``(decided users, (send, item, pscore, pscore_send),
    outcome uniforms)``. With ``every`` (channels on) it decides and draws ``(4, n)`` outcome
    uniforms for every user, so runs that unsubscribe different users see the same draws
    (common random numbers); otherwise only subscribed users, no uniforms (the original
    stream)."""
    all_u = np.arange(alive.size)
    if not every:
        du = all_u[alive]
        return du, tuple(logger.decide(du, hour[du], rng)), None
    out = logger.decide(all_u, hour, rng)
    draws = rng.random((4, alive.size))
    du = all_u[alive]
    return du, tuple(np.asarray(x)[du] for x in out), draws


def _uniforms(rng: np.random.Generator, draws: np.ndarray | None,
              users: np.ndarray) -> tuple[np.ndarray, ...]:
    """Open, click, convert and unsubscribe uniforms of the pushes to ``users``: the slot's
    per-user ``draws`` (channels on) or four fresh draws (the original stream)."""
    if draws is not None:
        return tuple(draws[:, users])
    return tuple(rng.random(users.size) for _ in range(4))


def _unsubscribe(alive: np.ndarray, users: np.ndarray, crun: ChannelRun | None,
                 arms: np.ndarray | None, unsub: np.ndarray) -> np.ndarray:
    """Who is still reachable after ``users`` (the delivered pushes' users where ``unsub``)
    unsubscribed; with channels (``arms``: each delivered push's channel) from that channel
    only."""
    if crun is None or arms is None:
        alive[users] = False
        return alive
    crun.unsubscribe(users, arms[unsub])
    return crun.alive


def _scatter(mask: np.ndarray, values: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
    out = np.full(mask.size, fill, dtype=dtype)
    out[mask] = values
    return out


#: Users per part above which :func:`synthesize` writes user parts (smaller logs are one
#: file per table, generated exactly as before parts existed).
PART_USERS = 10_000


def synthesize(out: str | Path, cfg: SynthConfig,
               progress: Callable[[int, int], None] | None = None, *,
               part_users: int = PART_USERS) -> dict[str, Any]:
    """Generate and write a synthetic dataset plus its ground truth; returns a summary.

    Up to ``part_users`` users the tables are single Parquet files. Larger worlds are
    generated and written one user part at a time (memory bounded by the part size):
    ``TABLE.parquet/part-KKKKK.parquet`` for users, activity, pushes and the ground-truth
    users, where part ``k`` of every table holds the same users (``meta.json``
    ``user_parts``). Part ``k`` draws from its own stream ``default_rng([seed, k])`` after
    the items (drawn from ``default_rng(seed)`` as in a one-part world), and its logger
    learns only from its own users (matters for the adaptive loggers only).
    """
    if part_users < 1:
        raise ValueError(f"part_users must be >= 1, got {part_users}")
    t0 = time.perf_counter()
    if cfg.users <= part_users:
        ds, gt, gt_users = generate(cfg, progress)
        t_gen = time.perf_counter() - t0
        d = write_dataset(ds, out)
        (d / "ground_truth.json").write_text(json.dumps(gt, indent=2, sort_keys=True))
        write_table(gt_users, d / "ground_truth_users.parquet")
        return {"out": str(d), "users": cfg.users, "days": cfg.days,
                "decisions": len(ds.pushes), "sent": int(ds.pushes["sent"].sum()),
                "activity_events": len(ds.activity), "seconds_generate": round(t_gen, 2),
                "seconds_total": round(time.perf_counter() - t0, 2)}
    return _synthesize_parts(Path(out), cfg, progress, part_users, t0)


def _synthesize_parts(d: Path, cfg: SynthConfig, progress: Any, part_users: int,
                      t0: float) -> dict[str, Any]:
    items = _make_items(cfg, np.random.default_rng(cfg.seed))
    starts = list(range(0, cfg.users, part_users))
    n_steps = cfg.days * 24
    tot = {"decisions": 0, "sent": 0, "activity_events": 0}
    meta: dict[str, Any] = {}
    gt: dict[str, Any] = {}
    for k, lo in enumerate(starts):
        sub = replace(cfg, users=min(part_users, cfg.users - lo))
        prog = (None if progress is None else
                lambda i, _n, k=k: progress(k * n_steps + i, len(starts) * n_steps))
        ds, gt, gt_users = generate(sub, prog, rng=np.random.default_rng([cfg.seed, k]),
                                    items=items, first_user=lo,
                                    first_decision=tot["decisions"])
        name = f"part-{k:05d}.parquet"
        for table in ("users", "activity", "pushes"):
            write_table(ds.table(table), d / f"{table}.parquet" / name)
        write_table(gt_users, d / "ground_truth_users.parquet" / name)
        tot["decisions"] += len(ds.pushes)
        tot["sent"] += int(ds.pushes["sent"].sum())
        tot["activity_events"] += len(ds.activity)
        meta = ds.meta
        del ds, gt_users
    write_table(items, d / "items.parquet")
    meta = {"format": PUSHLOG_VERSION, **meta, "users": cfg.users, "user_parts": len(starts),
            "part_users": part_users}
    (d / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    gt["config"] = {k: v for k, v in asdict(cfg).items() if k != "params"}
    gt["user_parts"] = {"parts": len(starts), "part_users": part_users,
                        "streams": "items: default_rng(seed); part k: default_rng([seed, k])"}
    (d / "ground_truth.json").write_text(json.dumps(gt, indent=2, sort_keys=True))
    t = round(time.perf_counter() - t0, 2)
    return {"out": str(d), "users": cfg.users, "days": cfg.days, **tot,
            "user_parts": len(starts), "seconds_generate": t, "seconds_total": t}
