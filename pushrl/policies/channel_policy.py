"""The channel slot: through which channel (push, email, in-app), or none, to send a push.

Channel choice follows the template slot's pattern (:mod:`pushrl.policies.template_policy`):
a conditional contextual bandit after the item. Arms are ``none`` (arm 0, send nothing,
always allowed) and the scenario's channels (:class:`~pushrl.rules.channels.ChannelSet`,
arms ``1..C``); a channel the user did not opt into or whose guardrails block the send is
masked (:meth:`~pushrl.rules.channels.ChannelSet.allowed`), so the policy can never send
there. The chosen arm's probability is ``pscore_channel``.

The context is :func:`pushrl.data.item_context.channel_context` (the template slot's context
with the channels as candidates): pipeline user features (activity at this hour, engagement,
sends ...), the chosen item's catalog features, and hours since the user last got a message
on each channel (:class:`~pushrl.data.features.TemplateRecency` keyed by channel), so the
policy can learn that in-app works when the user is usually active now and that push
fatigues.

The reward of a round is the whole push reward of :mod:`pushrl.rules.reward` with the
channel's send cost (:func:`~pushrl.rules.reward.from_logs` with ``channel_costs``) and the
unsubscribe penalty; ``none`` earns exactly 0. A logged ``none`` is an unsent row with a
``pscore_channel`` and no channel (the synthetic logger skips ``channel_none`` of its
sends), so OPE has support for it. Its reward is known anyway, so training also adds one
full-information ``none`` round (reward 0, probability 1) per logged round
(:func:`with_none_rounds`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import (
    FeatureSpec,
    FeatureState,
    ItemCatalog,
    replay,
    template_recency_replay,
    user_index,
)
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.item_context import channel_context
from pushrl.errors import ArtifactError, DataError
from pushrl.policies.base import ItemContext, ItemPolicy
from pushrl.policies.item_data import take_context
from pushrl.policies.registry import register_loader, save_artifact
from pushrl.policies.template_policy import learn_in_time_order
from pushrl.policies.vw import LAYOUT_FILE, MODEL_FILE, VWConfig, VWItemPolicy, vw_from_artifact
from pushrl.policies.vw_format import VWLayout
from pushrl.rules import reward as rules_reward
from pushrl.rules.channels import Channel, ChannelCounts, ChannelSet, opt_in_matrix
from pushrl.rules.guardrails import ALLOWED, REASONS
from pushrl.rules.reward import RewardWeights
from pushrl.units import HOUR

NONE_ARM = "none"
#: VW options when none are given: the template slot's learning rate 0.02 (VW's default 0.5
#: over-fits the rare, noisy rewards: on a 3000-user x 14-day channel world, seeds 21/1021,
#: it was +0.005 +- 0.009 per user over uniform, 0.02 +0.019 +- 0.009).
DEFAULT_VW = VWConfig(learning_rate=0.02)
ARMS_FILE = "channels.json"


@dataclass(frozen=True)
class ChannelArms:
    """The arms of a channel decision: ``none`` then the channels.

    Attributes:
        channels: The scenario's channels (arm ``j + 1`` is ``channels.channels[j]``).
        spec: Feature spec of the user features.
        catalog: The item catalog (features of the chosen item).
    """

    channels: ChannelSet
    spec: FeatureSpec
    catalog: ItemCatalog

    @property
    def ids(self) -> tuple[str, ...]:
        """Arm ids: ``("none", *channel names)``."""
        return (NONE_ARM, *self.channels.names)

    def context(self, features: np.ndarray, items: np.ndarray, hours: np.ndarray,
                allowed: np.ndarray | None = None) -> ItemContext:
        """Channel context of ``n`` decisions.

        Args:
            features: ``(n, N_FEATURES)`` raw pipeline features.
            items: ``(n,)`` catalog index of each decision's item.
            hours: ``(n, n_channels)`` hours since the user last got a message per channel.
            allowed: ``(n, n_channels)`` channels allowed (opt-in and channel guardrails,
                :meth:`ChannelSet.allowed`); None = all. ``none`` is always allowed.
        """
        return channel_context(features, self.catalog.features[np.asarray(items, np.int64)],
                               self.catalog.feature_names, hours, allowed)


@dataclass
class ChannelRounds:
    """Logged channel decisions (OBP vocabulary).

    Attributes:
        context: Channel contexts over the arms (``none`` first).
        action: ``(n_rounds,)`` arm index (1.. for a logged channel).
        reward: ``(n_rounds,)`` push reward with the channel's cost.
        pscore: ``(n_rounds,)`` logged ``pscore_channel``.
        row: ``(n_rounds,)`` rows of ``ds.pushes``.
        arms: The arms.
        weights: Reward weights (the channels' costs replace ``send_cost``).
        user: ``(n_rounds,)`` user index (row of ``ds.users``).
        unsubscribed: ``(n_rounds,)`` 1.0 where the push unsubscribed the user.
        cost: ``(n_rounds,)`` send cost paid (0 for ``none``).
        bucket: ``(n_rounds,)`` UTC hour bucket of each round (None: unknown).
    """

    context: ItemContext
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    row: np.ndarray
    arms: ChannelArms
    weights: RewardWeights
    user: np.ndarray
    unsubscribed: np.ndarray
    cost: np.ndarray
    bucket: np.ndarray | None = None

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        return int(self.action.size)

    def take(self, idx: np.ndarray) -> ChannelRounds:
        """Rounds ``idx`` (e.g. a user split)."""
        return ChannelRounds(take_context(self.context, idx), self.action[idx],
                             self.reward[idx], self.pscore[idx], self.row[idx], self.arms,
                             self.weights, self.user[idx], self.unsubscribed[idx],
                             self.cost[idx], None if self.bucket is None else self.bucket[idx])

    def with_unsub_penalty(self, penalty: float) -> ChannelRounds:
        """The same rounds rewarded with another unsubscribe penalty."""
        r = self.reward + (self.weights.unsubscribe_penalty - penalty) * self.unsubscribed
        return ChannelRounds(self.context, self.action, r, self.pscore, self.row, self.arms,
                             replace(self.weights, unsubscribe_penalty=float(penalty)),
                             self.user, self.unsubscribed, self.cost, self.bucket)

    def with_unsub_prices(self, multiples: Mapping[str, float],
                          default: float = 1.0) -> ChannelRounds:
        """The same rounds rewarded with a per-channel training price of an unsubscribe
        (:func:`pushrl.rules.reward.channel_unsub_price`: the objective's penalty times
        ``multiples[channel]``, ``default`` for a channel the map lacks) in place of the
        objective's penalty. ``weights`` stay the objective's: these rounds are for training.

        Raises:
            ValueError: a multiple is not a finite number >= 1.
        """
        names = np.asarray(self.arms.ids, dtype=object)[self.action]
        price = rules_reward.channel_unsub_price(self.weights, names, multiples, default)
        r = self.reward + (self.weights.unsubscribe_penalty - price) * self.unsubscribed
        return ChannelRounds(self.context, self.action, r, self.pscore, self.row, self.arms,
                             self.weights, self.user, self.unsubscribed, self.cost,
                             self.bucket)


def channel_rounds(ds: Dataset, channels: ChannelSet, *, spec: FeatureSpec | None = None,
                   weights: RewardWeights | None = None) -> ChannelRounds:
    """Channel rounds of a log's sent pushes, featurised point-in-time.

    Raises:
        DataError: no ``channel`` / ``pscore_channel`` column, or no sent row on one of the
            channels with a logged ``pscore_channel``.
    """
    p = ds.pushes
    for c in ("channel", "pscore_channel"):
        if c not in p:
            raise DataError(f"the logs have no `{c}` column; channel training and OPE need "
                            "the channel of each sent push and its logging probability "
                            "(pushrl data synth --channels writes both)")
    w = weights or RewardWeights()
    spec = spec or FeatureSpec.fit(ds)
    arms = ChannelArms(channels, spec, ItemCatalog(ds.items, spec))
    index = {c: j for j, c in enumerate(channels.names)}
    ch = p["channel"].astype(object).where(p["channel"].notna(), "").to_numpy()
    arm = np.array([index.get(str(c), -1) for c in ch], np.int64)
    sent = p["sent"].fillna(False).to_numpy(bool)
    arm[~sent] = -1
    users = user_index(ds, p["user_id"])
    buckets = to_unix_seconds(p["ts"]) // HOUR
    hours = template_recency_replay(users, buckets, arm, len(ds.users), len(channels))
    ps = p["pscore_channel"].to_numpy(np.float64, na_value=np.nan)
    # a logged "none": the channel slot skipped a push (unsent, no channel, pscore_channel)
    none = ~sent & (ch == "") & np.isfinite(ps)
    rows = np.flatnonzero(((arm >= 0) | none) & np.isfinite(ps) & p["item_id"].notna().to_numpy())
    if not rows.size:
        raise DataError(f"no sent row on one of the channels {list(channels.names)} with a "
                        "logged `pscore_channel`")
    sp = p.iloc[rows]
    r = rules_reward.from_logs(w, sp, channel_costs=channels.costs())  # none: 0
    cost = rules_reward.channel_send_cost(w, ch[rows], channels.costs()) * (arm[rows] >= 0)
    uns = (sp["unsubscribed"].fillna(False).to_numpy(bool).astype(float)
           if "unsubscribed" in sp else np.zeros(rows.size))
    rep = replay(ds, spec, with_affinity=False)
    items = arms.catalog.indices(p["item_id"].astype(str).to_numpy()[rows])
    opted = logged_opt_in(ds, channels, users, buckets, arm)
    ts = to_unix_seconds(p["ts"])
    hour, _, day = rep.state.local_time_at(users, ts)
    code = logged_channel_verdict(channels, users, ts, arm, rows, hour, day, opted,
                                  len(ds.users))
    ctx = arms.context(rep.features[rows], items, hours[rows], code == ALLOWED)
    return ChannelRounds(ctx, arm[rows] + 1, r, ps[rows], rows, arms, w, users[rows], uns,
                         cost, buckets[rows])


def logged_opt_in(ds: Dataset, channels: ChannelSet, users: np.ndarray, buckets: np.ndarray,
                  arm: np.ndarray) -> np.ndarray:
    """bool ``(n_rows, n_channels)``: each pushes row's user was opted into each channel at
    its time: in ``users.channels`` (null = every channel) and not unsubscribed from that
    channel by an earlier push (the unsubscribing push itself was still opted in).

    Args:
        users: ``(n_rows,)`` user index of each row; ``buckets``: ``(n_rows,)`` hour bucket;
        arm: ``(n_rows,)`` channel index of sent rows, -1 otherwise.
    """
    col = ds.users["channels"] if "channels" in ds.users else [None] * len(ds.users)
    init = opt_in_matrix(list(col), channels.names)
    p = ds.pushes
    unsub = (p["unsubscribed"].fillna(False).to_numpy(bool) if "unsubscribed" in p
             else np.zeros(len(p), bool)) & (arm >= 0)
    first = np.full(init.shape, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, (users[unsub], arm[unsub]), buckets[unsub])
    return init[users] & (buckets[:, None] <= first[users])


def logged_channel_verdict(channels: ChannelSet, users: np.ndarray, ts: np.ndarray,
                           arm: np.ndarray, rows: np.ndarray, hour: np.ndarray,
                           day: np.ndarray, opted_in: np.ndarray, n_users: int) -> np.ndarray:
    """Each channel's guardrail verdict at logged decisions, replayed from the log: int8
    ``(len(rows), n_channels)``, :meth:`ChannelSet.verdict` (the ONE channel guardrail
    definition the server and the simulator apply) on the sends per channel the log made
    before each decision (:class:`~pushrl.rules.channels.ChannelCounts`: local day, weekly
    window) and the opt-in at its time. Sends at the decision's own time count only after
    it, as in the server and the simulator's decider (a pass judges its rows, then counts
    their sends).

    Args:
        users, ts: ``(n_rows,)`` user index and unix seconds of every pushes row.
        arm: ``(n_rows,)`` channel index of each sent row, -1 otherwise.
        rows: ``(k,)`` the decisions to judge (rows of the log).
        hour, day: ``(n_rows,)`` local hour and day of every pushes row.
        opted_in: ``(n_rows, n_channels)`` opt-in at every row (:func:`logged_opt_in`).
        n_users: Users of the log.
    """
    code = np.empty((rows.size, len(channels)), np.int8)
    counts = ChannelCounts(n_users, len(channels))
    sent = np.flatnonzero(arm >= 0)
    ev_t = np.concatenate([ts[rows], ts[sent]]).astype(np.int64)
    order = np.lexsort((np.r_[np.zeros(rows.size), np.ones(sent.size)], ev_t))
    bounds = np.flatnonzero(np.diff(ev_t[order])) + 1
    for grp in np.split(order, bounds):
        b = int(ev_t[grp[0]]) // HOUR
        dec = grp[grp < rows.size]
        if dec.size:
            r = rows[dec]
            code[dec] = channels.verdict(hour[r], counts.today(users[r], day[r]),
                                         counts.week(users[r], b), opted_in[r])
        s = sent[grp[grp >= rows.size] - rows.size]
        if s.size:
            counts.record(users[s], b, day[s], arm[s])
    return code


def with_none_rounds(rounds: ChannelRounds) -> ChannelRounds:
    """``rounds`` plus one full-information ``none`` round per round (same context, arm 0,
    reward 0, probability 1), interleaved so time order is kept (for training only)."""
    n = rounds.n_rounds
    idx = np.repeat(np.arange(n), 2)
    ctx = take_context(rounds.context, idx)
    action = np.stack([rounds.action, np.zeros(n, np.int64)], 1).ravel()
    reward = np.stack([rounds.reward, np.zeros(n)], 1).ravel()
    pscore = np.stack([rounds.pscore, np.ones(n)], 1).ravel()
    return ChannelRounds(ctx, action, reward, pscore, rounds.row[idx], rounds.arms,
                         rounds.weights, rounds.user[idx],
                         np.stack([rounds.unsubscribed, np.zeros(n)], 1).ravel(),
                         np.stack([rounds.cost, np.zeros(n)], 1).ravel(),
                         None if rounds.bucket is None else rounds.bucket[idx])


# --------------------------------------------------------------------- policies
@dataclass
class FixedChannel(ItemPolicy):
    """Always channel arm ``arm`` when allowed, else none (``arm=1`` = push-only)."""

    arm: int = 1
    name: str = "fixed-channel"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        m = np.asarray(ctx.mask, bool)
        d = np.zeros(m.shape)
        d[:, self.arm] = m[:, self.arm]
        d[:, 0] = ~m[:, self.arm]
        return d


@dataclass
class UniformChannel(ItemPolicy):
    """Uniform over the allowed channels (none only when no channel is allowed): the
    synthetic logger's rule."""

    name: str = "uniform-channel"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        m = np.asarray(ctx.mask, bool).astype(float)
        d = m.copy()
        d[:, 0] = m[:, 1:].sum(axis=1) == 0
        return d


