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
(PPO - best heuristic) / (yardstick - best heuristic), delta-method CI on the paired per-user
differences, against two yardsticks: ``timing-oracle`` (knows every user's hidden parameters)
and ``timing-oracle-info`` (the true response model, but only the logged information a
deployed policy has; :class:`pushrl.policies.oracle.InformedOracle`).

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
#: scenario -> [(label, artifact)]: the agent trained in the scenario's fitted simulator and
#: the one trained in its ground-truth simulator (same observation, see the report)
DEFAULT_PPO: dict[str, list[tuple[str, str]]] = {
    "default": [("ppo/fitted-sim", "policies/ppo-timing"),
                ("ppo/truth-sim", "policies/ppo-timing-truth")],
    "default_fatigue2": [("ppo/fitted-sim", "policies/ppo-timing-fatigue2"),
                         ("ppo/truth-sim", "policies/ppo-timing-fatigue2-truth")],
    "default_shift2h": [("ppo/fitted-sim", "policies/ppo-timing-shift2h"),
                        ("ppo/truth-sim", "policies/ppo-timing-shift2h-truth")],
}
#: label -> (baseline name, parameter overrides); the TOML defaults were tuned on seed 1
HEURISTICS: dict[str, tuple[str, dict[str, Any]]] = {
    "fixed-hour": ("fixed-hour", {}),
    "most-active-hour": ("most-active-hour", {}),
    "most-active-hour/day-pool": ("most-active-hour", {"pool": "day", "min_gap_hours": 20}),
}
#: the yardsticks of the gap closed: the full ground-truth oracle (knows every user's hidden
#: parameters) and the information-matched one (true model, logged information only)
ORACLES = ("timing-oracle", "timing-oracle-info")
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


def run_world(scenario: str, truth: bool, ppos: list[tuple[str, Path]], users: int,
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
    volume = 0.5
    for i, (label, path) in enumerate(ppos):
        res = run(label, load_policy(path))
        if i == 0:
            volume = float(res.sends.sum() / (users * days))
    run("random-volume", make_baseline("random-volume", sends_per_day=round(volume, 3)))
    if truth:
        run("timing-oracle", make_baseline("timing-oracle"))
        run("timing-oracle-info", make_baseline("timing-oracle-info"))
    per_user = pd.concat(frames, ignore_index=True)
    heur = [*HEURISTICS, "random-volume"]
    means = per_user.groupby("policy")["objective"].mean()
    best = max(heur, key=lambda p: means[p])
    summary, paired = summarize(per_user, reference=best, days=days)
    out: dict[str, Any] = {"scenario": scenario, "world": "truth" if truth else "fitted",
                           "users": users, "seed": seed, "days": days, "best_heuristic": best,
                           "random_volume_sends_per_day": volume, "seconds": seconds,
                           "summary": summary.to_dict("records"),
                           "paired": paired.to_dict("records"), "gap_closed": {}}
    if truth:
        obj = {p: g["objective"].to_numpy() for p, g in per_user.groupby("policy")}
        for label, _ in ppos:
            out["gap_closed"][label] = {
                o: _gap_closed(obj[label] - obj[best], obj[o] - obj[best]) for o in ORACLES}
        out["gap_closed"]["timing-oracle-info"] = {"timing-oracle": _gap_closed(
            obj["timing-oracle-info"] - obj[best], obj["timing-oracle"] - obj[best])}
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
    gaps = world.get("gap_closed", {})
    if gaps:
        lines += ["", f"Share of the gap between `{best}` and each yardstick closed (paired, "
                  "delta-method 95 % CI):", "", "| policy | " + " | ".join(
                      f"vs `{o}`" for o in ORACLES) + " |", "|---|" + "---|" * len(ORACLES)]
        for label, g in gaps.items():
            cells = [(f"{100 * g[o]['value']:.1f} % [{100 * g[o]['lower']:.1f}, "
                      f"{100 * g[o]['upper']:.1f}]") if o in g else "—" for o in ORACLES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inference_timing(artifact: Path, repeats: int = 2000) -> dict[str, float]:
    """Microseconds per single-user decision: numpy actor vs SB3 ``model.predict``."""
    import torch

    from pushrl.train.ppo_config import PPOConfig, load_weights, make_model, make_vec_env

    torch.set_num_threads(1)
    card = read_card(artifact)
    cfg = PPOConfig.from_dict({**card["config"], "n_envs": 1, "n_steps": 64, "batch_size": 64,
                               "profile_features": bool(card.get("profile_features", False))})
    venv = make_vec_env(cfg, card["scenario"]["name"], seed=0)
    model = make_model(cfg, venv, seed=0)
    load_weights(model, venv, artifact)
    pol = load_policy(artifact)
    obs = venv.unnormalize_obs(venv.reset())
    norm = venv.normalize_obs(obs)

    def per_call(fn: Any) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats * 1e6

    return {"numpy_actor_us": per_call(lambda: pol.actor.probs(obs)),
            "sb3_predict_us": per_call(lambda: model.predict(norm, deterministic=True)),
            "sb3_get_distribution_us": per_call(lambda: model.policy.get_distribution(
                model.policy.obs_to_tensor(norm)[0]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=9_000_001, help="test seed (held out)")
    ap.add_argument("--scenarios", default="default,default_fatigue2,default_shift2h")
    ap.add_argument("--worlds", default="truth,fitted")
    ap.add_argument("--ppo", action="append", default=[], metavar="SCENARIO=[LABEL=]PATH",
                    help="PPO artifact(s) for a scenario (replace the defaults)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "timing"),
                    help="write OUT.md and OUT.json ('' = do not write)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    ap.add_argument("--no-inference", dest="inference", action="store_false",
                    help="skip the per-decision inference timing")
    args = ap.parse_args()
    given: dict[str, list[tuple[str, str]]] = {}
    for spec in args.ppo:  # SCENARIO=LABEL=PATH or SCENARIO=PATH
        sc, _, rest = spec.partition("=")
        label, _, path = rest.rpartition("=")
        given.setdefault(sc, []).append((label or "ppo", path))
    ppo = {**DEFAULT_PPO, **given}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results: dict[str, Any] = {"worlds": [], "training": {}}
    for sc in args.scenarios.split(","):
        found = []
        for label, rel in ppo.get(sc, []):
            p = ROOT / rel
            if not p.exists():
                log(f"  {sc}: no artifact at {p}; skipping {label}")
                continue
            path = resolve(p)
            card = read_card(path)
            found.append((label, path))
            results["training"][f"{sc}:{label}"] = {
                "artifact": os.path.relpath(path, ROOT), "timesteps": card["timesteps"],
                "train/seconds": card["train/seconds"], "seed": card["seed"],
                "deterministic": card.get("deterministic"), "scenario": card["scenario"]["name"],
                "trained_on_truth": bool(card["scenario"].get("truth"))}
        for w in args.worlds.split(","):
            results["worlds"].append(run_world(sc, w == "truth", found, args.users, args.seed,
                                               log))
    if results["training"] and args.inference:
        first = next(iter(results["training"].values()))
        results["inference"] = inference_timing(ROOT / first["artifact"])
    md = ["## Send timing: PPO vs heuristics vs oracle", ""]
    for key, t in results["training"].items():
        md.append(f"* `{key}` = `{t['artifact']}`: trained in the "
                  f"{'ground-truth' if t['trained_on_truth'] else 'fitted'} simulator of "
                  f"`{t['scenario']}`, {t['timesteps']:,} steps in "
                  f"{t['train/seconds'] / 60:.1f} min, seed {t['seed']}, "
                  f"{'argmax' if t['deterministic'] else 'sampled'} actions")
    if "inference" in results:
        t = results["inference"]
        md.append(f"* one decision: numpy actor {t['numpy_actor_us']:.1f} µs vs SB3 "
                  f"`model.predict` {t['sb3_predict_us']:.0f} µs (single thread)")
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
