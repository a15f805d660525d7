"""The item-policy path of :func:`pushrl.ope.evaluate.evaluate_policy`.

The logged sent pushes become bandit rounds (with the policy's own fitted encoder when it
carries one) whose ``pscore`` is the item-level propensity ``pscore / pscore_send``
(:func:`~pushrl.data.contract.item_pscore`; never the joint send x item ``pscore``);
``action_dist = policy.action_dist(context)`` is repeated at every logged position, a linear
reward model is cross-fitted (:func:`crossfit_item_rewards`) and every applicable estimator
of :data:`pushrl.ope.ESTIMATORS` runs on shared bootstrap resamples; the gate is
:class:`~pushrl.ope.gate.DeploymentGate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pushrl.data.features import user_index
from pushrl.data.io import Dataset
from pushrl.errors import ArtifactError, DataError
from pushrl.ope import make_estimator
from pushrl.ope._rounds import RoundTerms
from pushrl.ope._validate import validate_bandit_inputs
from pushrl.ope.crossfit import CrossFitDR
from pushrl.ope.diagnostics import diagnostics_from_inputs
from pushrl.ope.estimators import interval_from_terms
from pushrl.ope._common import (
    ITEM_ESTIMATORS,
    EvaluationResult,
    Progress,
    ResolvedPolicy,
    _bootstrap_interval,
    _gate_estimator,
    _gate_settings,
    _hyper,
    _missing_note,
    _say,
    _select,
)
from pushrl.ope.gate import DeploymentGate
from pushrl.ope.intervals import IntervalEstimate, estimate_intervals
from pushrl.policies.base import ItemContext, Policy
from pushrl.policies.item_data import (
    BanditRounds,
    ContextEncoder,
    build_rounds,
    candidates_all,
    default_reward,
    take_context,
)
from pushrl.rules.reward import RewardWeights, item_reward

ITEM_GATE = DeploymentGate(one_sided=True, min_ess_support_fraction=0.5)
"""The item path's default gate (its estimator is set by ``gate_estimator``, DR by default):
a one-sided level-``alpha`` test of "no improvement" and an ESS floor capped at half the
ESS a deterministic policy can reach under the logger (:func:`pushrl.ope.gate.support_ess`).
Why, and its measured false-pass rate and power on replicated logs:
``benchmarks/gate_power.py`` (``benchmarks/results/gate_power.md``)."""


def _with_extra(rounds: BanditRounds, ds: Dataset) -> BanditRounds:
    users = user_index(ds, ds.pushes["user_id"].iloc[rounds.row])
    rounds.context.extra.update(user_index=users, row=np.asarray(rounds.row))
    return rounds


def _take(ctx: ItemContext, idx: np.ndarray) -> ItemContext:
    out = take_context(ctx, idx)
    n = len(ctx)
    out.extra = {k: (v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v)
                 for k, v in ctx.extra.items()}
    return out


def _item_dist(policy: Policy, ctx: ItemContext, progress: Progress | None, stage: str,
               block: int = 4096) -> np.ndarray:
    """``policy.action_dist`` over all rounds in blocks (for progress), shape ``(n, k)``."""
    n = len(ctx)
    parts = []
    for start in range(0, n, block):
        idx = np.arange(start, min(start + block, n))
        parts.append(policy.action_dist(ctx if n <= block else _take(ctx, idx)))
        _say(progress, stage, idx[-1] + 1, n)
    dist = np.concatenate(parts, axis=0)
    if dist.shape != np.asarray(ctx.mask).shape:
        raise ArtifactError(f"{stage}: the policy returned action_dist of shape {dist.shape}, "
                            f"expected (n_rounds, n_candidates) = {np.asarray(ctx.mask).shape}")
    return dist


def _linear_fit(x: np.ndarray, y: np.ndarray, binary: bool, seed: int
                ) -> tuple[np.ndarray, float, bool]:
    """Weights and intercept on the raw scale of a standardised linear model."""
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    xs = (x - mu) / sd
    if binary and np.unique(y).size < 2:
        return np.zeros(x.shape[1]), float(y.mean()), False
    from sklearn.linear_model import LogisticRegression, Ridge  # only when fitting

    model: Any = (LogisticRegression(C=1.0, max_iter=2000, random_state=seed) if binary
                  else Ridge(alpha=1.0))
    model.fit(xs, y)
    coef = np.ravel(model.coef_) / sd
    return coef, float(np.ravel(model.intercept_)[0] - coef @ mu), binary


def crossfit_item_rewards(ctx: ItemContext, action: np.ndarray, reward: np.ndarray,
                          position: np.ndarray | None, len_list: int, *, n_folds: int = 3,
                          seed: int = 0) -> np.ndarray:
    """Cross-fitted reward model ``q_hat(x_i, a, k)`` for every round, candidate and position.

    A linear model (logistic for 0/1 rewards, ridge otherwise) on ``[shared_i,
    candidate_features_i[a], one-hot catalog item, one-hot position]``, fitted on the logged
    actions of ``n_folds - 1`` folds and predicting the held-out fold. Being linear, its score
    for all ``(round, candidate, position)`` triples is assembled from the parts without
    materialising the ``n * k`` feature rows.

    Returns:
        Shape ``(n_rounds, n_candidates, len_list)``.
    """
    cand = np.asarray(ctx.candidates, np.int64)
    n, k = cand.shape
    shared = np.asarray(ctx.shared, np.float64)
    cf = np.asarray(ctx.candidate_features, np.float64)
    n_items = int(cand.max()) + 1
    ds_, dc = shared.shape[1], cf.shape[2]
    rows = np.arange(n)
    pos = np.zeros(n, np.int64) if position is None else np.asarray(position, np.int64)
    x = np.zeros((n, ds_ + dc + n_items + len_list))
    x[:, :ds_] = shared
    x[:, ds_:ds_ + dc] = cf[rows, action]
    x[rows, ds_ + dc + cand[rows, action]] = 1.0
    x[rows, ds_ + dc + n_items + pos] = 1.0
    binary = bool(np.isin(reward, (0.0, 1.0)).all())
    q = np.empty((n, k, len_list))
    from sklearn.model_selection import KFold  # scikit-learn only when fitting

    splits = ([(rows, rows)] if n_folds < 2 or n < 2 * n_folds
              else list(KFold(n_folds, shuffle=True, random_state=seed).split(x)))
    for train, test in splits:
        w, b, logistic = _linear_fit(x[train], reward[train], binary, seed)
        w_s, w_c = w[:ds_], w[ds_:ds_ + dc]
        w_i, w_p = w[ds_ + dc:ds_ + dc + n_items], w[ds_ + dc + n_items:]
        score = (shared[test] @ w_s)[:, None] + cf[test] @ w_c + w_i[cand[test]] + b
        full = score[:, :, None] + w_p[None, None, :]
        q[test] = 1.0 / (1.0 + np.exp(-full)) if logistic else full
    return q


@dataclass
class _ItemInputs:
    rounds: BanditRounds
    weights: RewardWeights
    len_list: int
    position: np.ndarray | None
    candidate: np.ndarray
    baseline: np.ndarray | None
    q_hat: np.ndarray


def _rounds_for(policy: Policy, ds: Dataset, rs: RewardWeights,
                cache: dict[int, BanditRounds]) -> BanditRounds:
    enc = getattr(policy, "encoder", None)
    enc = enc if isinstance(enc, ContextEncoder) else None
    key = id(enc)
    if key not in cache:
        cache[key] = _with_extra(build_rounds(ds, encoder=enc, reward=rs), ds)
    return cache[key]


def _item_inputs(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                 rs: RewardWeights, seed: int, progress: Progress | None) -> _ItemInputs:
    cache: dict[int, BanditRounds] = {}
    _say(progress, "building bandit rounds", 0, 1)
    r_c = _rounds_for(cand.policy, ds, rs, cache)
    r_b = None if base is None else _rounds_for(base.policy, ds, rs, cache)
    if r_b is not None and not np.array_equal(r_b.row, r_c.row):
        raise DataError("candidate and baseline contexts cover different logged rounds; "
                        "their encoders disagree about the logs")
    n_actions = r_c.n_actions
    if r_b is not None and r_b.n_actions != n_actions:
        raise DataError(f"candidate and baseline see {n_actions} and {r_b.n_actions} "
                        "candidates per round; use one items table")
    pos = r_c.position
    len_list = int(pos.max()) + 1 if pos is not None else 1
    dist_c = _item_dist(cand.policy, r_c.context, progress, "candidate action_dist")
    dist_b = (None if base is None or r_b is None
              else _item_dist(base.policy, r_b.context, progress, "baseline action_dist"))
    _say(progress, "cross-fitting the reward model", 0, 1)
    q_hat = crossfit_item_rewards(r_c.context, r_c.action, r_c.reward, pos, len_list, seed=seed)

    def expand(d: np.ndarray) -> np.ndarray:
        return np.repeat(d[:, :, None], len_list, axis=2)

    return _ItemInputs(r_c, rs, len_list, pos, expand(dist_c),
                       None if dist_b is None else expand(dist_b), q_hat)


def _terms_interval(name: str, terms: RoundTerms, alpha: float, n_bootstrap: int,
                    seed: int) -> IntervalEstimate:
    """The estimate of per-round ``terms`` with its bootstrap interval."""
    d = interval_from_terms(terms, alpha=alpha, n_bootstrap_samples=n_bootstrap,
                            random_state=seed)
    return _bootstrap_interval(name, terms.value(), d, alpha)


def _crossfit_dr(inp: _ItemInputs, dist: np.ndarray, alpha: float, n_bootstrap: int,
                 seed: int) -> IntervalEstimate:
    r = inp.rounds
    binary = bool(np.isin(r.reward, (0.0, 1.0)).all())
    from sklearn.linear_model import LogisticRegression, Ridge  # only when fitting

    model = LogisticRegression(max_iter=1000) if binary else Ridge(alpha=1.0)
    est = CrossFitDR(base_model=model, random_state=seed)
    # OBP's RegressionModel features: [context, action_context[action]] with the catalog's
    # item features (one-hot actions would build n_rounds * n_actions^2 prediction cells)
    terms = est.round_terms(r.reward, r.action, r.pscore, dist, inp.position,
                            context=np.asarray(r.context.shared, np.float64),
                            action_context=np.asarray(r.catalog.features, np.float64))
    return _terms_interval("dr-cf", terms, alpha, n_bootstrap, seed)


def _item_estimates(inp: _ItemInputs, dist: np.ndarray, names: Sequence[str], alpha: float,
                    n_bootstrap: int, seed: int,
                    hyper: Mapping[str, Mapping[str, Any]] | None) -> dict[str, IntervalEstimate]:
    r = inp.rounds
    ests = [make_estimator(n, **_hyper(n, hyper)) for n in names if n != "dr-cf"]
    out = {} if not ests else dict(estimate_intervals(
        ests, r.reward, r.action, r.pscore, dist, inp.position, inp.q_hat, alpha=alpha,
        n_bootstrap_samples=n_bootstrap, random_state=seed))
    if "dr-cf" in names:
        out["dr-cf"] = _crossfit_dr(inp, dist, alpha, n_bootstrap, seed)
    return {n: out[n] for n in names}


def _on_policy(reward: np.ndarray, alpha: float, n_bootstrap: int, seed: int,
               name: str = "on-policy") -> IntervalEstimate:
    terms = RoundTerms(direct=None, weighted=np.asarray(reward, np.float64))
    return _terms_interval(name, terms, alpha, n_bootstrap, seed)


def _item_applicable(inp: _ItemInputs) -> dict[str, str | None]:
    every = candidates_all(np.asarray(inp.rounds.context.candidates), len(inp.rounds.catalog))
    return {n: (None if n != "dr-cf" or every else
                "needs the same candidate set (the whole catalog) in every round")
            for n in ITEM_ESTIMATORS}


def _evaluate_item(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None, *,
                   estimators: Sequence[str] | None, reward: RewardWeights | str | None,
                   n_bootstrap: int, seed: int, alpha: float, gate: DeploymentGate | None,
                   gate_estimator: str | None, hyper: Mapping[str, Mapping[str, Any]] | None,
                   progress: Progress | None) -> EvaluationResult:
    _select(estimators, "item", dict.fromkeys(ITEM_ESTIMATORS))  # fail fast on bad names
    _gate_estimator("item", (), gate_estimator)
    rs, notes = _item_weights(ds, cand, base, reward)
    inp = _item_inputs(ds, cand, base, rs, seed, progress)
    names, skipped = _select(estimators, "item", _item_applicable(inp))
    g_name = _gate_estimator("item", names, gate_estimator)
    r = inp.rounds
    _say(progress, "estimating with " + ", ".join(names), 0, 1)
    est = _item_estimates(inp, inp.candidate, names, alpha, n_bootstrap, seed, hyper)
    if inp.baseline is not None:
        base_est = _item_estimates(inp, inp.baseline, names, alpha, n_bootstrap, seed, hyper)
    else:
        base_est = {"on-policy": _on_policy(r.reward, alpha, n_bootstrap, seed)}
    diag, weights = diagnostics_from_inputs(validate_bandit_inputs(
        r.reward, r.action, r.pscore, inp.candidate, inp.position))
    _say(progress, f"deployment gate ({g_name})", 0, 1)
    g = replace(gate or replace(ITEM_GATE, alpha=alpha, n_bootstrap_samples=n_bootstrap),
                estimator=make_estimator(g_name, **_hyper(g_name, hyper)))
    decision = g.evaluate(r.reward, r.action, r.pscore, inp.candidate, inp.baseline,
                          inp.position, inp.q_hat, random_state=seed)
    if r.missing_outcomes:
        notes.append(_missing_note(r.missing_outcomes, f"{r.n_rounds} rounds"))
    return EvaluationResult(
        kind="item", policy=cand.describe(), baseline=None if base is None else base.describe(),
        data={"path": str(ds.path), "fingerprint": ds.fingerprint(),
              "split": ds.split, "n_rounds": r.n_rounds,
              "n_actions": r.n_actions, "len_list": inp.len_list},
        reward=rs.item_formula(), estimates=est, baseline_estimates=base_est, diagnostics=diag,
        baseline_diagnostics=decision.baseline_diagnostics, gate=decision,
        gate_estimator=g_name, skipped=skipped, notes=notes, weights=weights,
        settings={"hyperparameters": {n: _hyper(n, hyper) for n in names if _hyper(n, hyper)},
                  "reward_model": "cross-fitted linear (3 folds): logistic for 0/1 rewards, "
                                  "ridge otherwise",
                  "gate": _gate_settings(g)})


def _card_reward(who: ResolvedPolicy | None) -> RewardWeights | None:
    text = None if who is None or not who.card else who.card.get("reward")
    return None if not text else RewardWeights.parse(str(text))


def _item_weights(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                      reward: RewardWeights | str | None) -> tuple[RewardWeights, list[str]]:
    notes: list[str] = []
    if reward is not None and reward != "":
        return item_reward(reward), notes
    for who, other in ((cand, base), (base, cand)):
        rs = _card_reward(who)
        if rs is not None:
            theirs = _card_reward(other)
            if theirs is not None and theirs != rs:
                notes.append(f"the policies were trained on different rewards; both are "
                             f"evaluated on {rs.item_formula()}")
            return rs, notes
    return default_reward(ds), notes


