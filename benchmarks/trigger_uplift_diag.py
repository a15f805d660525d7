"""Where does a per-kind uplift estimate's error come from? Splits each seed's error of
`pushrl uplift fit --trigger-kinds` in the closed-loop trigger world into its parts.

Usage: python benchmarks/trigger_uplift_diag.py [--users 600] [--seeds 10-49] [--out J]

Each seed runs :func:`trigger_uplift_coverage.run_seed` (the world of
:mod:`pushrl.compare.trigger_uplift_world` through the real app, export, fit). The world
records both potential outcomes of every trigger (``y0`` without its push, ``y1`` with it;
the world's docstring, **Oracle**), so per kind::

    E - T = (E - O) + (O - S) + (S - T)

* ``T``: the truth (mean ``U``); ``E``: the fit's ``incremental``;
* ``S``: the sample effect, ``mean(y1 - y0)`` over this seed's triggers;
* ``O``: the oracle difference of the arms, ``mean(y1 | treated) - mean(y0 | held out)`` with
  each user's arm from the kind's hash (:meth:`pushrl.rules.holdout.Holdout.held_out`) and
  the world's own outcomes.

``E - O`` is what the log path adds (export, trigger rounds, outcome window, attribution,
weights): 0 exactly when every trigger is in the log with its true arm and its observed
outcome (``y1`` if sent, else ``y0``); the row checks say which part broke otherwise
(``rows_missing``, ``arm_mismatch`` log vs hash, ``treated_unsent`` = a treated trigger
never sent (cancelled, superseded, expired), ``held_sent`` = a leak, ``outcome_mismatch``
= the rounds' ``converted`` vs the world's observed outcome). ``O - S`` is the
randomisation error (which users the hash held out; mean 0 unless the arm depends on the
outcomes). ``S - T`` is the world's sampling error (its coins; mean 0 unless the world's
draws do not have the truth's mean). **Cross-kind**: the kind's difference of arms among
the users held out of the other kind minus among the ones treated by it (mean 0 when one
kind's push does not move the other kind's outcomes).

Prints per seed and per kind, then per kind the coverage of the truth by the fit's
intervals, and for every part its mean over seeds and that mean in
units of its standard error (SD over seeds / sqrt(seeds)). ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trigger_uplift_coverage import bias_se, run_seed, seeds_of

PARTS = ("E-T", "E-O", "O-S", "S-T", "cross_kind")
CHECKS = ("rows_missing", "arm_mismatch", "treated_unsent", "held_sent", "outcome_mismatch")


def compact(x: Any) -> Any:
    """``x`` with its floats rounded to 6 decimals (the JSON of many seeds stays small)."""
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: compact(v) for k, v in x.items()}
    if isinstance(x, list):
        return [compact(v) for v in x]
    return x


def _dm(y: np.ndarray, treated: np.ndarray) -> float:
    return float(y[treated].mean() - y[~treated].mean())


def diagnose(users: int, seed: int) -> list[dict[str, Any]]:
    """Per kind: the parts of the error and the row checks (module docstring)."""
    from pushrl.compare import trigger_uplift_world as world
    from pushrl.policies.delay_data import delay_rounds
    from pushrl.rules.guardrails import Guardrails
    from pushrl.rules.triggers import TriggerConfig, TriggerKind

    r = run_seed(users, seed)
    truth = world.truth(users)
    w = r.world.outcomes.copy()
    rounds = delay_rounds(r.ds, TriggerConfig.parse(world.RULES), Guardrails(),
                          horizon_h=world.HORIZON_H, keep_held_out=True, due=False)
    t = r.ds.triggers.reset_index(drop=True)
    log = pd.DataFrame({
        "kind": rounds.kind, "user_id": rounds.user_id,
        # the world's items: browse i{2e}, cart i{2e+1}
        "episode": t["item_id"].astype(str).str[1:].astype(int).to_numpy() // 2,
        "log_held": rounds.held_out, "log_sent": rounds.sent, "log_y": rounds.converted,
        "complete": rounds.complete})
    out = []
    kinds = list(truth)
    for kind in kinds:
        wk = w[w["kind"] == kind].copy()
        wk["hash_held"] = r.holdouts[TriggerKind(kind)].held_out(wk["user_id"].to_numpy())
        wk["y_obs"] = np.where(wk["sent"], wk["y1"], wk["y0"])
        m = wk.merge(log[log["kind"] == kind], on=["kind", "user_id", "episode"], how="left",
                     indicator=True)
        inlog = (m["_merge"] == "both").to_numpy()
        treated = ~m["hash_held"].to_numpy(bool)
        y1, y0 = m["y1"].to_numpy(float), m["y0"].to_numpy(float)
        o = float(y1[treated].mean() - y0[~treated].mean())
        s = float((y1 - y0).mean())
        e = r.fit.kinds[kind].incremental
        # cross-kind: this kind's arms among the other kind's held-out vs treated users
        other = next(k for k in kinds if k != kind)
        oh = r.holdouts[TriggerKind(other)].held_out(m["user_id"].to_numpy())
        lt = ~m["log_held"].fillna(False).to_numpy(bool)
        ly = m["log_y"].fillna(False).to_numpy(float)
        cross = _dm(ly[oh], lt[oh]) - _dm(ly[~oh], lt[~oh])
        mm = m[inlog]
        out.append({
            "seed": seed, "kind": kind, "T": truth[kind], "S": s, "O": o, "E": e,
            "E-T": e - truth[kind], "E-O": e - o, "O-S": o - s, "S-T": s - truth[kind],
            "cross_kind": cross, "se": r.fit.kinds[kind].se,
            "covered": bool(r.fit.kinds[kind].lower <= truth[kind] <= r.fit.kinds[kind].upper),
            "rows_missing": int((~inlog).sum()),
            "rows_extra": int((log["kind"] == kind).sum()) - int(inlog.sum()),
            "incomplete": int((~mm["complete"].astype(bool)).sum()),
            "arm_mismatch": int((mm["log_held"].astype(bool) != mm["hash_held"]).sum()),
            "treated_unsent": int((~mm["hash_held"] & ~mm["sent"]).sum()),
            "held_sent": int((mm["hash_held"] & mm["sent"]).sum()),
            "log_sent_mismatch": int((mm["log_sent"].astype(bool) != mm["sent"]).sum()),
            "outcome_mismatch": int((mm["log_y"].astype(bool) != mm["y_obs"]).sum()),
            "treated_rate_by_group": {
                g: [float(y1[treated & (m["active"] == a)].mean()),
                    float(y0[~treated & (m["active"] == a)].mean())]
                for g, a in (("inactive", False), ("active", True))},
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--seeds", default="10-49")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for seed in seeds_of(args.seeds):
        for x in diagnose(args.users, seed):
            rows.append(x)
            print(f"seed {seed} {x['kind']:6s} E {x['E']:+.4f} O {x['O']:+.4f} "
                  f"S {x['S']:+.4f} T {x['T']:.4f} | E-O {x['E-O']:+.1e} O-S {x['O-S']:+.4f} "
                  f"S-T {x['S-T']:+.4f} cross {x['cross_kind']:+.4f} | "
                  + " ".join(f"{c} {x[c]}" for c in CHECKS), flush=True)
    summary: dict[str, Any] = {}
    for kind in dict.fromkeys(x["kind"] for x in rows):
        mine = [x for x in rows if x["kind"] == kind]
        s: dict[str, Any] = {"seeds": len(mine), "covered": sum(x["covered"] for x in mine),
                             "mean_se": float(np.mean([x["se"] for x in mine]))}
        for p in PARTS:
            v = [x[p] for x in mine]
            s[p] = {"mean": float(np.mean(v)),
                    "sd": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                    "mean_in_se": bias_se(v), "max_abs": float(np.max(np.abs(v)))}
        for c in (*CHECKS, "rows_extra", "incomplete", "log_sent_mismatch"):
            s[c] = int(sum(x[c] for x in mine))
        summary[kind] = s
        print(f"{kind}: coverage {s['covered']} of {len(mine)}, mean SE {s['mean_se']:.4f}")
        print(f"{kind}: " + "; ".join(
            f"{p} mean {s[p]['mean']:+.5f} (SD {s[p]['sd']:.4f}, {s[p]['mean_in_se']:+.2f} SE)"
            for p in PARTS))
        print(f"{kind}: rows " + ", ".join(
            f"{c} {s[c]}" for c in (*CHECKS, "rows_extra", "incomplete", "log_sent_mismatch"))
            + f" (over {len(mine)} seeds)")
    if args.out:
        Path(args.out).write_text(json.dumps(compact({"users": args.users, "rows": rows,
                                                      "summary": summary}),
                                             separators=(",", ":")))


if __name__ == "__main__":
    main()
