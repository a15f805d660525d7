"""A timing-training recipe that needs no per-world tuning: the unsubscribe penalty from the
scenario's own objective, and a safe choice among trained seeds and the heuristic.

* :func:`user_value_penalty`: the training-only unsubscribe weight is the scenario's weight
  plus what the reference heuristic earns from one user over the scenario's horizon in the
  fitted simulator, i.e. the value an unsubscribe destroys, measured in the world's own
  units (a constant such as 40 was tuned on one world's scale of rewards).
* :func:`select_timing`: roll out every candidate (trained seeds, sampled and argmax) and
  the heuristic on fitted-simulator VALIDATION users (never the true world), paired on the
  same users and random numbers, and keep a learned policy only if its objective beats the
  heuristic's with a positive 95 % lower bound and it is NON-INFERIOR on unsubscribes: the
  upper 95 % bound of its increase in the unsubscribed share is below
  ``unsubscribe_margin`` (default :data:`UNSUBSCRIBE_MARGIN`, +0.5 percentage points of
  users); otherwise ship the heuristic. So the learned policy never ships worse than the
  heuristic in the fitted simulator.

Why a margin and not "no significantly higher unsubscribes": that rule passes an agent whose
increase is merely not *proven* (lower bound just under 0), i.e. it puts the burden of proof
on the harm. In the served generalization run (``benchmarks/results/
generalization_served.md``) it shipped agents that unsubscribed +2.4 pp (default) and
+0.9 pp (night-owls) more users on the true world, with validation lower bounds of
-0.00003. Non-inferiority puts the burden on the agent: its upper bound must show the harm,
if any, is smaller than the stated margin (a one-sided 2.5 % test, the upper end of the
two-sided 95 % interval).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.envs.rollout import RolloutResult, rollout
from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.policies.baselines import make_baseline

#: Seed offset of the selection rollouts (disjoint from training and the benchmarks' tests).
SELECTION_SEED = 7_500_000
_Z = 1.959963984540054
#: Default non-inferiority margin on the unsubscribed share (fraction of users: 0.005 = +0.5
#: percentage points over the selection's horizon).
UNSUBSCRIBE_MARGIN = 0.005


def user_value_penalty(scenario: str | Scenario, *, reference: str = "most-active-hour",
                       n_users: int = 1000, seed: int = SELECTION_SEED) -> tuple[float, float]:
    """Training unsubscribe weight derived from the scenario (module docstring).

    Args:
        scenario: A fitted-simulator scenario (``truth`` must be false).
        reference: Baseline whose per-user value prices a lost user.
        n_users: Simulated users.
        seed: Rollout seed.

    Returns:
        ``(penalty, value_per_user)``: the scenario's unsubscribe weight plus
        ``max(value_per_user, 0)``, and the reference's objective per user over the horizon.

    Raises:
        ValueError: a truth scenario (the recipe may not look at the true world).
    """
    sc = load_scenario(scenario)
    if sc.truth:
        raise ValueError("user_value_penalty runs in the fitted simulator; got a truth=true "
                         "scenario (never tune on the true world)")
    res = rollout(make_baseline(reference), sc, n_users=n_users, seed=seed)
    value = float(res.objective.mean())
    return sc.reward.unsubscribe_penalty + max(value, 0.0), value


@dataclass(frozen=True)
class Paired:
    """Paired difference (candidate - reference) per user: mean and 95 % interval."""

    diff: float
    lower: float
    upper: float

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> Paired:
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
        se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
        m = float(d.mean())
        return cls(m, m - _Z * se, m + _Z * se)


@dataclass(frozen=True)
class Selection:
    """Result of :func:`select_timing`.

    Attributes:
        name: The chosen candidate (``reference`` when none qualified).
        policy: The chosen policy object.
        objective: Per candidate: paired objective difference vs the reference per user.
        unsubscribed: Per candidate: paired difference of the unsubscribe indicator.
        qualified: Candidates that passed both rules.
        reference_objective: The reference's objective per user.
        unsubscribe_margin: The non-inferiority margin applied to ``unsubscribed[...].upper``.
    """

    name: str
    policy: Any
    objective: dict[str, Paired]
    unsubscribed: dict[str, Paired]
    qualified: tuple[str, ...]
    reference_objective: float
    extra: dict[str, Any] = field(default_factory=dict)
    unsubscribe_margin: float = UNSUBSCRIBE_MARGIN

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the policy object)."""
        return {"name": self.name, "qualified": list(self.qualified),
                "reference_objective": self.reference_objective,
                "unsubscribe_margin": self.unsubscribe_margin,
                "objective": {k: vars(v) for k, v in self.objective.items()},
                "unsubscribed": {k: vars(v) for k, v in self.unsubscribed.items()}}


def qualifies(objective: Paired, unsubscribed: Paired,
              unsubscribe_margin: float = UNSUBSCRIBE_MARGIN) -> bool:
    """The selection's rule for one candidate: a positive 95 % lower bound on the objective
    and non-inferiority on unsubscribes (``unsubscribed.upper < unsubscribe_margin``)."""
    return objective.lower > 0 and unsubscribed.upper < unsubscribe_margin


