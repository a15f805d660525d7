"""A trigger simulator fitted from trigger logs (issue #16): organic return, response per
delay and intent decay per trigger kind, with incremental conversions as the objective.

Fitted from the delay rounds of a log (:class:`~pushrl.policies.delay_data.DelayRounds`,
any logging policy that randomises the arms; ``pscore`` weights make it unbiased for
context-dependent loggers too):

* **organic return**: ``p_organic[kind]`` = the conversion rate of the dropped triggers
  (nothing was sent: what the users did anyway) within the horizon;
* **response per delay**: ``p_convert[kind, arm]`` (IPW-weighted conversion rate of the
  triggers logged with that arm) and ``p_send[kind, arm]`` (share actually sent: a purchase
  before the due time cancels the push); the **incremental** conversion of an arm is
  ``p_convert[kind, arm] - p_organic[kind]`` (0 for drop);
* **intent decay**: ``incremental(kind, d) ~ A_kind * exp(-d / tau_kind)``, a weighted
  log-linear least-squares fit over the delay arms (reported; the simulator itself uses the
  cell estimates, which need no functional form).

:meth:`TriggerSim.evaluate` values a policy's arm distribution over logged contexts:
expected incremental conversions, sends and conversions. The estimates are per kind (the
context enters only through the kind): a simulator that ranks delay *rules*; the truth of the
synthetic world (``ground_truth_triggers.parquet``) is the per-context reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.errors import DataError


@dataclass
class TriggerSim:
    """Per-kind organic and per-(kind, arm) response estimates.

    Attributes:
        arms: Delay arms (None = drop).
        kinds: Kinds with rounds.
        p_organic: ``{kind: rate}``.
        p_convert: ``{kind: (k,)}`` conversion rate per arm.
        p_send: ``{kind: (k,)}`` share sent per arm.
        n: ``{kind: (k,)}`` rounds per cell.
        decay: ``{kind: {"A": ..., "tau_h": ...}}`` the intent-decay fit.
        unfitted: ``{kind: rounds}`` kinds without a dropped round (organic rate unknown;
            :meth:`evaluate` leaves them out).
        p_recovered: ``{kind: (k,)}`` push-attributed conversion rate per arm (when fitted
            with ``recovered``).
        p_unsub: ``{kind: (k,)}`` unsubscribe rate per arm (when fitted with
            ``unsubscribed``).
    """

    arms: tuple[int | None, ...]
    kinds: tuple[str, ...]
    p_organic: dict[str, float] = field(default_factory=dict)
    p_convert: dict[str, np.ndarray] = field(default_factory=dict)
    p_send: dict[str, np.ndarray] = field(default_factory=dict)
    n: dict[str, np.ndarray] = field(default_factory=dict)
    decay: dict[str, dict[str, float]] = field(default_factory=dict)
    unfitted: dict[str, int] = field(default_factory=dict)
    p_recovered: dict[str, np.ndarray] = field(default_factory=dict)
    p_unsub: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, kind: np.ndarray, action: np.ndarray, pscore: np.ndarray,
            converted: np.ndarray, sent: np.ndarray, arms: tuple[int | None, ...],
            min_rounds: int = 30, *, recovered: np.ndarray | None = None,
            unsubscribed: np.ndarray | None = None) -> TriggerSim:
        """Fit from logged rounds (all ``(n,)``; ``action`` indexes ``arms``;
        ``recovered``: the trigger's push converted; ``unsubscribed``: it unsubscribed).

        Raises:
            DataError: no kind has a dropped round (the organic rate is unknown).
        """
        kinds = tuple(sorted(set(map(str, kind))))
        k = len(arms)
        drop = arms.index(None)
        sim = cls(arms, kinds)
        w = 1.0 / np.asarray(pscore, float)
        for kd in kinds:
            m = kind == kd
            conv = np.zeros(k)
            snd = np.zeros(k)
            cnt = np.zeros(k)
            for a in range(k):
                c = m & (action == a)
                cnt[a] = c.sum()
                if cnt[a]:
                    conv[a] = np.average(converted[c], weights=w[c])
                    snd[a] = np.average(sent[c], weights=w[c])
            if cnt[drop] < 1:  # organic rate unknown: the kind stays out (``unfitted``)
                sim.unfitted[kd] = int(m.sum())
                continue
            for rate, flags in ((sim.p_recovered, recovered), (sim.p_unsub, unsubscribed)):
                if flags is not None:
                    rate[kd] = np.array([np.average(flags[c], weights=w[c]) if c.any() else 0.0
                                         for c in (m & (action == a) for a in range(k))])
            sim.p_organic[kd] = float(conv[drop])
            sim.p_convert[kd] = conv
            sim.p_send[kd] = snd
            sim.n[kd] = cnt
            incr = conv - conv[drop]
            d = np.array([a for a in arms if a is not None], float)
            live = np.array([a is not None for a in arms])
            y, ok = incr[live], (incr[live] > 0) & (cnt[live] >= min_rounds)
            if ok.sum() >= 2:
                slope, icpt = np.polyfit(d[ok], np.log(y[ok]), 1, w=np.sqrt(cnt[live][ok]))
                sim.decay[kd] = {"A": float(np.exp(icpt)),
                                 "tau_h": float(-1 / slope) if slope < 0 else float("inf")}
        if not sim.p_organic:
            raise DataError("no dropped triggers in the log: the organic rate needs a logger "
                            "that sometimes drops (randomise the drop arm)")
        return sim

    def incremental(self, kd: str) -> np.ndarray:
        """``(k,)`` incremental conversion per arm for kind ``kd`` (drop = 0)."""
        return self.p_convert[kd] - self.p_organic[kd]

    def evaluate(self, dist: np.ndarray, kind: np.ndarray) -> dict[str, float]:
        """Expected totals of a policy's arm distribution ``(n, k)`` over rounds of ``kind``:
        incremental conversions, conversions and sends."""
        out = {"incremental": 0.0, "conversions": 0.0, "sends": 0.0}
        for kd in set(map(str, kind)):
            if kd not in self.p_convert:
                continue
            m = kind == kd
            d = dist[m]
            out["incremental"] += float((d @ self.incremental(kd)).sum())
            out["conversions"] += float((d @ self.p_convert[kd]).sum())
            out["sends"] += float((d @ self.p_send[kd]).sum())
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"arms": list(self.arms), "p_organic": self.p_organic,
                "p_convert": {k: v.tolist() for k, v in self.p_convert.items()},
                "p_send": {k: v.tolist() for k, v in self.p_send.items()},
                "n": {k: v.astype(int).tolist() for k, v in self.n.items()},
                "decay": self.decay, "unfitted": self.unfitted,
                "p_recovered": {k: v.tolist() for k, v in self.p_recovered.items()},
                "p_unsub": {k: v.tolist() for k, v in self.p_unsub.items()}}