@dataclass
class ChannelPolicy(ItemPolicy):
    """A VW ``cb_explore_adf`` channel policy over ``none`` + the channels.

    Args:
        vw: The VW model over the arms.
        channels: The channels it was trained for (arm order).
    """

    vw: VWItemPolicy
    channels: ChannelSet
    name: str = "vw-channel"
    version: str = "0"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return self.vw.action_dist(ctx)

    def learn(self, ctx: ItemContext, action: np.ndarray, reward: np.ndarray,
              pscore: np.ndarray) -> None:
        """Online update from observed channel rounds."""
        self.vw.learn(ctx, action, reward, pscore)

    def describe(self) -> dict[str, Any]:
        """Model-card parameters."""
        return {**super().describe(), "arms": [NONE_ARM, *self.channels.names],
                "channels": self.channels.to_dict(), "vw_args": list(self.vw.args)}

    def save(self, out: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Registry artifact ``out/vN`` (VW model, layout, channels), checksummed."""
        files: dict[str, str | Path | bytes] = {
            MODEL_FILE: self.vw.model_bytes(),
            LAYOUT_FILE: json.dumps(self.vw.layout.to_dict()).encode(),
            ARMS_FILE: json.dumps({"channels": self.channels.to_dict()}).encode()}
        full = {"policy": self.describe(), "slot": "channel", "vw_args": list(self.vw.args),
                **(card or {})}
        return save_artifact(out, kind="item", loader="vw_channel", files=files, card=full)


def new_channel_policy(arms: ChannelArms, ctx: ItemContext,
                       config: VWConfig | None = None) -> ChannelPolicy:
    """An untrained :class:`ChannelPolicy` for contexts shaped like ``ctx``."""
    cfg = config or DEFAULT_VW
    layout = VWLayout.from_catalog(ctx.shared_names, ctx.candidate_feature_names,
                                   np.array(arms.ids), np.zeros((len(arms.ids), 0), np.float32),
                                   ())
    return ChannelPolicy(VWItemPolicy(layout, cfg.args(), name="vw-channel"), arms.channels)


def train_channel_policy(rounds: ChannelRounds, config: VWConfig | None = None, *,
                         chunk: int = 2048) -> ChannelPolicy:
    """Learn a :class:`ChannelPolicy` from logged rounds plus their ``none`` rounds (one
    pass, in time order). A round whose logged channel the replayed guardrails block (a
    logger that ignored a channel's caps or quiet hours) is a choice the policy never faces:
    only its ``none`` round is learnt."""
    full = with_none_rounds(rounds)
    ok = np.asarray(full.context.mask, bool)[np.arange(full.n_rounds), full.action]
    if not ok.all():
        full = full.take(np.flatnonzero(ok))
    pol = new_channel_policy(rounds.arms, rounds.context, config)
    learn_in_time_order(pol, full, chunk)
    return pol


#: The training unsubscribe penalty of :func:`train_priced_channel_policy`, as a multiple of
#: the objective's own. An unsubscribe costs the objective its penalty once, but the policy is
#: also asked to spend no more unsubscribes than push-only; fixed on development seed pairs
#: 1, 2, 7, 8 (``benchmarks/channels_margin.py``, ``benchmarks/results/channels_dev.md``): 4x
#: gave significantly fewer unsubscribes than push-only on all four (2x on none of them
#: significantly, 1x more on two) at +27 % to +51 % objective; the off-policy budget
#: (:func:`pushrl.ope.evaluate_channel.select_unsub_penalty`) from ~20 validation
#: unsubscribes chose 1x-16x and missed one way or the other on two of the four. Since then
#: the default reads the multiple off the log (:mod:`pushrl.ope.channel_price`: the right
#: multiple differs by world, 1x-2x on pair 9, >= 4x on pair 8); this constant is the fixed
#: option (``--unsub-multiple``) and the fallback of a log without unsubscribes.
UNSUB_PRICE_MULTIPLE = 4.0


def train_priced_channel_policy(rounds: ChannelRounds, config: VWConfig | None = None, *,
                                multiple: float | Mapping[str, float] = UNSUB_PRICE_MULTIPLE
                                ) -> ChannelPolicy:
    """:func:`train_channel_policy` with the unsubscribe price ``multiple`` x the rounds'
    objective penalty (1 when it is 0): one multiple for every channel, or one per channel
    name (key ``"*"``: the multiple of the channels the map lacks, default 1), through the
    one price definition :func:`pushrl.rules.reward.channel_unsub_price`.

    Raises:
        ValueError: a multiple is not a finite number >= 1.
    """
    if isinstance(multiple, Mapping):
        per = {k: float(v) for k, v in multiple.items() if k != "*"}
        return train_channel_policy(
            rounds.with_unsub_prices(per, float(multiple.get("*", 1.0))), config)
    if not (np.isfinite(multiple) and multiple >= 1.0):
        raise ValueError(f"`multiple` must be a finite number >= 1, got {multiple!r}")
    return train_channel_policy(rounds.with_unsub_prices({}, float(multiple)), config)


def channel_policy_from_spec(spec: str, channels: ChannelSet) -> ItemPolicy:
    """A channel policy by name: ``push-only`` (:class:`FixedChannel` on ``push``),
    ``uniform`` (:class:`UniformChannel`), ``fixed:NAME`` (always channel NAME), or a
    ``pushrl channels train`` artifact directory (its channels must be ``channels``).

    Raises:
        ArtifactError: an unknown name, a missing channel or an artifact for other channels.
    """
    if spec in ("push-only", "uniform") or spec.startswith("fixed:"):
        if spec == "uniform":
            return UniformChannel()
        name = "push" if spec == "push-only" else spec.split(":", 1)[1]
        if name not in channels.names:
            raise ArtifactError(f"channel policy {spec!r}: no channel {name!r} among "
                                f"{list(channels.names)}")
        return FixedChannel(arm=1 + channels.index(name), name=spec)
    from pushrl.policies.registry import load_policy

    if not Path(spec).exists():
        raise ArtifactError(f"channel policy {spec!r}: not push-only, uniform, fixed:NAME or "
                            "a `pushrl channels train` artifact directory")
    pol = load_policy(spec)
    if not isinstance(pol, ChannelPolicy):
        raise ArtifactError(f"{spec} is not a channel policy; train one with `pushrl channels "
                            "train`")
    if pol.channels.names != channels.names:
        raise ArtifactError(f"channel policy {spec} was trained for {list(pol.channels.names)}"
                            f", the scenario has {list(channels.names)}")
    return pol


@register_loader("vw_channel")
def load_channel_policy(path: Path, card: dict[str, Any]) -> ChannelPolicy:
    """Registry loader of a verified channel-policy artifact."""
    for f in (MODEL_FILE, LAYOUT_FILE, ARMS_FILE):
        if f not in card.get("files", {}):
            raise ArtifactError(f"{path}: channel policy artifact lacks {f}; re-train it")
    doc = json.loads((Path(path) / ARMS_FILE).read_text())
    channels = ChannelSet(tuple(Channel.from_dict(k, v) for k, v in doc["channels"].items()))
    vw = vw_from_artifact(Path(path), card, "vw-channel")
    return ChannelPolicy(vw, channels, str(card.get("name", "vw-channel")),
                         str(card.get("version", "0")))


class ChannelDecider:
    """A channel policy deciding inside the synthetic world (a
    :data:`~pushrl.data.channel_world.ChannelChooser`): the context of the pipeline's
    features at the decision, the mask of :meth:`ChannelSet.allowed` (opt-in, each channel's
    quiet hours and caps on its own sends, :class:`~pushrl.rules.channels.ChannelCounts`),
    one draw from the policy with its own generator.

    Args:
        policy: Channel policy over ``none`` + ``arms.channels``.
        arms: The arms (channels, spec, item catalog).
        n_users: Users of the world (indices of the counters).
        seed: Seed of the policy's generator.
    """

    def __init__(self, policy: ItemPolicy, arms: ChannelArms, n_users: int, seed: int) -> None:
        self.policy, self.arms = policy, arms
        self.counts = ChannelCounts(n_users, len(arms.channels))
        self.rng = np.random.default_rng(seed)
        self.blocked = np.zeros(len(REASONS), np.int64)  # verdict counts, all channels

    def __call__(self, state: FeatureState, users: np.ndarray, bucket: int,
                 items: np.ndarray, hours: np.ndarray,
                 opted_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(channel index or -1 for none, pscore_channel)`` per push, each ``(n,)``."""
        if users.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        hour, _, day = state.local_time(users, bucket)
        code = self.arms.channels.verdict(hour, self.counts.today(users, day),
                                          self.counts.week(users, bucket), opted_in)
        self.blocked += np.bincount(code.ravel(), minlength=len(REASONS))
        ctx = self.arms.context(state.features(users, bucket), items, hours, code == ALLOWED)
        d = self.policy.decide_batch(ctx, self.rng)
        ch = d.action.astype(np.int64) - 1
        go = ch >= 0
        self.counts.record(users[go], bucket, day[go], ch[go])
        return ch, d.pscore
