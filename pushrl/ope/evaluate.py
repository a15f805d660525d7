"""Evaluate a candidate policy on logged data: estimates, diagnostics, the gate and a report.

:func:`evaluate_policy` is the glue behind ``pushrl evaluate`` and the registry's promotion:

* **Item policies** (``policy.kind == "item"``): the logged sent pushes become bandit rounds
  (:func:`~pushrl.policies.item_data.build_rounds`, with the policy's own fitted encoder when it
  carries one); ``action_dist = policy.action_dist(context)`` is repeated at every logged
  position, a linear reward model over ``shared + candidate features + item + position`` is
  cross-fitted (K folds: every round is predicted by a model that never saw it) and every
  applicable estimator of :data:`pushrl.ope.ESTIMATORS` runs on shared bootstrap resamples.
  The gate is :class:`~pushrl.ope.gate.DeploymentGate` (DR by default).
* **Timing policies** (``policy.kind == "timing"``): every pushes row is a decision slot (sent
  or not). The log is replayed through the one feature pipeline bucket by bucket, so the
  policy sees point-in-time features, the live :class:`~pushrl.data.features.FeatureState`,
  the scenario's guardrail mask and the pushes already sent that local day; its probability of
  the logged action is compared with the logging probability (``pscore_send`` when sent,
  ``pscore`` otherwise). Per-decision IS, weighted PDIS, weighted DR with FQE and FQE itself
  (:mod:`pushrl.ope.sequential`, :mod:`pushrl.ope.fqe`) run over trajectories; one bootstrap
  resamples *users* (with all their trajectories) for every estimate and the paired gate
  comparison; the gate applies the bandit gate's rules to the trajectory weights.

Horizon and segmentation. Trajectory weights are products of per-slot ratios, so over 672
hourly slots they explode: on ``simulator_data/synth`` the ESS of the final weights over the
full 28 days is 4 of 2,000 users for ``random-volume`` and 0 for the deterministic
``fixed-hour``/``most-active-hour`` (no user's log agrees with them for 28 days), against
9,170 and 640-760 of 55,490 user-days per day. ``segment="day"`` (the default) cuts each
user's log into user-days, episodes of at most 25 slots, the only segmentation that gives
usable ESS there. Its bias: each day
starts from the *logging* policy's state (fatigue features, who is still subscribed), so
carry-over effects of the evaluated policy across days (fatigue from its own sends, users it
makes unsubscribe losing their later days) are not counted; the within-day unsubscribe penalty
is. ``segment="none"`` keeps whole per-user trajectories and reports where the ESS collapses.
Whichever is chosen, the diagnostics of both horizons are reported.

In-sample evidence. A candidate trained on the evaluated logs (its card's data fingerprint
equals the dataset's) or a baseline fitted on them (``most-popular`` by name) is estimated
in-sample: on ``simulator_data/obd/random``, ``policies/vw-obd`` (trained there) estimates to
a CTR of ~0.13 against a logged 0.004, and to ~0.005 on the ``bts`` logs it never saw. The
gate therefore adds the rule :data:`HELD_OUT_RULE` for such a candidate (waived with
``allow_in_sample=True``); an in-sample baseline only gets a note. Overlapping but different
logs are not detected.

Rounds and slots passed to policies carry ``ctx.extra["user_index"]`` (index into
``ds.users``) and ``ctx.extra["row"]`` (index into ``ds.pushes``), for oracle-type policies.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from pushrl.data.features import F, FeatureSpec, encode, iter_replay
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.errors import ArtifactError, DataError, ScenarioError
from pushrl.ope import ESTIMATORS, make_estimator
from pushrl.ope._bootstrap import bootstrap_means, percentile_interval
from pushrl.ope._rounds import RoundTerms
from pushrl.ope._validate import validate_bandit_inputs
from pushrl.ope.crossfit import CrossFitDR
from pushrl.ope.diagnostics import WeightDiagnostics, diagnostics_from_inputs, kish_ess
from pushrl.ope.estimators import interval_from_terms
from pushrl.ope.fqe import fit_fqe
from pushrl.ope.gate import DeploymentGate, GateResult
from pushrl.ope.intervals import IntervalEstimate, PairedDifference, estimate_intervals
from pushrl.ope.report import OPEReport, write_report
from pushrl.ope.sequential import (
    SEQUENTIAL_ESTIMATORS,
    SequentialDiagnostics,
    SequentialTerms,
    sequential_diagnostics,
)
from pushrl.policies.base import SEND, ItemContext, Policy, TimingContext
from pushrl.policies.item_data import (
    BanditRounds,
    ContextEncoder,
    RewardSpec,
    build_rounds,
    candidates_all,
    default_reward,
    take_context,
)

ITEM_ESTIMATORS: tuple[str, ...] = tuple(ESTIMATORS)
TIMING_ESTIMATORS: tuple[str, ...] = (*SEQUENTIAL_ESTIMATORS, "fqe")
SEGMENTS: tuple[str, ...] = ("day", "none")
#: Hyperparameters used by ``evaluate`` where the estimator's own default degenerates
#: (``dr-os`` with ``lambda_=0`` is DM; ``switch-dr`` with ``tau=1`` drops nearly every
#: correction of a deterministic policy). Weights up to ~10 keep their DR correction.
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, float]] = {
    "switch-dr": {"tau": 10.0}, "dr-os": {"lambda_": 100.0},
}
HELD_OUT_RULE = "held_out_data"
"""Gate rule added here (beyond :data:`pushrl.ope.gate.RULES`): the candidate must not have
been trained on the evaluated logs, where every estimate is optimistic."""
_GATE_PREFERENCE = {"item": ("dr", "sndr", "switch-dr", "dr-os", "snipw", "ipw", "dm"),
                    "timing": ("wdr", "wpdis", "pdis", "fqe")}
Progress = Callable[[str, int, int], None]
PolicyLike = Policy | str | Path


# --------------------------------------------------------------------- scenario settings
@dataclass(frozen=True)
class TimingSettings:
    """Guardrails and per-slot reward weights of a scenario (what a timing policy optimises).

    Attributes:
        quiet_start: First quiet local hour (no sends), e.g. 22.
        quiet_end: First non-quiet local hour, e.g. 8; equal to ``quiet_start`` = none.
        max_sends_per_day: Sends per local calendar day (0 = no cap).
        max_sends_per_week: Sends in the 168 hours before the slot (0 = no cap).
        open: Reward per opened push.
        click: Reward per click.
        revenue: Reward per unit of revenue.
        send_cost: Cost per sent push.
        unsubscribe_penalty: Cost per unsubscribe.
        source: Where the values came from.
    """

    quiet_start: int = 22
    quiet_end: int = 8
    max_sends_per_day: int = 2
    max_sends_per_week: int = 0
    open: float = 1.0
    click: float = 2.0
    revenue: float = 0.02
    send_cost: float = 0.05
    unsubscribe_penalty: float = 10.0
    source: str = "built-in defaults"

    def allowed(self, hour: np.ndarray, sends_today: np.ndarray,
                sends_7d: np.ndarray) -> np.ndarray:
        """Guardrail mask: True where a send is allowed, shape of ``hour``."""
        h = np.asarray(hour, np.int64)
        s, e = self.quiet_start, self.quiet_end
        quiet = (np.zeros(h.shape, bool) if s == e
                 else ((h >= s) & (h < e)) if s < e else ((h >= s) | (h < e)))
        ok = ~quiet
        if self.max_sends_per_day:
            ok &= np.asarray(sends_today) < self.max_sends_per_day
        if self.max_sends_per_week:
            ok &= np.asarray(sends_7d) < self.max_sends_per_week
        return ok

    def slot_reward(self, ds: Dataset) -> np.ndarray:
        """Reward of every pushes row, shape ``(n_decisions,)`` (unknown outcomes count 0)."""
        p = ds.pushes

        def col(name: str) -> np.ndarray:
            if name not in p.columns:
                return np.zeros(len(p))
            return np.nan_to_num(p[name].astype("Float64").to_numpy(np.float64, na_value=0.0))

        return (self.open * col("opened") + self.click * col("clicked")
                + self.revenue * col("revenue") - self.send_cost * col("sent")
                - self.unsubscribe_penalty * col("unsubscribed"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


_SETTING_ALIASES = {
    "quiet_start": ("quiet_start",), "quiet_end": ("quiet_end",),
    "max_sends_per_day": ("max_sends_per_day", "max_per_day"),
    "max_sends_per_week": ("max_sends_per_week", "max_per_week"),
    "open": ("open", "opened", "w_open"), "click": ("click", "clicked", "w_click"),
    "revenue": ("revenue", "w_revenue"), "send_cost": ("send_cost", "cost_per_send"),
    "unsubscribe_penalty": ("unsubscribe_penalty", "unsubscribe", "unsubscribed"),
}


def _lookup(holders: Sequence[Any], names: Sequence[str]) -> Any:
    for h in holders:
        for n in names:
            v = h.get(n) if isinstance(h, Mapping) else getattr(h, n, None)
            if v is not None:
                return v
    return None


def _settings_from(holders: Sequence[Any], source: str) -> TimingSettings:
    kw: dict[str, Any] = {}
    for key, names in _SETTING_ALIASES.items():
        v = _lookup(holders, names)
        if v is not None:
            kw[key] = type(getattr(TimingSettings, key))(v)
    return TimingSettings(**kw, source=source)


def load_timing_settings(scenario: str = "default") -> TimingSettings:
    """Guardrails and reward weights of ``scenario``.

    Read with the scenario loader (:func:`pushrl.envs.scenario.load_scenario`: ``envs/<name>.toml``
    or a path); without it, for ``"default"`` only, the built-in defaults: quiet hours 22-8
    local, 2 sends per local day, reward ``opens + 2 clicks + 0.02 revenue - 0.05 per send -
    10 per unsubscribe`` (the values of :class:`pushrl.sim.engine.RewardWeights`).

    Raises:
        ScenarioError: For an unknown scenario.
    """
    try:
        mod = importlib.import_module("pushrl.envs.scenario")
    except ModuleNotFoundError as exc:
        if exc.name not in ("pushrl.envs.scenario", "pushrl.envs"):
            raise
        mod = None
    loader = None if mod is None else getattr(mod, "load_scenario", None)
    if loader is not None:
        sc = loader(scenario)
        holders = [getattr(sc, a) for a in ("guardrails", "reward")
                   if getattr(sc, a, None) is not None] or [sc]
        return _settings_from(holders, f"scenario {scenario!r} (pushrl.envs.scenario)")
    if scenario != "default":
        raise ScenarioError(f"unknown --scenario {scenario!r}: the scenario loader "
                            "(pushrl.envs.scenario) is not installed; use 'default'")
    return TimingSettings(source="built-in defaults (no scenario loader): quiet hours 22-8 "
                                 "local, 2 sends per local day")


# --------------------------------------------------------------------- policies
@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy with where it came from.

    Attributes:
        policy: The loaded policy.
        label: What the user passed (artifact path or baseline name).
        source: ``"artifact"``, ``"baseline"`` or ``"object"``.
        card: The artifact's model card, if any.
        artifact: The resolved artifact directory, if any.
        fitted_on_eval_data: The baseline was fitted on the evaluated logs (in-sample).
    """

    policy: Policy
    label: str
    source: str
    card: Mapping[str, Any] | None = None
    artifact: Path | None = None
    fitted_on_eval_data: bool = False

    def trained_on(self, fingerprint: str) -> bool:
        """True when the policy was trained or fitted on the logs with this fingerprint."""
        data = (self.card or {}).get("data")
        return self.fitted_on_eval_data or (
            isinstance(data, Mapping) and data.get("fingerprint") == fingerprint)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {"label": self.label, "source": self.source, "kind": self.policy.kind,
                "name": getattr(self.policy, "name", "policy"),
                "version": getattr(self.policy, "version", "0"),
                "artifact": None if self.artifact is None else str(self.artifact),
                "fitted_on_eval_data": self.fitted_on_eval_data}


