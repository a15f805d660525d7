"""The reward of a push: one definition, called by the simulator, bandits, OPE and compare.

Per push outcome, with :class:`RewardWeights` ``w``::

    reward = w.open * opened + w.click * clicked + w.revenue * revenue + w.convert * converted
             - w.send_cost * sent - w.unsubscribe_penalty * unsubscribed
             + w.organic * (w.revenue * organic_revenue + w.convert * organic_converted)

Organic outcomes (purchases without a push, :mod:`pushrl.sim.organic`) count with the same
revenue and conversion weights times ``w.organic`` (1 by default): a push that only moves a
purchase that would have happened anyway then earns nothing net (its conversion is paid by an
organic one lost later), so the objective is incremental. Logs and worlds without organic
purchases have none, and the reward is unchanged there.

Three views of the same formula:

* :func:`realised`: the reward of drawn outcomes (the simulator's steps, bandit rounds);
* :func:`value_per_open` and :func:`expected`: the expected reward from outcome
  probabilities (oracles, bandit regret, the simulator's expected send value);
* :func:`from_logs`: the reward of logged pushlog rows (timing OPE, bandit rounds, item
  OPE), where a missing outcome counts 0; :func:`missing_outcomes` counts the sent rows where
  that happened, so no caller hides it.

Channels (issue 17): each channel has its own send cost
(:attr:`pushrl.rules.channels.Channel.cost`). ``send_cost=`` of :func:`realised` /
:func:`expected` takes a per-row cost in place of ``w.send_cost``; :func:`channel_send_cost`
builds it from a channel column (a row without a channel, or one the map lacks, costs
``w.send_cost``), and :func:`from_logs` applies it with ``channel_costs=``. A channel
policy's *training* price of an unsubscribe is :func:`channel_unsub_price` (a multiple of
``w.unsubscribe_penalty`` per channel); the objective keeps ``w.unsubscribe_penalty``.

An *item round* (bandit training, item OPE, the item environment) chooses the item of a push
that is sent anyway: its reward is :meth:`RewardWeights.item_round` (no send cost, no
unsubscribe). It is written as a formula over outcome columns (``--reward
'clicked+0.01*revenue'``, the ``reward`` of an item policy's card): :meth:`RewardWeights.parse`
and :meth:`RewardWeights.item_formula`; :func:`item_reward` accepts either form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

#: Pushlog outcome column of each weight that an item round (whose send is given) rewards.
ITEM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("open", "opened"), ("click", "clicked"), ("convert", "converted"), ("revenue", "revenue"))
#: Pushlog outcome column of each weight of a sent push (the whole reward but the send).
LOG_COLUMNS: tuple[tuple[str, str], ...] = (*ITEM_COLUMNS, ("unsubscribe_penalty", "unsubscribed"))

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(rf"\s*([+-]?)\s*(?:({_NUM})\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*")


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the push reward (module docstring).

    Attributes:
        open: Per opened push.
        click: Per click.
        revenue: Per currency unit of attributed revenue.
        send_cost: Per delivered push (subtracted, >= 0).
        unsubscribe_penalty: Per unsubscribe (subtracted, >= 0).
        convert: Per conversion (on top of its revenue; 0 in the shipped scenarios).
        organic: Multiplier of the revenue and conversion weights on organic purchases
            (1 = count every purchase, so the objective is incremental; 0 = only
            push-attributed ones).
    """

    open: float = 1.0
    click: float = 2.0
    revenue: float = 0.02
    send_cost: float = 0.05
    unsubscribe_penalty: float = 10.0
    convert: float = 0.0
    organic: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"reward weight `{f.name}` must be a finite number, got {v!r}")
        if self.send_cost < 0 or self.unsubscribe_penalty < 0:
            raise ValueError(f"`send_cost` and `unsubscribe_penalty` must be >= 0 (they are "
                             f"subtracted), got {self.send_cost} and {self.unsubscribe_penalty}")

    def describe(self) -> str:
        """The reward as a formula over pushlog columns."""
        conv = f"+{self.convert:g}*converted" if self.convert else ""
        return (f"{self.open:g}*opened+{self.click:g}*clicked+{self.revenue:g}*revenue{conv}"
                f"-{self.send_cost:g}*sent-{self.unsubscribe_penalty:g}*unsubscribed")

    @classmethod
    def for_item_rounds(cls, terms: dict[str, float]) -> RewardWeights:
        """Weights of an item-round reward given as ``{outcome column: weight}`` over
        ``opened``, ``clicked``, ``converted``, ``revenue`` (no send cost, no unsubscribe).

        Raises:
            ValueError: another column.
        """
        names = {col: name for name, col in ITEM_COLUMNS}
        unknown = set(terms) - set(names)
        if unknown:
            raise ValueError(f"item-round rewards use {sorted(names)}, got {sorted(unknown)}")
        return cls(**{**dict.fromkeys((n for n, _ in ITEM_COLUMNS), 0.0),
                      **{names[c]: float(v) for c, v in terms.items()}},
                   send_cost=0.0, unsubscribe_penalty=0.0)

    @classmethod
    def parse(cls, text: str) -> RewardWeights:
        """Item-round weights from a formula of ``[weight*]column`` terms joined by ``+`` or
        ``-`` over ``opened``, ``clicked``, ``converted``, ``revenue``, e.g.
        ``"clicked+0.01*revenue"`` (the ``--reward`` option; the ``reward`` of item cards).
        A column named twice adds up.

        Raises:
            ValueError: not such a formula, or another column (names the term and the fix).
        """
        src = str(text)
        pos, terms = 0, dict[str, float]()
        names = {col: name for name, col in ITEM_COLUMNS}
        while pos < len(src) or not terms:
            m = _TERM.match(src, pos)
            if m is None or m.end() == pos or (terms and not m.group(1)):
                rest = src[pos:].strip() or src
                raise ValueError(f"--reward {src!r}: {rest!r} is not a `[weight*]column` term; "
                                 "write e.g. 'clicked+0.01*revenue'")
            col = m.group(3)
            if col not in names:
                raise ValueError(f"--reward {src!r}: `{col}` is not an item-round outcome; use "
                                 f"{', '.join(names)} (send cost and unsubscribes belong to "
                                 "the timing reward)")
            w = float(m.group(2)) if m.group(2) else 1.0
            terms[col] = terms.get(col, 0.0) + (-w if m.group(1) == "-" else w)
            pos = m.end()
        return cls.for_item_rounds(terms)

    def item_round(self) -> RewardWeights:
        """The reward of an item round, whose send is given: these weights without the
        send cost and the unsubscribe penalty."""
        return replace(self, send_cost=0.0, unsubscribe_penalty=0.0)

    def item_formula(self) -> str:
        """The item-round reward as the formula :meth:`parse` reads (exact weights), e.g.
        ``"clicked+0.01*revenue"``; ``"0"`` when no item outcome is weighted."""
        out = ""
        for col, w in self.item_terms():
            num = repr(abs(w))
            num = num[:-2] if num.endswith(".0") else num
            out += ("-" if w < 0 else "+" if out else "") + (col if num == "1" else
                                                              f"{num}*{col}")
        return out or "0"

    def item_terms(self) -> tuple[tuple[str, float], ...]:
        """The item-round part of the reward (the send is given: no send cost, no
        unsubscribe) as ``(outcome column, weight)`` terms, zero weights left out."""
        return tuple((col, float(getattr(self, name))) for name, col in ITEM_COLUMNS
                     if getattr(self, name))

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def item_reward(reward: RewardWeights | str) -> RewardWeights:
    """The item-round weights of ``reward`` (weights: :meth:`RewardWeights.item_round`; a
    formula: :meth:`RewardWeights.parse`)."""
    if isinstance(reward, RewardWeights):
        return reward.item_round()
    if isinstance(reward, str):
        return RewardWeights.parse(reward)
    raise TypeError(f"reward must be RewardWeights or a formula string, got "
                    f"{type(reward).__name__}")


