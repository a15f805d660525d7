"""Benchmark (issue 13): fidelity of the fitted simulator on every world of the zoo.

Usage: python benchmarks/sim_fidelity.py [--worlds default,commuter] [--users 1000]
       [--days 21] [--seed 0] [--out out/sim_fidelity] [--json] [--table-from DIR]

Per world (``pushrl.data.worlds``, split ``dev`` / ``held-out`` as declared there), one at a
time (run one world per process to keep memory low; ``--table-from DIR`` merges the
``fidelity.json`` files under ``DIR``):

1. synthesise logs of ``1.5 * --users`` users x ``--days`` (seed ``--seed``) and split them
   by user: the first ``--users`` users are the training logs, the rest the held-out logs
   (same world, same item catalog and days, users the simulator never saw);
2. ``fit_sim`` on the training logs (the same call as ``pushrl sim fit``), timed;
3. ``validate_push`` on the training logs: the logged actions replayed in the simulator
   (``pushrl.sim.validate.replay_logging_policy``): open and unsubscribe rates, relative
   error and z over the matched pushes; and the components' grouped cross-validation
   (held-out users);
4. ``validate_push`` on the held-out logs: click and open models scored on users and draws
   the simulator never saw (log-loss and AUC vs the constant training rate).

Targets (issue 13): |open rel| and |unsub rel| <= 10 % with |z| < 2; the click model beats
the constant (log-loss and AUC > 0.5) on held-out users where the world has affinity (all
five families have category tastes that drive clicks). Develop on the dev worlds only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pushrl.data.io import Dataset, write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import DEV_WORLDS, HELDOUT_WORLDS, WORLDS, world_config
from pushrl.sim.fit import fit_sim
from pushrl.sim.model import save_sim
from pushrl.sim.validate import validate_push


def _load(d: Path) -> Any:
    return load_dataset(d, quarantine=False)


def split_by_user(name: str, args: argparse.Namespace, w: Path) -> None:
    """Synthesise ``1.5 * users`` users; write ``w/data`` (first ``users``) and ``w/heldout``."""
    ds, _, _ = generate(world_config(name, users=args.users * 3 // 2, days=args.days,
                                     seed=args.seed))
    train = set(ds.users["user_id"].astype(str)[: args.users])
    for sub, keep in (("data", True), ("heldout", False)):
        def pick(df: pd.DataFrame, keep: bool = keep) -> pd.DataFrame:
            return df[df["user_id"].astype(str).isin(train) == keep].reset_index(drop=True)
        write_dataset(Dataset(pick(ds.users), ds.items, pick(ds.activity), pick(ds.pushes),
                              meta={**ds.meta, "split": sub}), w / sub)


def world_fidelity(name: str, args: argparse.Namespace) -> dict[str, Any]:
    w = Path(args.out) / name
    data, held = w / "data", w / "heldout"
    if not (held / "pushes.parquet").exists():
        split_by_user(name, args, w)
    ds, report = _load(data)
    t0 = time.perf_counter()
    model = fit_sim(ds, report)
    fit_s = time.perf_counter() - t0
    save_sim(model, w / "sim")
    model.meta["path"] = str(w / "sim")
    rep = validate_push(model, ds, report, seed=args.seed)
    hds, hreport = _load(held)
    hrep = validate_push(model, hds, hreport, seed=args.seed)
    ov = rep["replay"]["overall"]
    comp = {k: {m: c.get(m) for m in ("auc", "log_loss", "log_loss_baseline", "n")}
            for k, c in rep["components"].items() if k != "rhythm"}
    held_comp = {k: {m: c.get(m) for m in ("auc", "log_loss", "log_loss_baseline", "ece", "n")}
                 for k, c in hrep["components"].items()}
    return {
        "world": name, "split": "dev" if name in DEV_WORLDS else "held-out",
        "users": args.users, "days": args.days, "seed": args.seed,
        "fit_seconds": round(fit_s, 1), "load": os.getloadavg()[0],
        "replay": {k: {m: ov[k][m] for m in ("rate_log", "rate_sim", "rel_error", "z",
                                              "n_sim")} for k in ov},
        "replay_unsub_by_sends_7d": rep["replay"]["unsubscribe_rate_by_sends_7d"],
        "replay_max_abs_z_open_by_hour": rep["replay"]["max_abs_z_open_by_hour"],
        "matched_share": rep["replay"]["matched_share"],
        "cv": comp, "heldout": held_comp,
        "gates": {g["name"]: g["pass"] for g in rep["gates"]},
    }


def _rz(r: dict[str, Any]) -> str:
    return f"{100 * (r['rel_error'] or 0):+.1f}% ({r['z']:+.1f})"


def _ll(c: dict[str, Any]) -> str:
    auc = "-" if c.get("auc") is None else f"{c['auc']:.3f}"
    return f"{auc}, {c['log_loss']:.4f} vs {c['log_loss_baseline']:.4f}"


def table(recs: list[dict[str, Any]]) -> str:
    rows = ["| world | split | open rel (z) | unsub rel (z) | click AUC, LL vs const (CV) "
            "| click AUC, LL vs const (held-out users) | open AUC, LL vs const (held-out users) "
            "| unsub AUC, LL vs const (held-out users) | fit s |", "|" + "---|" * 9]
    for r in recs:
        h = r["heldout"]
        rows.append(f"| {r['world']} | {r['split']} | {_rz(r['replay']['open_rate'])} "
                    f"| {_rz(r['replay']['unsubscribe_rate'])} | {_ll(r['cv']['click'])} "
                    f"| {_ll(h['click'])} | {_ll(h['open'])} | {_ll(h['unsubscribe'])} "
                    f"| {r['fit_seconds']} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default=",".join((*DEV_WORLDS, *HELDOUT_WORLDS)))
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/sim_fidelity")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--table-from", default=None,
                    help="merge DIR/*/fidelity.json into one table and exit")
    args = ap.parse_args()
    if args.table_from:
        order = list(WORLDS)
        recs = [json.loads(f.read_text()) for f in Path(args.table_from).glob("*/fidelity.json")]
        recs.sort(key=lambda r: order.index(r["world"]))
    else:
        recs = []
        for name in args.worlds.split(","):
            rec = world_fidelity(name, args)
            (Path(args.out) / name / "fidelity.json").write_text(json.dumps(rec, indent=2))
            recs.append(rec)
    print(json.dumps(recs, indent=2) if args.json else table(recs))


if __name__ == "__main__":
    main()
