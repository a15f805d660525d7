"""Diagnostic for issue 13: is the served - batch skew of the item bandit the warm start?

Usage: python benchmarks/generalization_skew.py [--out out/gen_final] [--worlds W,...]

``generalization.py --served`` measured served - batch per user on the same users and draws
(``served_minus_batch``). The served users carry the whole logged history (``pushrl state
import``); the batch rollout warm-starts each user from the log's first week (the init
scenario's ``warm_start = "week"``). This reruns the batch rollout of the served sets
(reference: most-active-hour + most-popular; shipped: most-active-hour + the shipped item
policy) on the served users (``--served-users`` of the run, seed 0) with ``warm_start =
"full"`` (lifetime counts of the whole log) and writes ``OUT/W/skew_full.json``: the served
mean objective/user next to the batch means with ``week`` and ``full`` (the served per-user
frames are not kept, so ``full`` has no paired CI). If the skew is the history the server
was given, served - batch shrinks with ``full``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pushrl.compare.runner import compare
from pushrl.compare.stats import estimate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/gen_final")
    ap.add_argument("--worlds", default="default,taste-clicks")
    args = ap.parse_args()
    for name in args.worlds.split(","):
        w = Path(args.out) / name
        rec = json.loads((w / "result.json").read_text())
        served = rec["served"]
        users = rec["settings"]["served_users"]
        item = (rec["bandit"]["artifact"] if rec["shipped"]["item"] == "vw" else
                f"most-popular:data={(w / 'data').resolve()}")
        popular = f"most-popular:data={(w / 'data').resolve()}"
        kw = {"scenario": rec["init"]["scenario"], "users": users,
              "overrides": {"truth": True, "warm_start": "full"}}
        out: dict[str, object] = {"users": users}
        for key, it in (("reference", popular), ("learned", item)):
            res = compare(["h=most-active-hour"], item_policy=it, **kw)
            b = res.per_user.reset_index(drop=True)
            days = float(res.meta["days"])
            full = estimate(b, "objective", days=days)
            sv = served["objective_per_user"][key]
            wk = served["served_minus_batch"][key]
            # the served per-user frames are not kept: means, and the week skew's paired CI
            out[key] = {"served": sv, "batch_week": sv - wk["diff"],
                        "batch_full": full.value, "batch_full_ci": [full.lower, full.upper],
                        "served_minus_batch_week": wk,
                        "served_minus_batch_full": sv - full.value}
        out["load_avg_end"] = os.getloadavg()
        (w / "skew_full.json").write_text(json.dumps(out, indent=2, default=str))
        print(name, json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