def realised(w: RewardWeights, *, delivered: npt.ArrayLike, opened: npt.ArrayLike,
             clicked: npt.ArrayLike, revenue: npt.ArrayLike, unsubscribed: npt.ArrayLike,
             converted: npt.ArrayLike = 0.0, organic_converted: npt.ArrayLike = 0.0,
             organic_revenue: npt.ArrayLike = 0.0,
             send_cost: npt.ArrayLike | None = None) -> np.ndarray:
    """Reward of drawn outcomes, float64 broadcast shape of the inputs.

    The reward is linear in the outcomes, so with outcome probabilities in place of the
    outcomes this is the expected reward (for dependent outcomes use :func:`expected`).

    Args:
        w: Weights.
        delivered: A push was delivered (0 for bandit rounds, whose send is given).
        opened, clicked: Bool or 0/1 outcomes.
        revenue: Attributed revenue (0 without a conversion).
        unsubscribed: The user unsubscribed.
        converted: The push converted.
        organic_converted: Organic purchases (without a push) in the step.
        organic_revenue: Their revenue.
        send_cost: Per-row send cost (the channel's, :func:`channel_send_cost`); None =
            ``w.send_cost`` for every row.
    """
    cost = w.send_cost if send_cost is None else np.asarray(send_cost, np.float64)
    r = (w.open * np.asarray(opened, np.float64) + w.click * np.asarray(clicked)
         + w.revenue * np.asarray(revenue) - cost * np.asarray(delivered)
         - w.unsubscribe_penalty * np.asarray(unsubscribed))
    if w.convert:  # a zero weight adds exactly 0.0: skipped (the simulator's hot path)
        r = r + w.convert * np.asarray(converted)
    if w.organic and (np.any(organic_converted) or np.any(organic_revenue)):
        r = r + w.organic * (w.revenue * np.asarray(organic_revenue, np.float64)
                             + w.convert * np.asarray(organic_converted, np.float64))
    return np.asarray(r, np.float64)


