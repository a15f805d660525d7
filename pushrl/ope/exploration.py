"""Choose the stochastic export of a timing agent by the deployment gate's own criteria.

A near-deterministic timing agent evaluated on randomised logs matches the logged actions on
few user-days, so its gate interval is wide (or its ESS below the floor). Serving it with
some exploration (:class:`~pushrl.policies.ppo.Exploration`: a softmax temperature and a mix
with the logger's mean send probability) gives up value for many matched rounds.
:func:`select_exploration` replays the logs once (recording the actor's logits), forms every
temperature and mix analytically, and scores each candidate export with the timing gate
(same estimator, same cluster bootstrap, same ESS and support rules as ``pushrl evaluate``).
It picks, among the exports that pass the ESS and support rules, the one with the highest
lower bound of the improvement over the logging policy (ties: the least exploration).

Run it on the logs the agent was trained from (the scenario's data), never on the held-out
logs the gate then decides on: choosing by the improvement bound on the evaluation data
would be a multiple-testing bias (an export chosen on some logs cannot be gated on them:
:meth:`~pushrl.ope._common.ResolvedPolicy.trained_on`). The ESS and support rules use no
rewards.

Caveat (measured on the quickstart's data, ``pushrl policies explore``): the gate compares
with the *logging* policy, per user-day. Every export that reached the ESS floor there lost
22-44 % of the objective to the most-active-hour heuristic over 28 days (more sends, more
unsubscribes), although the chosen one passed the held-out gate. Check an export's value in
the fitted simulator (``pushrl compare``) before promoting it.
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pushrl.data.features import FeatureSpec
from pushrl.data.io import Dataset
from pushrl.errors import DataError
from pushrl.ope.evaluate_timing import (
    TimingSettings,
    _seq_replicates,
    _seq_terms,
    _timing_gate,
    _timing_slots,
    _timing_weights,
    _trajectories,
    load_timing_settings,
)
from pushrl.ope.gate import DeploymentGate
from pushrl.ope.sequential import SequentialTerms
from pushrl.policies.base import TimingContext, TimingPolicy
from pushrl.policies.ppo import Exploration, PPOTimingPolicy

#: Default grids: the agent as trained (temperature None) and softened softmaxes, each
#: mixed toward the logger's send rate by a growing share.
EPSILONS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
TEMPERATURES: tuple[float | None, ...] = (None, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Candidate:
    """One export scored on the logs.

    Attributes:
        exploration: The export.
        ess: Kish ESS of its user-day weights; ``ess_floor`` the gate's floor.
        support_deficiency: Mass on actions the logger never takes.
        difference, lower, upper: Gate estimate of the improvement over the logging policy
            per user-day and its interval.
        failed_rules: The gate's failed rules on these logs.
    """

    exploration: Exploration
    ess: float
    ess_floor: float
    support_deficiency: float
    difference: float
    lower: float
    upper: float
    failed_rules: tuple[str, ...]

    @property
    def supported(self) -> bool:
        """Passes the gate's ESS and support rules (no rewards involved)."""
        return not {"ess_floor", "support_deficiency"} & set(self.failed_rules)


@dataclass(frozen=True)
class ExplorationChoice:
    """Result of :func:`select_exploration`.

    Attributes:
        exploration: The chosen export (no exploration if no candidate is supported).
        candidates: Every export scored, in grid order.
        send: The logger's mean send probability on allowed slots (the mix's ``send``).
        data_fingerprint: Fingerprint of the logs it was chosen on.
        gate_estimator: The gate's estimator.
        reason: One line: why this export.
        data_split: ``ds.split`` of those logs (a part of a user split), else ``None``.
    """

    exploration: Exploration
    candidates: tuple[Candidate, ...]
    send: float
    data_fingerprint: str
    gate_estimator: str
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    data_split: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the card's ``exploration`` is ``exploration`` plus ``selection``."""
        return {**self.exploration.to_dict(), "selection": {
            "data_fingerprint": self.data_fingerprint, "data_split": self.data_split,
            "gate_estimator": self.gate_estimator,
            "reason": self.reason, "logger_send": self.send,
            "candidates": [{**asdict(c), "exploration": c.exploration.to_dict()}
                           for c in self.candidates]}}


class _LogitRecorder(TimingPolicy):
    """The agent as trained, recording its logits per logged row while the replay asks for
    its distribution: one replay then serves every temperature and mix."""

    name = "ppo-logits"

    def __init__(self, policy: PPOTimingPolicy, n_rows: int) -> None:
        self.policy = policy
        self.z = np.zeros((n_rows, 2))

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        z = self.policy.actor.logits(self.policy.observation(ctx))
        self.z[ctx.extra["row"]] = z
        p = _send_prob(z, None, self.policy.deterministic)
        return np.stack([1.0 - p, p], axis=1)


def _send_prob(z: np.ndarray, temperature: float | None, deterministic: bool) -> np.ndarray:
    """P(send) of the export at ``temperature`` from ``(n, 2)`` logits (before the mix and
    the guardrail mask); ``None`` = as trained (argmax when ``deterministic``, ties wait)."""
    gap = z[:, 1] - z[:, 0]
    if temperature is None and deterministic:
        return (gap > 0).astype(np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(gap / (2.0 * (temperature or 1.0)))))


