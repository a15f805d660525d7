"""Served vs batch: the same policies scored through `pushrl serve` and in the batch rollout.

Usage: python benchmarks/served_vs_batch.py --world-dir out/gen_small/commuter
       [--users 300] [--days 7] [--seed 0] [--json]

``--world-dir`` is a world of ``benchmarks/generalization.py`` (``init/scenario.toml``,
``policies/ppo/v1``, ``policies/vw/v1``). For each policy set (reference: the server's
defaults, most-active-hour + most-popular of the init data; learned: PPO + VW) and each way of
bringing the users' past in, :func:`pushrl.compare.served.drive` serves the users through a
real server, and :func:`pushrl.compare.served.batch_twin` rolls the same policies out in the
simulator for the SAME users and counter-based random numbers, with the warm start that
matches the history:

- ``none`` / ``warm_start = none``: nobody has a past; server and simulator states are equal.
- ``warm`` / ``week``: the server gets each user's logged activity of the log's first 7 days,
  the simulator seeds the same counts plus the logged pushes (the server cannot take those).
- ``log`` / ``full``: the server gets all logged activity (the production path until
  ``state import`` lands); the simulator seeds the whole log's counts but leaves the 24 h /
  7 d windows empty.

Per run: share of identical send decisions, mean objective per user served and batch, and the
paired served - batch difference per user with its 95 % CI (a CI excluding 0 = a skew).

Stochastic policies (the PPO agent samples, VW's squarecb samples items) draw from the
server's generator in the server and from the rollout's in the batch, so their decisions part
ways by chance; until a user's first differing send or item, both sides have seen exactly the
same events, so the timing policy's send probability must be equal there: ``p_send max |diff|
before divergence`` (served: the decide responses' ``p_send``) is the
sharp skew check for them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.compare.served import batch_twin, drive
from pushrl.compare.stats import estimate, paired_difference

CASES = (("reference", "warm", "week"), ("reference", "log", "full"),
         ("learned", "none", "none"), ("learned", "warm", "week"), ("learned", "log", "full"))


def registry(w: Path, key: str) -> Path:
    """A registry with the set's artifacts promoted (forced, audited), or empty."""
    reg = w / "served_vs_batch" / key
    if reg.exists():
        shutil.rmtree(reg)
    reg.mkdir(parents=True)
    if key == "learned":
        for n in ("ppo", "vw"):
            art = sorted((w / "policies" / n).glob("v*"))[-1]
            shutil.copytree(art, reg / n / art.name)
            subprocess.run([sys.executable, "-m", "pushrl", "policies", "promote", n,
                            "--registry", str(reg), "--force", "--reason",
                            "served-vs-batch benchmark"], check=True, capture_output=True)
    return reg


def before_divergence(served: Any, twin: Any) -> np.ndarray:
    """``(n_users, horizon)`` True up to and including each user's first step where the
    served and batch sends or items differ (both have seen the same events until then)."""
    asked = served.decisions >= 0
    differ = asked & ((served.decisions == 1) != twin.sent) | (served.items != twin.items)
    first = np.where(differ.any(axis=1), differ.argmax(axis=1), differ.shape[1] - 1)
    return (np.arange(differ.shape[1])[None, :] <= first[:, None]) & asked


def frame(res: Any) -> pd.DataFrame:
    f = res.to_frame()
    f["seed"], f["user"] = 0, np.arange(len(f))
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-dir", required=True)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default=",".join(f"{a}/{b}" for a, b, _ in CASES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    w = Path(args.world_dir)
    sc = str(w / "init" / "scenario.toml")
    want = set(args.cases.split(","))
    regs = {k: registry(w, k) for k in ("reference", "learned")}
    ppo = str(sorted((w / "policies" / "ppo").glob("v*"))[-1].resolve())
    vw = str(sorted((w / "policies" / "vw").glob("v*"))[-1].resolve())
    out: list[dict[str, Any]] = []
    for key, hist, warm in CASES:
        if f"{key}/{hist}" not in want:
            continue
        up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        t0 = time.perf_counter()
        state = w / "served_vs_batch" / f"state-{key}-{hist}"
        shutil.rmtree(state, ignore_errors=True)
        served = drive(regs[key], sc, users=args.users, days=args.days, seed=args.seed,
                       history=hist, warm_start=warm, label=key, state=state)
        t1 = time.perf_counter()
        timing, item = ("most-active-hour", None) if key == "reference" else (ppo, vw)
        twin = batch_twin(timing, item, sc, users=args.users, days=args.days,
                          seed=args.seed, warm_start=warm)
        batch, sent = twin.result, twin.sent
        asked = served.decisions >= 0
        ps = served.p_send  # the decide responses' `p_send`
        same = before_divergence(served, twin)
        gap = np.abs(ps[same] - twin.p_send[same])
        fs, fb = frame(served.result), frame(batch)
        d = paired_difference(fs, fb, "objective", days=args.days)
        rec = {"policies": key, "history": hist, "warm_start": warm, "uptime": up,
               "same_decisions": float((sent[asked] == (served.decisions[asked] == 1)).mean()),
               "sends_served": int(served.result.sends.sum()),
               "sends_batch": int(batch.sends.sum()),
               "objective_served": estimate(fs, "objective", days=args.days).value,
               "objective_batch": estimate(fb, "objective", days=args.days).value,
               "served_minus_batch": {"diff": d.value, "lower": d.lower, "upper": d.upper},
               "p_send_max_abs_diff_before_divergence": float(gap.max()),
               "decisions_before_divergence": int(same.sum()),
               "users_diverged": int((~same[:, -1] & asked[:, -1]).sum()),
               "served_blocked": served.served_blocked, "served_seconds": round(t1 - t0, 1),
               "served_timing": served.timing, "requests": served.requests}
        out.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    (w / "served_vs_batch.json").write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"world {w}, {args.users} users x {args.days} days, seed {args.seed}\n")
    print("| policies | history (server) / warm start (batch) | same send decisions | sends "
          "served / batch | objective/user served / batch | served - batch [95% CI] "
          "| p_send max abs diff before divergence (decisions) |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        d = r["served_minus_batch"]
        print(f"| {r['policies']} | {r['history']} / {r['warm_start']} "
              f"| {100 * r['same_decisions']:.2f}% | {r['sends_served']} / {r['sends_batch']} "
              f"| {r['objective_served']:.3f} / {r['objective_batch']:.3f} "
              f"| {d['diff']:+.3f} [{d['lower']:+.3f}, {d['upper']:+.3f}] "
              f"| {r['p_send_max_abs_diff_before_divergence']:.2g} "
              f"({r['decisions_before_divergence']}) |")


if __name__ == "__main__":
    main()