def value_per_open(w: RewardWeights, p_click: npt.ArrayLike, p_convert: npt.ArrayLike,
                   price: npt.ArrayLike) -> np.ndarray:
    """Expected reward of an opened push from its click, conversion and revenue, broadcast.

    Args:
        p_click: Click probability given an open.
        p_convert: Conversion probability given a click.
        price: Revenue of a conversion.
    """
    pc, pv = np.asarray(p_click), np.asarray(p_convert)
    return np.asarray(w.open + pc * (w.click + w.revenue * pv * np.asarray(price)
                                     + w.convert * pv))


def expected(w: RewardWeights, open_value: npt.ArrayLike, p_unsub: npt.ArrayLike,
             delivered: npt.ArrayLike = 1.0,
             send_cost: npt.ArrayLike | None = None) -> np.ndarray:
    """Expected reward of a push, broadcast.

    Args:
        open_value: Expected reward of the open and what follows it,
            ``E[p_open * value_per_open]`` over the item choice.
        p_unsub: Unsubscribe probability of the push.
        delivered: Probability the push is delivered (1 for a send; 0 for a bandit round
            whose send is given and costs nothing here).
        send_cost: Per-push send cost of its channel; None = ``w.send_cost``.
    """
    cost = w.send_cost if send_cost is None else np.asarray(send_cost, np.float64)
    return np.asarray(np.asarray(open_value, np.float64) - cost * np.asarray(delivered)
                      - w.unsubscribe_penalty * np.asarray(p_unsub))