def with_sampling(policies: Mapping[str, Any]) -> dict[str, Any]:
    """Each PPO policy twice: ``NAME/argmax`` and ``NAME/sample`` (copies)."""
    out: dict[str, Any] = {}
    for name, pol in policies.items():
        if hasattr(pol, "deterministic"):
            for det in (True, False):
                p = copy.copy(pol)
                p.deterministic = det
                out[f"{name}/{'argmax' if det else 'sample'}"] = p
        else:
            out[name] = pol
    return out


def select_timing(candidates: Mapping[str, Any], scenario: str | Scenario, *,
                  reference: str = "most-active-hour", n_users: int = 1000,
                  seed: int = SELECTION_SEED, item_policy: Any = None,
                  unsubscribe_margin: float = UNSUBSCRIBE_MARGIN) -> Selection:
    """Choose among ``candidates`` and the ``reference`` heuristic (module docstring).

    Args:
        candidates: ``name -> timing policy``.
        scenario: The fitted-simulator scenario (``truth`` must be false).
        reference: The heuristic fallback (a baseline name).
        n_users: Validation users (same users and random numbers for every candidate).
        seed: Rollout seed (keep it disjoint from any test seed).
        item_policy: Item policy of the rollouts (default: the scenario's).
        unsubscribe_margin: Non-inferiority margin on the unsubscribed share (fraction of
            users, >= 0): a candidate qualifies only if the upper 95 % bound of its paired
            increase is below it (0 demands proof of a decrease).

    Raises:
        ValueError: a truth scenario, no candidates, or a negative or non-finite margin.
    """
    sc = load_scenario(scenario)
    if sc.truth:
        raise ValueError("select_timing runs in the fitted simulator; got a truth=true scenario "
                         "(never select on the true world)")
    if not candidates:
        raise ValueError("select_timing needs at least one candidate")
    if not (np.isfinite(unsubscribe_margin) and 0 <= unsubscribe_margin < 1):
        raise ValueError(f"`unsubscribe_margin` must be a share of users in [0, 1), got "
                         f"{unsubscribe_margin!r} (e.g. 0.005 = +0.5 percentage points)")
    ref_pol = make_baseline(reference)
    ref = rollout(ref_pol, sc, n_users=n_users, seed=seed, item_policy=item_policy)
    runs: dict[str, RolloutResult] = {
        name: rollout(p, sc, n_users=n_users, seed=seed, item_policy=item_policy,
                      policy_name=name) for name, p in candidates.items()}
    obj = {n: Paired.of(r.objective, ref.objective) for n, r in runs.items()}
    uns = {n: Paired.of(r.unsubscribed, ref.unsubscribed) for n, r in runs.items()}
    ok = tuple(n for n in runs if qualifies(obj[n], uns[n], unsubscribe_margin))
    best = max(ok, key=lambda n: obj[n].diff) if ok else reference
    chosen = candidates[best] if ok else ref_pol
    return Selection(best, chosen, obj, uns, ok, float(ref.objective.mean()),
                     extra={"summaries": {n: r.summary() for n, r in runs.items()},
                            "reference_summary": ref.summary()},
                     unsubscribe_margin=float(unsubscribe_margin))


def explain(sel: Selection, n_users: int, reference: str = "most-active-hour") -> str:
    """One line saying what :func:`select_timing` ships and why (objective difference per
    user vs the reference with its 95 % interval, unsubscribe difference, sends per day)."""
    sums = sel.extra.get("summaries", {})
    ref_sends = sel.extra.get("reference_summary", {}).get("sim/sends_per_user_day", 0.0)

    def sends(name: str) -> str:
        return f"{sums.get(name, {}).get('sim/sends_per_user_day', float('nan')):.2f}"

    if sel.qualified:
        o = sel.objective[sel.name]
        return (f"ships {sel.name}: {o.diff:+.3f} [{o.lower:+.3f}, {o.upper:+.3f}] objective/"
                f"user vs {reference} on {n_users} fitted-simulator validation users "
                f"({sends(sel.name)} vs {ref_sends:.2f} sends/user/day)")
    best = max(sel.objective, key=lambda n: sel.objective[n].diff)
    o, u = sel.objective[best], sel.unsubscribed[best]
    margin = sel.unsubscribe_margin
    why = ("its 95 % lower bound is not above 0" if o.lower <= 0
           else f"its unsubscribe increase is not shown to be below the +{100 * margin:.2g} pp "
                f"margin (upper bound {100 * u.upper:+.2f} pp)")
    return (f"ships {reference}: the learned agent is not better on {n_users} "
            f"fitted-simulator validation users ({best}: {o.diff:+.3f} [{o.lower:+.3f}, "
            f"{o.upper:+.3f}] objective/user, unsubscribed share {u.diff:+.4f} "
            f"[{u.lower:+.4f}, {u.upper:+.4f}], {sends(best)} vs {ref_sends:.2f} "
            f"sends/user/day): {why}")
