"""The timing-policy path of :func:`pushrl.ope.evaluate.evaluate_policy`.

Every pushes row is a decision slot (sent or not). The log is replayed through the one
feature pipeline bucket by bucket (:func:`_timing_slots`), the slots are cut into trajectories
(user-days for ``segment="day"``, whole users for ``"none"``), per-decision IS, weighted PDIS,
weighted DR with FQE and FQE itself run over them, one cluster bootstrap resamples users for
every estimate and the paired gate comparison (:func:`_seq_replicates`), and the gate applies
the bandit gate's rules to the trajectory weights. :class:`TimingSettings` are the scenario's
guardrails and reward weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pushrl.data.features import F, FeatureSpec, encode, iter_replay, user_index
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.errors import DataError
from pushrl.ope._bootstrap import bootstrap_means, percentile_interval
from pushrl.ope.diagnostics import WeightDiagnostics, kish_ess
from pushrl.ope._common import (
    TIMING_ESTIMATORS,
    EvaluationResult,
    Progress,
    ResolvedPolicy,
    _bootstrap_interval,
    _gate_estimator,
    _gate_settings,
    _missing_note,
    _say,
    _select,
)
from pushrl.ope.fqe import fit_fqe
from pushrl.ope.gate import DeploymentGate, GateResult
from pushrl.ope.intervals import IntervalEstimate, PairedDifference
from pushrl.ope.sequential import (
    SEQUENTIAL_ESTIMATORS,
    SequentialDiagnostics,
    SequentialTerms,
    sequential_diagnostics,
)
from pushrl.envs.scenario import load_scenario
from pushrl.policies.base import SEND, Policy, TimingContext
from pushrl.rules import reward
from pushrl.rules.guardrails import DayCount, Guardrails
from pushrl.rules.reward import RewardWeights
from pushrl.units import bucket_of


# --------------------------------------------------------------------- scenario settings
@dataclass(frozen=True)
class TimingSettings:
    """A scenario's guardrails and per-slot reward weights (what a timing policy optimises):
    the very objects the simulator uses, so OPE and simulation agree by construction.

    Attributes:
        guardrails: Quiet hours (local) and caps (:class:`pushrl.rules.guardrails.Guardrails`).
        reward: Reward weights (:class:`pushrl.rules.reward.RewardWeights`).
        source: Where the values came from.
    """

    guardrails: Guardrails = field(default_factory=Guardrails)
    reward: RewardWeights = field(default_factory=RewardWeights)
    source: str = "built-in defaults"

    def allowed(self, hour: np.ndarray, sends_today: np.ndarray,
                sends_7d: np.ndarray) -> np.ndarray:
        """Guardrail mask (:meth:`Guardrails.allowed`): True where a send is allowed."""
        return self.guardrails.allowed(np.asarray(hour, np.int64), sends_today, sends_7d)

    def slot_reward(self, ds: Dataset) -> np.ndarray:
        """Reward of every pushes row (:func:`pushrl.rules.reward.from_logs`), shape
        ``(n_decisions,)`` (unknown outcomes count 0)."""
        return reward.from_logs(self.reward, ds.pushes)

    def describe_reward(self) -> str:
        """The reward as a formula over pushlog columns."""
        return self.reward.describe()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def load_timing_settings(scenario: str = "default") -> TimingSettings:
    """Guardrails and reward weights of ``scenario`` (``envs/<name>.toml`` or a path, read by
    :func:`pushrl.envs.scenario.load_scenario`).

    Raises:
        ScenarioError: For an unknown scenario.
    """
    sc = load_scenario(scenario)
    return TimingSettings(sc.guardrails, sc.reward, source=f"scenario {scenario!r}")


# --------------------------------------------------------------------- slots and trajectories
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
    p = ds.pushes
    n = len(p)
    sent, pb, pb_send = _logging_probs(ds)
    users = user_index(ds, p["user_id"])
    n_buckets = int(np.unique(bucket_of(to_unix_seconds(p["ts"]))).size)
    day = np.zeros(n, np.int64)
    state = np.zeros((n, 12), np.float32)
    pe = [np.zeros(n) for _ in policies]
    today = DayCount(len(ds.users))
    done = 0
    for rows, rep in iter_replay(ds, spec, with_affinity=False, chunk_rows=1):
        if not rows.size:
            continue
        u, b = rep.user_index[rows], rep.bucket[rows]
        _, _, d = rep.state.local_time(u, b)
        st = today.get(u, d)
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
        today.add(u[sent[rows]], d[sent[rows]])
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
    return _bootstrap_interval(name, point, percentile_interval(reps, alpha), alpha)


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


def _timing_notes(ds: Dataset, settings: TimingSettings,
                  seq: Mapping[str, SequentialDiagnostics], segment: str) -> list[str]:
    notes = _horizon_notes(seq, segment)
    missing = reward.missing_outcomes(settings.reward, ds.pushes)
    if missing:
        n_sent = int(ds.pushes["sent"].astype("boolean").fillna(False).sum())
        notes.append(_missing_note(missing, f"{n_sent} sent pushes"))
    return notes


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
        data={"path": str(ds.path), "fingerprint": ds.fingerprint(),
              "split": ds.split, "n_traj": tr.n_traj,
              "horizon": int(tr.reward.shape[1]), "n_slots": int(tr.mask.sum()),
              "value_unit": f"expected reward per {unit}"},
        reward=settings.describe_reward(),
        estimates=est, baseline_estimates=base_est, diagnostics=diag,
        baseline_diagnostics=base_diag, gate=decision, gate_estimator=g_name, skipped=skipped,
        sequential=seq, segment=segment, notes=_timing_notes(ds, settings, seq, segment),
        weights=weights,
        settings={"scenario": settings.to_dict(), "gamma": 1.0,
                  "fqe": "ridge per (step, action) on encoded features, allowed, sends_today",
                  "gate": _gate_settings(g)})


