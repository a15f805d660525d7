"""The reward of a push: one definition, called by the simulator, bandits, OPE and compare.

Per push outcome, with :class:`RewardWeights` ``w``::

    reward = w.open * opened + w.click * clicked + w.revenue * revenue + w.convert * converted
             - w.send_cost * sent - w.unsubscribe_penalty * unsubscribed

Three views of the same formula:

* :func:`realised`: the reward of drawn outcomes (the simulator's steps, bandit rounds);
* :func:`value_per_open` and :func:`expected`: the expected reward from outcome
  probabilities (oracles, bandit regret, the simulator's expected send value);
* :func:`from_logs`: the reward of logged pushlog rows (OPE), where a missing outcome
  counts 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

#: Pushlog outcome column of each weight that an item round (whose send is given) rewards.
ITEM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("open", "opened"), ("click", "clicked"), ("convert", "converted"), ("revenue", "revenue"))


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
    """

    open: float = 1.0
    click: float = 2.0
    revenue: float = 0.02
    send_cost: float = 0.05
    unsubscribe_penalty: float = 10.0
    convert: float = 0.0

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

    def item_terms(self) -> tuple[tuple[str, float], ...]:
        """The item-round part of the reward (the send is given: no send cost, no
        unsubscribe) as ``(outcome column, weight)`` terms, zero weights left out."""
        return tuple((col, float(getattr(self, name))) for name, col in ITEM_COLUMNS
                     if getattr(self, name))

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def realised(w: RewardWeights, *, delivered: Any, opened: Any, clicked: Any, revenue: Any,
             unsubscribed: Any, converted: Any = 0.0) -> np.ndarray:
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
    """
    r = (w.open * np.asarray(opened, np.float64) + w.click * np.asarray(clicked)
         + w.revenue * np.asarray(revenue) - w.send_cost * np.asarray(delivered)
         - w.unsubscribe_penalty * np.asarray(unsubscribed))
    if w.convert:  # a zero weight adds exactly 0.0: skipped (the simulator's hot path)
        r = r + w.convert * np.asarray(converted)
    return np.asarray(r, np.float64)


def value_per_open(w: RewardWeights, p_click: Any, p_convert: Any, price: Any) -> np.ndarray:
    """Expected reward of an opened push from its click, conversion and revenue, broadcast.

    Args:
        p_click: Click probability given an open.
        p_convert: Conversion probability given a click.
        price: Revenue of a conversion.
    """
    pc, pv = np.asarray(p_click), np.asarray(p_convert)
    return np.asarray(w.open + pc * (w.click + w.revenue * pv * np.asarray(price)
                                     + w.convert * pv))


def expected(w: RewardWeights, open_value: Any, p_unsub: Any, delivered: Any = 1.0
             ) -> np.ndarray:
    """Expected reward of a push, broadcast.

    Args:
        open_value: Expected reward of the open and what follows it,
            ``E[p_open * value_per_open]`` over the item choice.
        p_unsub: Unsubscribe probability of the push.
        delivered: Probability the push is delivered (1 for a send; 0 for a bandit round
            whose send is given and costs nothing here).
    """
    return np.asarray(np.asarray(open_value, np.float64) - w.send_cost * np.asarray(delivered)
                      - w.unsubscribe_penalty * np.asarray(p_unsub))


def from_logs(w: RewardWeights, pushes: pd.DataFrame) -> np.ndarray:
    """Reward of every pushlog row, float64 ``(n_rows,)``; a missing outcome counts 0.

    Args:
        pushes: Pushlog v1 ``pushes`` table (``sent`` and any of the outcome columns).
    """
    def col(name: str) -> np.ndarray:
        if name not in pushes.columns:
            return np.zeros(len(pushes))
        return np.nan_to_num(pushes[name].astype("Float64").to_numpy(np.float64, na_value=0.0))

    return realised(w, delivered=col("sent"), opened=col("opened"), clicked=col("clicked"),
                    revenue=col("revenue"), unsubscribed=col("unsubscribed"),
                    converted=col("converted"))