def select_exploration(policy: PPOTimingPolicy, ds: Dataset,
                       scenario: str | TimingSettings = "default", *,
                       epsilons: Sequence[float] = EPSILONS,
                       temperatures: Sequence[float | None] = TEMPERATURES,
                       gate: DeploymentGate | None = None, gate_estimator: str = "wdr",
                       n_bootstrap: int = 500, seed: int = 0) -> ExplorationChoice:
    """Score every (temperature, epsilon) export of ``policy`` on ``ds`` with the timing gate
    and choose one (module docstring).

    Args:
        policy: The trained agent (its own ``exploration`` is ignored).
        ds: Logs the agent was trained from (with ``pscore`` / ``pscore_send``).
        scenario: Scenario (guardrails, reward weights) or its :class:`TimingSettings`.
        epsilons: Mix shares to try, each in [0, 1].
        temperatures: Softmax temperatures to try (> 0), None = the agent as trained.
        gate: Gate thresholds (default :class:`DeploymentGate`).
        gate_estimator: ``"wdr"``, ``"wpdis"`` or ``"pdis"`` (``pushrl evaluate``'s default
            is ``wdr``).
        n_bootstrap: Cluster-bootstrap resamples per candidate (shared resamples).
        seed: Seed of the bootstrap.

    Raises:
        ValueError: an empty or out-of-range grid.
        DataError: logs without the send propensities timing OPE needs.
    """
    if gate_estimator not in ("wdr", "wpdis", "pdis"):
        raise ValueError(f"`gate_estimator` must be 'wdr', 'wpdis' or 'pdis', got "
                         f"{gate_estimator!r}")
    eps = [float(e) for e in epsilons]
    temps = list(dict.fromkeys(None if t is None else float(t) for t in temperatures))
    if not eps or not temps or any(not 0 <= e <= 1 for e in eps) or any(
            t is not None and t <= 0 for t in temps):
        raise ValueError(f"`epsilons` must be non-empty in [0, 1] and `temperatures` non-empty "
                         f"and > 0, got {eps} and {temps}")
    settings = (scenario if isinstance(scenario, TimingSettings)
                else load_timing_settings(scenario))
    g = gate or DeploymentGate(n_bootstrap_samples=n_bootstrap)
    rec = _LogitRecorder(policy, len(ds.pushes))
    slots = _timing_slots(ds, [rec], settings, FeatureSpec.fit(ds), None)
    allowed = slots.state[:, 10] > 0
    if not allowed.any():
        raise DataError("no logged slot is allowed by the scenario's guardrails; cannot "
                        "choose an exploration")
    send = float(np.clip(np.mean(slots.pb_send[allowed]), 0.0, 1.0))
    grid = [(t, e) for t in temps for e in eps]
    agent = {t: _send_prob(rec.z, t, policy.deterministic) * allowed for t in temps}
    slots.pe_send = [(1 - e) * agent[t] + e * send * allowed for t, e in grid]
    tr = _trajectories(slots, "day")
    terms: dict[str, SequentialTerms] = {"logging/on-policy": SequentialTerms(
        tr.reward, None, np.ones(tr.reward.shape[1]))}
    for j in range(len(grid)):
        terms[f"c{j}"] = _seq_terms(tr, j, [gate_estimator])[gate_estimator]
    reps = _seq_replicates(terms, tr.cluster, g.n_bootstrap_samples, seed)
    values = {k: t.value() for k, t in terms.items()}
    cands = []
    for j, (t, e) in enumerate(grid):
        diag = _timing_weights(tr, j)[0]
        res = _timing_gate(g, gate_estimator, {"candidate/" + gate_estimator: reps[f"c{j}"],
                                               "logging/on-policy": reps["logging/on-policy"]},
                           {"candidate/" + gate_estimator: values[f"c{j}"],
                            "logging/on-policy": values["logging/on-policy"]},
                           "logging/on-policy", diag, None)
        c = res.comparison
        cands.append(Candidate(Exploration(t, e, send if e > 0 else 0.0), diag.ess,
                               res.ess_floor, diag.support_deficiency, c.difference, c.lower,
                               c.upper, res.failed_rules))
    ok = [c for c in cands if c.supported]
    if not ok:
        best = max(cands, key=lambda c: c.ess)
        return ExplorationChoice(Exploration(), tuple(cands), send, ds.fingerprint(),
                                 gate_estimator,
                                 f"no export reaches the ESS floor {best.ess_floor:.0f} (best "
                                 f"ESS {best.ess:.0f} at epsilon {best.exploration.epsilon}); "
                                 "served without exploration", data_split=ds.split)
    best = max(ok, key=lambda c: (c.lower, -c.exploration.epsilon,
                                  -(c.exploration.temperature or 0.0)))
    return ExplorationChoice(best.exploration, tuple(cands), send, ds.fingerprint(),
                             gate_estimator,
                             f"highest gate lower bound ({best.lower:+.4g}/user-day) among "
                             f"{len(ok)} of {len(cands)} exports passing the ESS and support "
                             "rules", data_split=ds.split)
