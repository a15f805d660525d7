"""The human-readable report of an :class:`~pushrl.ope._common.EvaluationResult`.

:func:`evaluation_report` lays one evaluation out as an :class:`~pushrl.ope.report.OPEReport`
(the candidate's and the baseline's estimates, the weight diagnostics, the gate and a table of
what was evaluated how), which :func:`~pushrl.ope.report.write_report` writes as markdown and
HTML for ``pushrl evaluate --out``.
"""

from __future__ import annotations

from typing import Any

from pushrl.ope._common import EvaluationResult
from pushrl.ope.intervals import IntervalEstimate
from pushrl.ope.report import OPEReport


_SOURCES = {"artifact": "registry artifact", "baseline": "built-in baseline",
            "object": "Python object"}


def evaluation_report(res: EvaluationResult) -> OPEReport:
    """The report of one evaluation: estimates, diagnostics, gate and run metadata."""
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
        **{k: v for k, v in res.data.items() if k not in ("path", "fingerprint", "split")},
        **({"split": _split_line(res.data["split"])} if res.data.get("split") else {}),
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


def _split_line(sp: dict[str, Any]) -> str:
    """One line on the user split (or user sample) the evaluated logs are a part of."""
    if sp.get("by") == "sample":
        return (f"a seeded sample of {sp['users']} of {sp['of_users']} users (seed "
                f"{sp['seed']}) of the log with fingerprint {sp['of']}")
    sm = sp.get("sample")
    return (f"the {sp['n_users']} {sp['part']} users of a user split (holdout_frac "
            f"{sp['holdout_frac']:g}, seed {sp['seed']}) of the log with fingerprint {sp['of']}"
            + (f", from a seeded sample of {sm['users']} of {sm['of_users']} users (seed "
               f"{sm['seed']})" if isinstance(sm, dict) else ""))