def _baseline_class(name: str) -> Any:
    """The baseline's policy class when it has a ``fit(ds, ...)`` classmethod."""
    for mod in ("pushrl.policies.item_baselines", "pushrl.policies.timing_baselines"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError:
            continue
        for obj in vars(m).values():
            if (isinstance(obj, type) and issubclass(obj, Policy)
                    and getattr(obj, "name", None) == name and callable(getattr(obj, "fit", None))):
                return obj
    return None


def _make_baseline(name: str, ds: Dataset, reward: RewardSpec | None) -> tuple[Policy, bool]:
    """A baseline by name; one with a ``fit(ds, ...)`` classmethod is fitted on ``ds``."""
    from pushrl.policies.baselines import definition, make_baseline, registry

    known = registry()
    variants = list(dict.fromkeys((name, name.replace("_", "-"), name.replace("-", "_"))))
    names = [n for n in variants if n in known]
    if not names:
        raise ArtifactError(f"--policy/--baseline {name!r} is neither a policy artifact "
                            f"(policies/NAME[/vN]) nor a baseline; baselines: "
                            f"{', '.join(sorted(known))}")
    for n in variants:
        cls = _baseline_class(n)
        if cls is None:
            continue
        params = definition(n).get("params") or definition(names[0]).get("params") or {}
        sig = inspect.signature(cls.fit)
        kw = {k: v for k, v in params.items()
              if k in sig.parameters and k not in ("data", "reward")}
        if "reward" in sig.parameters:
            kw["reward"] = reward
        return cls.fit(ds, **kw), True
    try:
        return make_baseline(names[0]), False
    except ModuleNotFoundError as exc:
        raise ArtifactError(f"baseline {name!r} is not available yet ({exc})") from None


def resolve_policy(spec: PolicyLike | ResolvedPolicy, ds: Dataset, *,
                   reward: RewardSpec | None = None) -> ResolvedPolicy:
    """Load a policy: an object, a registry artifact path or a baseline name.

    Baselines with a ``fit(ds, ...)`` classmethod (e.g. ``most-popular``) are fitted on ``ds``,
    the evaluated logs, with ``reward``; that is in-sample and flagged as such.

    Raises:
        ArtifactError: Unknown name, missing artifact or checksum mismatch.
    """
    if isinstance(spec, ResolvedPolicy):
        return spec
    if isinstance(spec, Policy):
        return ResolvedPolicy(spec, getattr(spec, "name", "policy"), "object")
    if not isinstance(spec, str | Path):
        raise TypeError(f"a policy must be a Policy, an artifact path or a baseline name, "
                        f"got {type(spec).__name__}")
    text = str(spec)
    path = Path(text)
    if path.exists() or "/" in text or os.sep in text:
        from pushrl.policies.registry import load_policy, read_card, resolve

        art = resolve(path)
        return ResolvedPolicy(load_policy(art), text, "artifact", read_card(art), art)
    policy, fitted = _make_baseline(text, ds, reward)
    return ResolvedPolicy(policy, text, "baseline", fitted_on_eval_data=fitted)


# --------------------------------------------------------------------- result
@dataclass
class EvaluationResult:
    """Everything one evaluation produced.

    Attributes:
        kind: ``"item"`` or ``"timing"``.
        policy: Summary of the candidate (label, source, name, version).
        baseline: Summary of the baseline; ``None`` = the logging policy.
        data: Dataset path, fingerprint and the number of rounds (item) or trajectories.
        reward: Reward definition (item: the :class:`RewardSpec`; timing: the weights).
        estimates: The candidate's estimates with ``1 - alpha`` intervals, by estimator.
        baseline_estimates: The baseline's (``"on-policy"`` for the logging policy).
        diagnostics: Importance-weight diagnostics of the candidate.
        baseline_diagnostics: Those of an off-policy baseline.
        gate: The deployment gate's decision.
        gate_estimator: Estimator of the gate's paired improvement.
        skipped: Estimators not run, with the reason.
        sequential: Timing only: weight-explosion diagnostics of the candidate by horizon
            (``"segment"``: the evaluated trajectories, ``"full_horizon"``: whole per-user
            trajectories).
        segment: Timing only: ``"day"`` or ``"none"``.
        settings: Scenario settings, hyperparameters and other run parameters.
        notes: Caveats a reader must see (also in the report).
        report: Paths of the written report files by kind.
        seconds: Wall time.
        weights: Candidate's importance weights (per round or per trajectory), not in
            :meth:`to_dict`.
    """

    kind: str
    policy: dict[str, Any]
    baseline: dict[str, Any] | None
    data: dict[str, Any]
    reward: str
    estimates: dict[str, IntervalEstimate]
    baseline_estimates: dict[str, IntervalEstimate]
    diagnostics: WeightDiagnostics
    baseline_diagnostics: WeightDiagnostics | None
    gate: GateResult
    gate_estimator: str
    skipped: dict[str, str] = field(default_factory=dict)
    sequential: dict[str, SequentialDiagnostics] = field(default_factory=dict)
    segment: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """The gate's verdict."""
        return self.gate.passed

    @property
    def exit_code(self) -> int:
        """``0`` when the candidate passes the gate, ``1`` when it is blocked."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what ``pushrl evaluate --json`` prints)."""
        return {
            "passed": self.passed, "exit_code": self.exit_code, "kind": self.kind,
            "policy": self.policy, "baseline": self.baseline or {"label": "logging",
                                                                 "source": "logging"},
            "data": self.data, "reward": self.reward,
            "gate": {**self.gate.to_dict(), "estimator": self.gate_estimator},
            "estimates": {k: v.to_dict() for k, v in self.estimates.items()},
            "baseline_estimates": {k: v.to_dict() for k, v in self.baseline_estimates.items()},
            "diagnostics": self.diagnostics.to_dict(),
            "baseline_diagnostics": (None if self.baseline_diagnostics is None
                                     else self.baseline_diagnostics.to_dict()),
            "sequential_diagnostics": {k: v.to_dict() for k, v in self.sequential.items()},
            "segment": self.segment, "skipped_estimators": self.skipped,
            "settings": self.settings, "notes": self.notes, "report": self.report,
            "seconds": round(self.seconds, 3),
        }


def record_evaluation(artifact: str | Path, result: EvaluationResult) -> Path:
    """Write the gate evidence into an artifact's model card (``card["ope"]``).

    The registry's promotion reads ``card["ope"]["gate"]``. Only ``card.json`` changes (it is
    not among the checksummed files); it is replaced atomically.

    Returns:
        The card path.
    """
    card_path = Path(artifact) / "card.json"
    card = json.loads(card_path.read_text())
    card["ope"] = {
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": result.data, "baseline": result.baseline or {"label": "logging"},
        "gate": {**result.gate.to_dict(), "estimator": result.gate_estimator},
        "estimates": {k: v.to_dict() for k, v in result.estimates.items()},
        "report": result.report,
    }
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
    os.replace(tmp, card_path)
    return card_path


# --------------------------------------------------------------------- helpers
def _select(requested: Sequence[str] | None, kind: str, applicable: Mapping[str, str | None]
            ) -> tuple[list[str], dict[str, str]]:
    """Estimators to run and skipped ones with reasons; ``applicable`` maps name -> reason."""
    known = (*ITEM_ESTIMATORS, *TIMING_ESTIMATORS)
    names = list(applicable) if requested is None else list(dict.fromkeys(requested))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--estimators: unknown {', '.join(unknown)}; item policies take "
                         f"{', '.join(ITEM_ESTIMATORS)}, timing policies "
                         f"{', '.join(TIMING_ESTIMATORS)}")
    run, skipped = [], {}
    for n in names:
        if n not in applicable:
            skipped[n] = f"not an estimator for {kind} policies"
        elif applicable[n] is not None:
            skipped[n] = str(applicable[n])
        else:
            run.append(n)
    if not run:
        raise DataError(f"--estimators: none of {', '.join(names)} applies here ("
                        + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    return run, skipped


def _gate_estimator(kind: str, run: Sequence[str], requested: str | None) -> str:
    if requested is not None:
        if requested not in _GATE_PREFERENCE[kind]:
            raise ValueError(f"gate estimator {requested!r} is not usable for {kind} policies; "
                             f"choose one of {', '.join(_GATE_PREFERENCE[kind])}")
        return requested
    for n in _GATE_PREFERENCE[kind]:
        if n in run:
            return n
    return _GATE_PREFERENCE[kind][0]


def _hyper(name: str, overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    hp = dict(DEFAULT_HYPERPARAMETERS.get(name, {}))
    hp.update((overrides or {}).get(name, {}))
    return hp


def _say(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


# --------------------------------------------------------------------- item policies
def _with_extra(rounds: BanditRounds, ds: Dataset) -> BanditRounds:
    from pushrl.data.features import user_index

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
    reward_spec: RewardSpec
    len_list: int
    position: np.ndarray | None
    candidate: np.ndarray
    baseline: np.ndarray | None
    q_hat: np.ndarray


def _rounds_for(policy: Policy, ds: Dataset, rs: RewardSpec,
                cache: dict[int, BanditRounds]) -> BanditRounds:
    enc = getattr(policy, "encoder", None)
    enc = enc if isinstance(enc, ContextEncoder) else None
    key = id(enc)
    if key not in cache:
        cache[key] = _with_extra(build_rounds(ds, encoder=enc, reward=rs), ds)
    return cache[key]


def _item_inputs(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                 rs: RewardSpec, seed: int, progress: Progress | None) -> _ItemInputs:
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


def _crossfit_dr(inp: _ItemInputs, dist: np.ndarray, alpha: float, n_bootstrap: int,
                 seed: int) -> IntervalEstimate:
    r = inp.rounds
    binary = bool(np.isin(r.reward, (0.0, 1.0)).all())
    model = LogisticRegression(max_iter=1000) if binary else Ridge(alpha=1.0)
    est = CrossFitDR(base_model=model, random_state=seed)
    # OBP's RegressionModel features: [context, action_context[action]] with the catalog's
    # item features (one-hot actions would build n_rounds * n_actions^2 prediction cells)
    terms = est.round_terms(r.reward, r.action, r.pscore, dist, inp.position,
                            context=np.asarray(r.context.shared, np.float64),
                            action_context=np.asarray(r.catalog.features, np.float64))
    d = interval_from_terms(terms, alpha=alpha, n_bootstrap_samples=n_bootstrap,
                            random_state=seed)
    lo, hi = (v for k, v in d.items() if k != "mean")
    return IntervalEstimate("dr-cf", terms.value(), lo, hi, alpha, "bootstrap", d["mean"])


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
    d = interval_from_terms(terms, alpha=alpha, n_bootstrap_samples=n_bootstrap,
                            random_state=seed)
    lo, hi = (v for k, v in d.items() if k != "mean")
    return IntervalEstimate(name, terms.value(), lo, hi, alpha, "bootstrap", d["mean"])


def _item_applicable(inp: _ItemInputs) -> dict[str, str | None]:
    every = candidates_all(np.asarray(inp.rounds.context.candidates), len(inp.rounds.catalog))
    return {n: (None if n != "dr-cf" or every else
                "needs the same candidate set (the whole catalog) in every round")
            for n in ITEM_ESTIMATORS}


def _evaluate_item(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None, *,
                   estimators: Sequence[str] | None, reward: RewardSpec | str | None,
                   n_bootstrap: int, seed: int, alpha: float, gate: DeploymentGate | None,
                   gate_estimator: str | None, hyper: Mapping[str, Mapping[str, Any]] | None,
                   progress: Progress | None) -> EvaluationResult:
    _select(estimators, "item", dict.fromkeys(ITEM_ESTIMATORS))  # fail fast on bad names
    _gate_estimator("item", (), gate_estimator)
    rs, notes = _item_reward_spec(ds, cand, base, reward)
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
    g = replace(gate or DeploymentGate(alpha=alpha, n_bootstrap_samples=n_bootstrap),
                estimator=make_estimator(g_name, **_hyper(g_name, hyper)))
    decision = g.evaluate(r.reward, r.action, r.pscore, inp.candidate, inp.baseline,
                          inp.position, inp.q_hat, random_state=seed)
    if r.dropped.get("reward_missing"):
        notes.append(f"{r.dropped['reward_missing']} sent rows without the reward's outcomes "
                     "were left out")
    return EvaluationResult(
        kind="item", policy=cand.describe(), baseline=None if base is None else base.describe(),
        data={"path": str(ds.path), "fingerprint": ds.fingerprint(), "n_rounds": r.n_rounds,
              "n_actions": r.n_actions, "len_list": inp.len_list},
        reward=str(rs), estimates=est, baseline_estimates=base_est, diagnostics=diag,
        baseline_diagnostics=decision.baseline_diagnostics, gate=decision,
        gate_estimator=g_name, skipped=skipped, notes=notes, weights=weights,
        settings={"hyperparameters": {n: _hyper(n, hyper) for n in names if _hyper(n, hyper)},
                  "reward_model": "cross-fitted linear (3 folds): logistic for 0/1 rewards, "
                                  "ridge otherwise",
                  "gate": {"min_ess": g.min_ess, "min_ess_fraction": g.min_ess_fraction,
                           "max_support_deficiency": g.max_support_deficiency}})


def _item_reward_spec(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                      reward: RewardSpec | str | None) -> tuple[RewardSpec, list[str]]:
    notes: list[str] = []
    if isinstance(reward, RewardSpec):
        return reward, notes
    if reward:
        return RewardSpec.parse(reward), notes
    for who in (cand, base):
        if who is not None and who.card and who.card.get("reward"):
            rs = RewardSpec.parse(str(who.card["reward"]))
            other = base if who is cand else cand
            if other is not None and other.card and other.card.get("reward") not in (
                    None, str(rs)):
                notes.append(f"the policies were trained on different rewards; both are "
                             f"evaluated on {rs}")
            return rs, notes
    return default_reward(ds), notes


# --------------------------------------------------------------------- timing policies
@dataclass
class _Slots:
    """Per pushes row: what the timing estimators need."""

    user: np.ndarray
    day: np.ndarray
    sec: np.ndarray
    sent: np.ndarray
    reward: np.ndarray
    pb: np.ndarray          # logging probability of the logged action
    pb_send: np.ndarray     # logging probability of sending
    state: np.ndarray       # FQE state features
    pe_send: list[np.ndarray]  # per policy: probability of sending


def _logging_probs(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool)
    if "pscore" not in p.columns:
        raise DataError("timing OPE needs `pscore` (logging probability of each slot's "
                        "action); log it")
    ps = p["pscore"].to_numpy(np.float64, na_value=np.nan)
    send = (p["pscore_send"].to_numpy(np.float64, na_value=np.nan) if "pscore_send" in p.columns
            else np.full(len(p), np.nan))
    send = np.where(np.isfinite(send), send, np.where(~sent, 1.0 - ps, np.nan))
    bad = sent & ~np.isfinite(send)
    if bad.any():
        raise DataError(f"timing OPE needs `pscore_send` (the logging probability of sending) "
                        f"on sent rows; missing in {int(bad.sum())} rows (first at row "
                        f"{int(np.argmax(bad))})")
    pb = np.where(sent, send, np.where(np.isfinite(ps), ps, 1.0 - send))
    bad = ~((pb > 0) & (pb <= 1 + 1e-9))
    if bad.any():
        raise DataError(f"slot logging probability must be in (0, 1], got {pb[bad][0]:g} in "
                        f"{int(bad.sum())} rows (first at row {int(np.argmax(bad))})")
    return sent, np.minimum(pb, 1.0), np.clip(send, 0.0, 1.0)


def _timing_slots(ds: Dataset, policies: Sequence[Policy], settings: TimingSettings,
                  spec: FeatureSpec, progress: Progress | None) -> _Slots:
    from pushrl.data.features import user_index

    p = ds.pushes
    n = len(p)
    sent, pb, pb_send = _logging_probs(ds)
    users = user_index(ds, p["user_id"])
    n_buckets = int(np.unique(to_unix_seconds(p["ts"]) // 3600).size)
    day = np.zeros(n, np.int64)
    state = np.zeros((n, 12), np.float32)
    pe = [np.zeros(n) for _ in policies]
    cur_day = np.full(len(ds.users), np.iinfo(np.int64).min)
    today = np.zeros(len(ds.users), np.int64)
    done = 0
    for rows, rep in iter_replay(ds, spec, with_affinity=False, chunk_rows=1):
        if not rows.size:
            continue
        u, b = rep.user_index[rows], rep.bucket[rows]
        _, _, d = rep.state.local_time(u, b)
        new = d != cur_day[u]
        today[u[new]] = 0
        cur_day[u] = d
        st = today[u].copy()
        raw = rep.features[rows]
        allowed = settings.allowed(raw[:, F["local_hour"]], st, raw[:, F["sends_7d"]])
        ctx = TimingContext(raw, allowed, u, b, rep.state, st,
                            extra={"user_index": u, "row": rows})
        for j, pol in enumerate(policies):
            dist = pol.action_dist(ctx)
            pe[j][rows] = dist[:, SEND]
        day[rows] = d
        state[rows, :10] = encode(raw)
        state[rows, 10] = allowed
        state[rows, 11] = st
        np.add.at(today, u[sent[rows]], 1)
        done += 1
        if done % 24 == 0 or done == n_buckets:
            _say(progress, "replaying slots (policy probabilities)", done, n_buckets)
    return _Slots(users, day, to_unix_seconds(p["ts"]), sent, settings.slot_reward(ds), pb,
                  pb_send, state, pe)


@dataclass
class _Trajectories:
    reward: np.ndarray      # (n_traj, horizon)
    pb: np.ndarray
    mask: np.ndarray
    action: np.ndarray
    state: np.ndarray       # (n_traj, horizon, d)
    pe_send: list[np.ndarray]
    pb_send: np.ndarray
    cluster: np.ndarray     # (n_traj,) user of each trajectory

    @property
    def n_traj(self) -> int:
        return int(self.reward.shape[0])

    def pe(self, j: int) -> np.ndarray:
        """Evaluation probability of the logged action of policy ``j``."""
        return np.where(self.action == SEND, self.pe_send[j], 1.0 - self.pe_send[j])

    def dist(self, j: int) -> np.ndarray:
        return np.stack([1.0 - self.pe_send[j], self.pe_send[j]], axis=-1)


def _trajectories(s: _Slots, segment: str, with_state: bool = True) -> _Trajectories:
    key2 = s.day if segment == "day" else np.zeros_like(s.day)
    order = np.lexsort((s.sec, key2, s.user))
    u, k = s.user[order], key2[order]
    start = np.r_[True, (u[1:] != u[:-1]) | (k[1:] != k[:-1])]
    traj = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    step = np.arange(order.size) - first[traj]
    n_traj, horizon = int(traj[-1]) + 1, int(step.max()) + 1

    def grid(v: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full((n_traj, horizon, *v.shape[1:]), fill, dtype=v.dtype)
        out[traj, step] = v[order]
        return out

    mask = np.zeros((n_traj, horizon), bool)
    mask[traj, step] = True
    d = s.state.shape[1]
    return _Trajectories(
        grid(s.reward), grid(s.pb, 1.0), mask, grid(s.sent.astype(np.int64)),
        grid(s.state) if with_state else np.zeros((n_traj, horizon, d), np.float32),
        [grid(pe) for pe in s.pe_send], grid(s.pb_send, 0.5), u[first])


def _collapse(t: SequentialTerms) -> SequentialTerms:
    """Terms without denominators reduce to one column (cheaper bootstrap)."""
    if t.denominators is not None:
        return t
    return SequentialTerms((t.numerators @ t.coefficients)[:, None], None, np.ones(1))


def _seq_replicates(terms: Mapping[str, SequentialTerms], cluster: np.ndarray,
                    n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Cluster-bootstrap replicates of several estimates on the same resamples.

    Trajectories of one user (its user-days) are not independent, so whole users are
    resampled: every column is summed per user, and a mean over trajectories becomes
    ``mean_u(sum) / mean_u(count)``. With one trajectory per user this is the plain
    trajectory bootstrap. Summing first also makes it cheap (users, not user-days, are rows).
    """
    order = np.argsort(cluster, kind="stable")
    starts = np.flatnonzero(np.r_[True, cluster[order][1:] != cluster[order][:-1]])
    counts = np.diff(np.r_[starts, order.size]).astype(np.float64)
    blocks, layout, col = [counts[:, None]], {}, 1
    for name, t in terms.items():
        t = _collapse(t)
        m = t.numerators.shape[1]
        parts = [t.numerators] + ([] if t.denominators is None else [t.denominators])
        for part in parts:
            blocks.append(np.add.reduceat(part[order], starts, axis=0))
        layout[name] = (t, col, m)
        col += m * len(parts)
    means = bootstrap_means(np.hstack(blocks), n_bootstrap, seed)
    out = {}
    for name, (t, c0, m) in layout.items():
        num = means[:, c0:c0 + m]
        den = means[:, :1] if t.denominators is None else means[:, c0 + m:c0 + 2 * m]
        ratio = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
        out[name] = ratio @ t.coefficients
    return out


def _seq_terms(tr: _Trajectories, j: int, names: Sequence[str]) -> dict[str, SequentialTerms]:
    pe = tr.pe(j)
    out: dict[str, SequentialTerms] = {}
    for n in names:
        if n in ("pdis", "wpdis"):
            out[n] = SEQUENTIAL_ESTIMATORS[n]().terms(tr.reward, tr.pb, pe, tr.mask)
    if "wdr" in names or "fqe" in names:
        fq = fit_fqe(tr.state, tr.action, tr.reward, tr.dist(j), tr.mask, gamma=1.0)
        if "wdr" in names:
            out["wdr"] = SEQUENTIAL_ESTIMATORS["wdr"]().terms(
                tr.reward, tr.pb, pe, tr.mask, q_hat=fq.q_hat, v_hat=fq.v_hat)
        if "fqe" in names:
            out["fqe"] = SequentialTerms(fq.v_hat[:, :1], None, np.ones(1))
    return {n: out[n] for n in names}


def _interval(name: str, point: float, reps: np.ndarray, alpha: float) -> IntervalEstimate:
    d = percentile_interval(reps, alpha)
    lo, hi = (v for k, v in d.items() if k != "mean")
    return IntervalEstimate(name, point, lo, hi, alpha, "bootstrap", d["mean"])


def _timing_weights(tr: _Trajectories, j: int) -> tuple[WeightDiagnostics, np.ndarray]:
    """Diagnostics of the final cumulative weights, one per trajectory."""
    with np.errstate(divide="ignore"):
        log_r = np.where(tr.mask, np.log(tr.pe(j)) - np.log(tr.pb), 0.0)
    w = np.exp(np.sum(log_r, axis=1))
    unsupported = np.where(tr.pb_send <= 0, tr.pe_send[j], 0.0) + np.where(
        tr.pb_send >= 1, 1.0 - tr.pe_send[j], 0.0)
    mass = float(unsupported[tr.mask].mean())
    q50, q90, q99 = np.quantile(w, [0.5, 0.9, 0.99])
    ess = kish_ess(w)
    return WeightDiagnostics(tr.n_traj, ess, ess / tr.n_traj, float(w.mean()), float(w.max()),
                             float(q50), float(q90), float(q99), mass,
                             int(mass > 0)), w


def _seq_diag(tr: _Trajectories, j: int, floor: float) -> SequentialDiagnostics:
    return sequential_diagnostics(tr.reward, tr.pb, tr.pe(j), tr.mask, min_ess=floor,
                                  min_ess_fraction=0.0)


def _timing_gate(g: DeploymentGate, g_name: str, reps: Mapping[str, np.ndarray],
                 values: Mapping[str, float], base_key: str, diag: WeightDiagnostics,
                 base_diag: WeightDiagnostics | None) -> GateResult:
    c_key = f"candidate/{g_name}"
    diff = values[c_key] - values[base_key]
    iv = _interval(g_name, diff, reps[c_key] - reps[base_key], g.alpha)
    comparison = PairedDifference(g_name, values[c_key], values[base_key], diff, iv.lower,
                                  iv.upper, g.alpha, "bootstrap")
    floor = g.ess_floor(diag.n_rounds)
    failed: list[tuple[str, str]] = []
    if not all(np.isfinite([diff, iv.lower, iv.upper])):
        failed.append(("finite_estimate", f"non-finite improvement estimate "
                                          f"{(diff, iv.lower, iv.upper)}"))
    elif iv.lower <= 0:
        failed.append(("improvement_lower_bound",
                       f"{100 * (1 - g.alpha):g}% lower bound of the improvement is "
                       f"{iv.lower:.6g} <= 0 (estimate {diff:.6g})"))
    for prefix, d in (("", diag), ("baseline_", base_diag)):
        if d is None:
            continue
        who = "baseline" if prefix else "candidate"
        if d.ess < floor:
            failed.append((f"{prefix}ess_floor", f"{who} ESS {d.ess:.1f} < floor {floor:.1f} "
                                                 f"(n_traj={d.n_rounds})"))
        if d.support_deficiency > g.max_support_deficiency:
            failed.append((f"{prefix}support_deficiency",
                           f"{who} puts {d.support_deficiency:.2%} of its mass on actions the "
                           f"logger never takes (max {g.max_support_deficiency:.2%})"))
    return GateResult(not failed, tuple(n for n, _ in failed), comparison, diag, base_diag,
                      floor, tuple(m for _, m in failed))


def _timing_spec(ds: Dataset, cand: ResolvedPolicy) -> FeatureSpec:
    d = (cand.card or {}).get("feature_spec")
    return FeatureSpec.from_dict(d) if isinstance(d, dict) else FeatureSpec.fit(ds)


def _horizon_notes(seq: Mapping[str, SequentialDiagnostics], segment: str) -> list[str]:
    notes = []
    full, seg = seq.get("full_horizon"), seq["segment"]
    if full is not None and not full.reliable:
        notes.append(f"full horizon ({full.horizon} slots per user): {full.reliability}; "
                     f"{full.frac_exploded:.1%} of trajectories have a weight > 1e3")
    if segment == "day":
        notes.append("per-day segmentation: each user-day is an episode that starts from the "
                     "logging policy's state, so carry-over effects of the evaluated policy "
                     "across days (fatigue from its own sends, unsubscribes removing later "
                     "days) are ignored; values are per user-day")
    if not seg.reliable:
        notes.append(f"evaluated trajectories: {seg.reliability}")
    return notes


def _evaluate_timing(ds: Dataset, cand: ResolvedPolicy, base: ResolvedPolicy | None, *,
                     estimators: Sequence[str] | None, n_bootstrap: int, seed: int,
                     alpha: float, gate: DeploymentGate | None, gate_estimator: str | None,
                     scenario: str | TimingSettings, segment: str, progress: Progress | None
                     ) -> EvaluationResult:
    settings = scenario if isinstance(scenario, TimingSettings) else load_timing_settings(scenario)
    names, skipped = _select(estimators, "timing", dict.fromkeys(TIMING_ESTIMATORS))
    g_name = _gate_estimator("timing", names, gate_estimator)
    run = list(dict.fromkeys([*names, g_name]))
    pols = [cand.policy] + ([] if base is None else [base.policy])
    slots = _timing_slots(ds, pols, settings, _timing_spec(ds, cand), progress)
    _say(progress, f"building trajectories (segment={segment})", 0, 1)
    tr = _trajectories(slots, segment)
    g = gate or DeploymentGate(alpha=alpha, n_bootstrap_samples=n_bootstrap)
    floor = g.ess_floor(tr.n_traj)
    seq = {"segment": _seq_diag(tr, 0, floor)}
    if segment != "none":
        full = _trajectories(slots, "none", with_state=False)
        seq["full_horizon"] = _seq_diag(full, 0, g.ess_floor(full.n_traj))
    _say(progress, "fitting FQE and estimating with " + ", ".join(run), 0, 1)
    terms = {f"candidate/{n}": t for n, t in _seq_terms(tr, 0, run).items()}
    if base is not None:
        terms.update({f"baseline/{n}": t for n, t in _seq_terms(tr, 1, run).items()})
        base_key = f"baseline/{g_name}"
    else:
        terms["logging/on-policy"] = SequentialTerms(tr.reward, None, np.ones(tr.reward.shape[1]))
        base_key = "logging/on-policy"
    reps = _seq_replicates(terms, tr.cluster, g.n_bootstrap_samples, seed)
    values = {k: t.value() for k, t in terms.items()}
    ivs = {k: _interval(k.split("/", 1)[1], values[k], reps[k], alpha) for k in terms}
    diag, weights = _timing_weights(tr, 0)
    base_diag = None if base is None else _timing_weights(tr, 1)[0]
    _say(progress, f"deployment gate ({g_name})", 0, 1)
    decision = _timing_gate(g, g_name, reps, values, base_key, diag, base_diag)
    est = {n: ivs[f"candidate/{n}"] for n in names}
    base_est = ({n: ivs[f"baseline/{n}"] for n in names} if base is not None
                else {"on-policy": ivs["logging/on-policy"]})
    unit = "user-day" if segment == "day" else f"user over {tr.reward.shape[1]} slots"
    return EvaluationResult(
        kind="timing", policy=cand.describe(), baseline=None if base is None else base.describe(),
        data={"path": str(ds.path), "fingerprint": ds.fingerprint(), "n_traj": tr.n_traj,
              "horizon": int(tr.reward.shape[1]), "n_slots": int(tr.mask.sum()),
              "value_unit": f"expected reward per {unit}"},
        reward=(f"{settings.open:g}*opened+{settings.click:g}*clicked+{settings.revenue:g}"
                f"*revenue-{settings.send_cost:g}*sent-{settings.unsubscribe_penalty:g}"
                "*unsubscribed"),
        estimates=est, baseline_estimates=base_est, diagnostics=diag,
        baseline_diagnostics=base_diag, gate=decision, gate_estimator=g_name, skipped=skipped,
        sequential=seq, segment=segment, notes=_horizon_notes(seq, segment), weights=weights,
        settings={"scenario": settings.to_dict(), "gamma": 1.0,
                  "fqe": "ridge per (step, action) on encoded features, allowed, sends_today",
                  "gate": {"min_ess": g.min_ess, "min_ess_fraction": g.min_ess_fraction,
                           "max_support_deficiency": g.max_support_deficiency}})


# --------------------------------------------------------------------- entry point
def evaluate_policy(
    ds: Dataset,
    policy: PolicyLike | ResolvedPolicy,
    baseline: PolicyLike | ResolvedPolicy | None = None,
    *,
    estimators: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    alpha: float = 0.05,
    reward: RewardSpec | str | None = None,
    scenario: str | TimingSettings = "default",
    segment: str = "day",
    gate: DeploymentGate | None = None,
    gate_estimator: str | None = None,
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    allow_in_sample: bool = False,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Estimate a candidate's value on logged data, diagnose it and apply the deployment gate.

    Args:
        ds: Logged data from :func:`~pushrl.data.validate.load_dataset`.
        policy: The candidate: a :class:`Policy`, a registry artifact path
            (``policies/NAME[/vN]``, verified before loading) or a baseline name.
        baseline: What the candidate must beat (same forms); ``None`` = the logging policy,
            valued on-policy as the mean logged reward.
        estimators: Names to run (default: every applicable one). Item:
            :data:`ITEM_ESTIMATORS`; timing: :data:`TIMING_ESTIMATORS`.
        n_bootstrap: Bootstrap resamples of every interval and of the gate.
        seed: Seed of the bootstrap and of the cross-fitting folds.
        out: Directory for the markdown and HTML report; ``None`` writes no report.
        alpha: Miscoverage of all intervals (0.05: 95%).
        reward: Item reward (default: the candidate's training reward from its card, else
            :func:`~pushrl.policies.item_data.default_reward`). Timing rewards come from the
            scenario.
        scenario: Scenario name of the guardrails and timing reward weights, or the
            :class:`TimingSettings` themselves.
        segment: Timing trajectories: ``"day"`` (user-days) or ``"none"`` (whole users).
        gate: Gate thresholds (its estimator is replaced by ``gate_estimator``).
        gate_estimator: Estimator of the gate (default: ``dr`` for items, ``wdr`` for timing).
        hyperparameters: Estimator hyperparameters by name, over
            :data:`DEFAULT_HYPERPARAMETERS`.
        allow_in_sample: Waive the gate's :data:`HELD_OUT_RULE` (a candidate trained on these
            very logs, by its card's data fingerprint, or a baseline fitted on them).
        progress: Called as ``progress(stage, done, total)``.

    Returns:
        The estimates, diagnostics, gate decision and report paths.

    Raises:
        ArtifactError: A policy cannot be resolved or loaded.
        DataError: The logs cannot support the evaluation (no ``pscore``, kinds differ...).
        ValueError: Unknown estimator or segment names.
    """
    # Many small BLAS calls (reward-model fits, FQE ridges): threads only add contention,
    # measured 3-10x slower with 2 threads on a busy 2-core machine.
    with threadpool_limits(limits=1):
        return _evaluate(ds, policy, baseline, estimators=estimators, n_bootstrap=n_bootstrap,
                         seed=seed, out=out, alpha=alpha, reward=reward, scenario=scenario,
                         segment=segment, gate=gate, gate_estimator=gate_estimator,
                         hyperparameters=hyperparameters, allow_in_sample=allow_in_sample,
                         progress=progress)


def _evaluate(ds: Dataset, policy: PolicyLike | ResolvedPolicy,
              baseline: PolicyLike | ResolvedPolicy | None, *, estimators: Sequence[str] | None,
              n_bootstrap: int, seed: int, out: str | Path | None, alpha: float,
              reward: RewardSpec | str | None, scenario: str | TimingSettings, segment: str,
              gate: DeploymentGate | None, gate_estimator: str | None,
              hyperparameters: Mapping[str, Mapping[str, Any]] | None,
              allow_in_sample: bool, progress: Progress | None) -> EvaluationResult:
    t0 = time.perf_counter()
    if segment not in SEGMENTS:
        raise ValueError(f"--segment must be one of {', '.join(SEGMENTS)}, got {segment!r}")
    _say(progress, "loading policies", 0, 1)
    rs = (reward if isinstance(reward, RewardSpec)
          else RewardSpec.parse(reward) if reward else None)
    cand = resolve_policy(policy, ds, reward=rs)
    base = None if baseline is None else resolve_policy(baseline, ds, reward=rs)
    kind = cand.policy.kind
    if base is not None and base.policy.kind != kind:
        raise DataError(f"the candidate is a {kind} policy but the baseline {base.label!r} is a "
                        f"{base.policy.kind} policy; compare policies of one kind")
    if kind == "item":
        res = _evaluate_item(ds, cand, base, estimators=estimators, reward=rs,
                             n_bootstrap=n_bootstrap, seed=seed, alpha=alpha, gate=gate,
                             gate_estimator=gate_estimator, hyper=hyperparameters,
                             progress=progress)
    elif kind == "timing":
        res = _evaluate_timing(ds, cand, base, estimators=estimators, n_bootstrap=n_bootstrap,
                               seed=seed, alpha=alpha, gate=gate, gate_estimator=gate_estimator,
                               scenario=scenario, segment=segment, progress=progress)
    else:
        raise ArtifactError(f"policy {cand.label!r} has unknown kind {kind!r}")
    _check_held_out(res, cand, base, allow_in_sample)
    res.settings.update(n_bootstrap=n_bootstrap, seed=seed, alpha=alpha,
                        allow_in_sample=allow_in_sample)
    if out is not None:
        _say(progress, "writing the report", 0, 1)
        res.report = {k: str(v) for k, v in write_report(_report(res), out, "ope_report").items()}
    res.seconds = time.perf_counter() - t0
    return res


def _check_held_out(res: EvaluationResult, cand: ResolvedPolicy, base: ResolvedPolicy | None,
                    allow_in_sample: bool) -> None:
    """Note in-sample policies; block a candidate trained on the evaluated logs."""
    fp = res.data["fingerprint"]
    for who, role in ((cand, "candidate"), (base, "baseline")):
        if who is not None and who.trained_on(fp):
            res.notes.append(f"the {role} {who.label} was trained or fitted on these logs "
                             f"(fingerprint {fp}): its estimate is in-sample and optimistic")
    if cand.trained_on(fp) and not allow_in_sample:
        g = res.gate
        msg = (f"the candidate was trained on the evaluated logs (fingerprint {fp}); evaluate "
               "it on logs it has not seen (e.g. a later period), or pass allow_in_sample / "
               "--allow-in-sample to waive this rule")
        res.gate = replace(g, passed=False, failed_rules=(*g.failed_rules, HELD_OUT_RULE),
                           messages=(*g.messages, msg))


_SOURCES = {"artifact": "registry artifact", "baseline": "built-in baseline",
            "object": "Python object"}


def _report(res: EvaluationResult) -> OPEReport:
    base_label = "logging policy" if res.baseline is None else str(res.baseline["label"])
    ests = list(res.estimates.values()) + [
        IntervalEstimate(f"baseline: {e.name}", e.value, e.lower, e.upper, e.alpha, e.method,
                         e.bootstrap_mean) for e in res.baseline_estimates.values()]
    ref = res.gate.comparison.baseline_value
    meta: dict[str, Any] = {
        "candidate": f"{res.policy['label']} ({res.kind} policy, "
                     f"{_SOURCES.get(res.policy['source'], res.policy['source'])})",
        "baseline": base_label, "data": f"{res.data['path']} (fingerprint "
                                        f"{res.data['fingerprint']})",
        "reward": res.reward,
        **{k: v for k, v in res.data.items() if k not in ("path", "fingerprint")},
        "gate estimator": res.gate_estimator,
        "bootstrap": (f"{res.settings.get('n_bootstrap')} resamples, "
                      f"seed {res.settings.get('seed')}"),
    }
    if res.segment is not None:
        meta["segment"] = res.segment
        for k, d in res.sequential.items():
            meta[f"horizon ({k.replace('_', ' ')})"] = (
                f"{d.horizon} slots, final ESS {d.ess_final:.1f} of {d.n_traj}, max log-weight "
                f"{d.max_log_weight:.1f}, {d.frac_exploded:.1%} exploded: {d.reliability}")
    if res.baseline_diagnostics is not None:
        b = res.baseline_diagnostics
        meta["baseline weights"] = (f"ESS {b.ess:.1f} ({b.ess_ratio:.2%}), max {b.weight_max:.4g}, "
                                    f"support deficiency {b.support_deficiency:.2%}")
    for k, v in res.skipped.items():
        meta[f"skipped {k}"] = v
    for i, note in enumerate(res.notes, 1):
        meta[f"note {i}"] = note
    return OPEReport(f"Off-policy evaluation: {res.policy['label']} vs {base_label}",
                     list(ests), res.diagnostics, res.weights, res.gate, ref,
                     f"baseline ({res.gate_estimator})" if res.baseline else "logging (on-policy)",
                     meta)
