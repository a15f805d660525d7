"""Benchmark: send-timing policies on held-out simulated users (the issue-5 results table).

Usage::

    python benchmarks/timing_results.py [--users 2000] [--seed 9000001] [--json]
        [--scenarios default,default_fatigue2,default_shift2h] [--worlds truth,fitted]
        [--ppo default=policies/ppo-timing ...] [--out benchmarks/results/timing]

For every scenario and world (``truth``: the synthetic ground truth, where the oracle exists;
``fitted``: the simulator the agent was trained in) every policy runs on the same held-out
users with common random numbers (``pushrl.envs.rollout`` with one seed, disjoint from the
training, validation and model-card seeds). Intervals are 95 % normal / delta-method over
users, differences are paired (``pushrl.compare.stats``). The reference is the best heuristic
on these users (the most favourable choice for the heuristics). Gap closed =
(PPO - best heuristic) / (oracle - best heuristic), delta-method CI on the paired per-user
differences.

Targets (default scenario): PPO >= +10 % objective over the best heuristic with an
unsubscribe rate no higher; >= 80 % of the heuristic-oracle gap closed; training <= 15 min.
The script prints the figures; it asserts nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny products; threads only contend

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.compare.stats import summarize
from pushrl.envs import load_scenario, rollout
from pushrl.policies.baselines import make_baseline
from pushrl.policies.registry import load_policy, read_card, resolve

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PPO = {"default": "policies/ppo-timing", "default_fatigue2": "policies/ppo-timing-fatigue2",
               "default_shift2h": "policies/ppo-timing-shift2h"}
#: label -> (baseline name, parameter overrides); the TOML defaults were tuned on seed 1
HEURISTICS: dict[str, tuple[str, dict[str, Any]]] = {
    "fixed-hour": ("fixed-hour", {}),
    "most-active-hour": ("most-active-hour", {}),
    "most-active-hour/day-pool": ("most-active-hour", {"pool": "day", "min_gap_hours": 20}),
}
SHOWN = ("objective", "sends_per_user_day", "open_rate", "revenue_per_user", "unsubscribe_rate")


def _frame(res: Any, label: str) -> pd.DataFrame:
    df = res.to_frame()
    df["policy"], df["seed"] = label, res.seed
    df["user"] = np.arange(len(df))  # slot index: the pairing key (population rows repeat)
    return df


def _gap_closed(d_ppo: np.ndarray, d_oracle: np.ndarray) -> dict[str, float]:
    """Ratio of paired mean differences (PPO - H) / (oracle - H), delta-method 95 % CI."""
    m1, m2 = d_ppo.mean(), d_oracle.mean()
    r = m1 / m2
    lin = (d_ppo - r * d_oracle) / m2
    se = float(lin.std(ddof=1) / np.sqrt(lin.size))
    return {"value": float(r), "lower": float(r - 1.96 * se), "upper": float(r + 1.96 * se),
            "se": se}


def run_world(scenario: str, truth: bool, ppo_path: Path | None, users: int,
              seed: int, log: Any) -> dict[str, Any]:
    """All policies on one scenario/world; returns summary tables and target figures."""
    days = load_scenario(scenario).horizon_days
    frames, seconds = [], {}

    def run(label: str, policy: Any) -> Any:
        t0 = time.perf_counter()
        res = rollout(policy, scenario, n_users=users, seed=seed, truth=truth,
                      policy_name=label)
        seconds[label] = round(time.perf_counter() - t0, 1)
        log(f"  {scenario:17s} {'truth' if truth else 'fitted':6s} {label:26s} "
            f"objective {res.objective.mean():7.3f}  ({seconds[label]:.0f} s)")
        frames.append(_frame(res, label))
        return res

    run("never-send", make_baseline("never-send"))
    for label, (name, kw) in HEURISTICS.items():
        run(label, make_baseline(name, **kw))
    ppo_volume = 0.5
    if ppo_path is not None:
        res = run("ppo", load_policy(ppo_path))
        ppo_volume = float(res.sends.sum() / (users * days))
    run("random-volume", make_baseline("random-volume", sends_per_day=round(ppo_volume, 3)))
    if truth:
        run("timing-oracle", make_baseline("timing-oracle"))
    per_user = pd.concat(frames, ignore_index=True)
    heur = ["fixed-hour", *HEURISTICS, "random-volume"]
    means = per_user.groupby("policy")["objective"].mean()
    best = max(dict.fromkeys(heur), key=lambda p: means[p])
    summary, paired = summarize(per_user, reference=best, days=days)
    out: dict[str, Any] = {"scenario": scenario, "world": "truth" if truth else "fitted",
                           "users": users, "seed": seed, "days": days, "best_heuristic": best,
                           "random_volume_sends_per_day": ppo_volume, "seconds": seconds,
                           "summary": summary.to_dict("records"),
                           "paired": paired.to_dict("records")}
    if ppo_path is not None and truth:
        obj = {p: g["objective"].to_numpy() for p, g in per_user.groupby("policy")}
        out["gap_closed"] = _gap_closed(obj["ppo"] - obj[best],
                                        obj["timing-oracle"] - obj[best])
    return out


def _fmt(v: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def to_markdown(world: dict[str, Any]) -> str:
    """One markdown table for a scenario/world."""
    s = pd.DataFrame(world["summary"])
    p = pd.DataFrame(world["paired"])
    best = world["best_heuristic"]
    lines = [f"### {world['scenario']} — {world['world']} world "
             f"({world['users']} held-out users x {world['days']} days, seed {world['seed']}; "
             f"reference = best heuristic `{best}`)", "",
             "| policy | objective/user | Δ objective vs best heuristic | sends/user/day "
             "| open rate | revenue/user | unsubscribe rate | Δ unsubscribe rate |",
             "|---|---|---|---|---|---|---|---|"]
    for pol in dict.fromkeys(s["policy"]):
        cells = []
        for m in SHOWN:
            r = s[(s.policy == pol) & (s.metric == m)].iloc[0]
            cells.append(_fmt(r.value, r.lower, r.upper, 2 if m.startswith("rev") else 3))
        d = p[(p.policy == pol) & (p.metric == "objective")]
        du = p[(p.policy == pol) & (p.metric == "unsubscribe_rate")]
        delta = "—" if d.empty else (
            f"{_fmt(d.iloc[0]['diff'], d.iloc[0]['lower'], d.iloc[0]['upper'])}"
            f" ({100 * d.iloc[0]['relative']:+.1f} %)")
        delta_u = "—" if du.empty else _fmt(du.iloc[0]["diff"], du.iloc[0]["lower"],
                                            du.iloc[0]["upper"])
        lines.append(f"| {pol} | {cells[0]} | {delta} | {' | '.join(cells[1:])} | {delta_u} |")
    if "gap_closed" in world:
        g = world["gap_closed"]
        lines += ["", f"Gap closed by PPO between `{best}` and the oracle: "
                  f"{100 * g['value']:.1f} % [{100 * g['lower']:.1f}, {100 * g['upper']:.1f}]."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=9_000_001, help="test seed (held out)")
    ap.add_argument("--scenarios", default="default,default_fatigue2,default_shift2h")
    ap.add_argument("--worlds", default="truth,fitted")
    ap.add_argument("--ppo", action="append", default=[], metavar="SCENARIO=PATH")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "timing"),
                    help="write OUT.md and OUT.json ('' = do not write)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = ap.parse_args()
    ppo = dict(DEFAULT_PPO)
    ppo.update(dict(kv.split("=", 1) for kv in args.ppo))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results: dict[str, Any] = {"worlds": [], "training": {}}
    for sc in args.scenarios.split(","):
        p = ROOT / ppo[sc] if sc in ppo else None
        path = resolve(p) if p is not None and p.exists() else None
        if path is None:
            log(f"  {sc}: no PPO artifact at {p}; heuristics and oracle only")
        else:
            card = read_card(path)
            results["training"][sc] = {
                "artifact": os.path.relpath(path, ROOT), "timesteps": card["timesteps"],
                "train/seconds": card["train/seconds"], "seed": card["seed"],
                "deterministic": card.get("deterministic"), "scenario": card["scenario"]["name"]}
        for w in args.worlds.split(","):
            results["worlds"].append(run_world(sc, w == "truth", path, args.users, args.seed,
                                               log))
    md = ["## Send timing: PPO vs heuristics vs oracle", ""]
    for sc, t in results["training"].items():
        md.append(f"* `{t['artifact']}` ({sc}): {t['timesteps']:,} steps in "
                  f"{t['train/seconds'] / 60:.1f} min, seed {t['seed']}, "
                  f"{'argmax' if t['deterministic'] else 'sampled'} actions")
    for w in results["worlds"]:
        md += ["", to_markdown(w)]
    text = "\n".join(md) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".md").write_text(text)
        Path(args.out + ".json").write_text(json.dumps(results, indent=1, default=float))
    print(json.dumps(results, indent=1, default=float) if args.json else text)


if __name__ == "__main__":
    main()