def channel_send_cost(w: RewardWeights, channel: npt.ArrayLike,
                      channel_costs: Mapping[str, float]) -> np.ndarray:
    """Send cost of each row's channel, float64 ``(n,)``.

    Args:
        channel: ``(n,)`` channel names (None/NaN/unknown = ``w.send_cost``).
        channel_costs: Send cost per channel name (:meth:`pushrl.rules.channels.ChannelSet.costs`).
    """
    ch = np.asarray(channel, dtype=object)
    out = np.full(ch.shape, float(w.send_cost))
    for name, cost in channel_costs.items():
        out[ch == name] = float(cost)
    return out


def channel_unsub_price(w: RewardWeights, channel: npt.ArrayLike,
                        multiples: Mapping[str, float], default: float = 1.0) -> np.ndarray:
    """Training price of an unsubscribe on each row's channel, float64 ``(n,)``: the
    objective's penalty (1 when it is 0) times the channel's multiple. A channel policy is
    trained with this price in place of ``w.unsubscribe_penalty`` so that it spends fewer
    unsubscribes than the objective alone would (issue 17: "no more unsubscribes than
    push-only"); the objective it is judged by keeps ``w.unsubscribe_penalty``.

    Args:
        channel: ``(n,)`` channel names (None/NaN/unknown: ``default``).
        multiples: Multiple per channel name (>= 1 each).
        default: Multiple of a channel the map lacks.

    Raises:
        ValueError: a multiple (or ``default``) is not a finite number >= 1.
    """
    for name, m in [*multiples.items(), ("default", default)]:
        if not (math.isfinite(m) and m >= 1.0):
            raise ValueError(f"unsubscribe price multiple of {name!r} must be a finite number "
                             f">= 1, got {m!r}")
    ch = np.asarray(channel, dtype=object)
    out = np.full(ch.shape, float(default))
    for name, m in multiples.items():
        out[ch == name] = float(m)
    return (w.unsubscribe_penalty or 1.0) * out


def from_logs(w: RewardWeights, pushes: pd.DataFrame, *,
              channel_costs: Mapping[str, float] | None = None) -> np.ndarray:
    """Reward of every pushlog row, float64 ``(n_rows,)``; a missing outcome counts 0
    (:func:`missing_outcomes` counts the sent rows where that happens).

    Args:
        pushes: Pushlog v1 ``pushes`` table (``sent`` and any of the outcome columns).
        channel_costs: Send cost per channel, applied through the ``channel`` column
            (:func:`channel_send_cost`); None = ``w.send_cost`` for every row.
    """
    def col(name: str) -> np.ndarray:
        if name not in pushes.columns:
            return np.zeros(len(pushes))
        return np.nan_to_num(pushes[name].astype("Float64").to_numpy(np.float64, na_value=0.0))

    cost = None
    if channel_costs is not None and "channel" in pushes.columns:
        ch = pushes["channel"].astype(object).where(pushes["channel"].notna(), None)
        cost = channel_send_cost(w, ch.to_numpy(), channel_costs)
    return realised(w, delivered=col("sent"), opened=col("opened"), clicked=col("clicked"),
                    revenue=col("revenue"), unsubscribed=col("unsubscribed"),
                    converted=col("converted"), send_cost=cost)


def missing_outcomes(w: RewardWeights, pushes: pd.DataFrame) -> dict[str, int]:
    """Sent rows whose reward counted a missing outcome as 0, by outcome column.

    Only outcomes ``w`` weighs (non-zero) count, and only on sent rows (an unsent row has no
    outcome); an absent column is missing on every sent row. Columns without a missing
    value are left out, so ``{}`` means every weighted outcome was logged.

    Args:
        pushes: Pushlog v1 ``pushes`` table.
    """
    sent = pushes["sent"].astype("boolean").fillna(False).to_numpy(bool)
    n_sent = int(sent.sum())
    out: dict[str, int] = {}
    for name, col in LOG_COLUMNS:
        if not getattr(w, name) or not n_sent:
            continue
        n = (n_sent if col not in pushes.columns
             else int(pushes[col].isna().to_numpy(bool)[sent].sum()))
        if n:
            out[col] = n
    return out
