"""Diagnostic for issue 13: the trained PPO agent on the TRUTH, whether or not it shipped.

Usage: python benchmarks/generalization_ppo_truth.py [--out out/gen_final] [--worlds W,...]
       [--users 3000]

For every world that ``benchmarks/generalization.py`` finished (``OUT/W/result.json``), rolls
out the trained timing agent (``OUT/W/steps/ppo-s0.json``) and most-active-hour, both with
the trained VW bandit, in the batch rollout with the world's true response (``truth =
true``, the same users and counter-based random numbers as ``generalization.py``'s batch
figures: ``compare`` seed 0) and writes ``OUT/W/ppo_truth.json``: the agent's paired
objective and unsubscribed-share differences vs the heuristic. It tells whether the timing
selection (fitted simulator, 3000 validation users) was right to ship or refuse the agent.
Nothing here is used by the loop; it is read by ``generalization_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from pushrl.compare.runner import compare
from pushrl.compare.stats import estimate, paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/gen_final")
    ap.add_argument("--worlds", default="taste-clicks,fatigue-heavy,default,commuter,night-owls")
    ap.add_argument("--users", type=int, default=3000)
    args = ap.parse_args()
    for name in args.worlds.split(","):
        w = Path(args.out) / name
        if not (w / "result.json").is_file():
            continue
        t0 = time.perf_counter()
        rec = json.loads((w / "result.json").read_text())
        ppo = json.loads((w / "steps" / "ppo-s0.json").read_text())["artifact"]
        sc = rec["init"]["scenario"]
        res = compare([f"agent={ppo}", "heuristic=most-active-hour"],
                      item_policy=rec["bandit"]["artifact"], scenario=sc, users=args.users,
                      overrides={"truth": True})
        pu, days = res.per_user, float(res.meta["days"])
        a = pu[pu.policy == "agent"].reset_index(drop=True)
        h = pu[pu.policy == "heuristic"].reset_index(drop=True)
        out = {"users": args.users, "days": days, "artifact": ppo}
        for m in ("objective", "unsubscribe_rate", "sends_per_user_day"):
            d = paired_difference(a, h, m, days=days)
            out[m] = {"diff": d.value, "lower": d.lower, "upper": d.upper,
                      "agent": estimate(a, m, days=days).value,
                      "heuristic": estimate(h, m, days=days).value}
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["load_avg_end"] = os.getloadavg()
        (w / "ppo_truth.json").write_text(json.dumps(out, indent=2))
        o, u = out["objective"], out["unsubscribe_rate"]
        print(f"{name}: agent vs heuristic (both + VW), truth: objective {o['diff']:+.3f} "
              f"[{o['lower']:+.3f}, {o['upper']:+.3f}], unsubscribed {100 * u['diff']:+.2f} pp "
              f"[{100 * u['lower']:+.2f}, {100 * u['upper']:+.2f}], sends/day "
              f"{out['sends_per_user_day']['agent']:.2f} vs "
              f"{out['sends_per_user_day']['heuristic']:.2f} ({out['seconds']} s, load "
              f"{out['load_avg_end'][0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
