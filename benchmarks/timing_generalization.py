"""Benchmark (issues 13/5): a learned send-timing recipe vs the same-information heuristic,
per world of the zoo, scored by each world's true response.

Usage: python benchmarks/timing_generalization.py [--worlds default,commuter,night-owls]
       [--recipes c40,user-value] [--users 1000] [--seeds 0,1] [--timesteps 600000]
       [--transfer policies/ppo-timing/v2] [--val-users 1000] [--eval-users 2000]
       [--out out/timing_gen] [--json]

Per world (``pushrl.data.worlds``; develop on DEV_WORLDS, run HELDOUT_WORLDS once at the end):

1. ``pushrl data synth --world W`` (``--users`` x 28 days) and ``pushrl init`` (validate, fit
   the simulator, write the scenario): everything below trains and selects in that FITTED
   simulator only.
2. Per recipe, PPO on ``pushrl/PushTiming-v1`` with the expected-reward training signal, one
   run per seed (``--timesteps`` each). Recipes differ in the training unsubscribe weight:
   ``c40`` the constant 40 tuned on the default world; ``user-value`` the scenario's weight
   plus the heuristic's value per user over the horizon in the fitted simulator
   (:func:`pushrl.train.select.user_value_penalty`).
3. Selection (:func:`pushrl.train.select.select_timing`) among every seed (argmax and sampled),
   any ``--transfer`` agent (trained on another world, e.g. the shipped default-world agent)
   and the heuristic on fitted-simulator validation users: a learned policy ships only if it
   beats the heuristic with a positive 95 % lower bound there and does not unsubscribe more.
4. Truth: the shipped timing policy + most-popular item (fitted on the logs) vs
   most-active-hour + most-popular, rolled out with ``truth = true`` on ``--eval-users``
   users, paired (same users, common random numbers), 95 % CI of the per-user difference;
   unsubscribed share of users and sends per user-day. Every candidate is also scored on the
   truth (diagnostics: what selection would have gained with an oracle).

The item bandit is not part of this run (``benchmarks/generalization.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any



from pushrl.data.worlds import DEV_WORLDS, HELDOUT_WORLDS, WORLDS
from pushrl.envs.rollout import rollout
from pushrl.envs.scenario import load_scenario
from pushrl.policies.baselines import make_baseline
from pushrl.policies.item_baselines import most_popular
from pushrl.policies.registry import load_policy
from pushrl.train.ppo import train_timing
from pushrl.train.ppo_config import PPOConfig
from pushrl.train.select import Paired, select_timing, user_value_penalty, with_sampling

#: Seed of the truth rollouts (disjoint from training, validation and selection seeds).
TEST_SEED = 9_000_000


def run(*args: str) -> dict[str, Any]:
    """``pushrl ARGS --json`` as a user would type it; its JSON."""
    res = subprocess.run([sys.executable, "-m", "pushrl.cli.main", *args, "--json"],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if res.returncode:
        raise SystemExit(f"`pushrl {' '.join(args)}` failed (exit {res.returncode}):\n"
                         f"{res.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def truth_row(pol: Any, ref: Any, sc: Any, item: Any, n: int) -> dict[str, Any]:
    """Truth rollout of ``pol`` vs the reference rollout ``ref`` (same seed): paired CI."""
    a = rollout(pol, sc, n_users=n, seed=TEST_SEED, item_policy=item)
    d = Paired.of(a.objective, ref.objective)
    base = float(ref.objective.mean())
    u = Paired.of(a.unsubscribed, ref.unsubscribed)
    return {"objective": float(a.objective.mean()), "diff": d.diff, "lower": d.lower,
            "upper": d.upper, "rel": d.diff / abs(base), "rel_lower": d.lower / abs(base),
            "rel_upper": d.upper / abs(base),
            "unsub_share": float(a.unsubscribed.mean()), "unsub_diff": vars(u),
            "sends_per_user_day": float(a.sends.sum() / (n * a.days))}


def world_loop(name: str, args: argparse.Namespace) -> dict[str, Any]:
    w = Path(args.out) / name
    data = w / "data"
    rec: dict[str, Any] = {"world": name, "split": "dev" if name in DEV_WORLDS else "held-out"}
    t0 = time.perf_counter()
    if not (w / "init" / "scenario.toml").exists():
        run("data", "synth", "--world", name, "--users", str(args.users), "--days", "28",
            "--seed", str(args.seed), "--out", str(data))
        run("init", str(data), "--out", str(w / "init"))
    scen = str(w / "init" / "scenario.toml")
    sc = load_scenario(scen)
    sc_truth = load_scenario(scen, truth=True)
    item = most_popular(data)
    heur = make_baseline("most-active-hour")
    ref = rollout(heur, sc_truth, n_users=args.eval_users, seed=TEST_SEED, item_policy=item)
    rec["heuristic_truth"] = {"objective": float(ref.objective.mean()),
                              "unsub_share": float(ref.unsubscribed.mean()),
                              "sends_per_user_day": float(ref.sends.sum() /
                                                          (args.eval_users * ref.days))}
    pen_user, value = user_value_penalty(sc, n_users=args.val_users)
    rec["user_value"] = {"value_per_user": value, "penalty": pen_user}
    penalties = {"c40": 40.0, "user-value": pen_user}
    for recipe in args.recipes.split(","):
        cfg = PPOConfig(total_timesteps=args.timesteps, unsubscribe_penalty=penalties[recipe],
                        checkpoint_every=10**9)
        pols: dict[str, Any] = {}
        train: dict[str, Any] = {}
        seeds = dict(kv.split("=", 1) for kv in args.recipe_seeds).get(recipe, args.seeds)
        for s in (int(x) for x in seeds.split(",")):
            print(f"[{time.strftime('%H:%M:%S')}] {name} {recipe} seed {s}", file=sys.stderr,
                  flush=True)
            target = w / "policies" / f"ppo-{recipe}-s{s}"
            if (target / "v1" / "card.json").exists():  # a finished run of an earlier call
                card = json.loads((target / "v1" / "card.json").read_text())
                pols[f"s{s}"] = load_policy(target / "v1")
                train[f"s{s}"] = {"seconds": card["train/seconds"],
                                  "timesteps": card["timesteps"],
                                  "steps_per_second": card["train/steps_per_second"],
                                  "artifact": str(target / "v1"), "reused": True}
                continue
            r = train_timing(scen, out=target, seed=s, config=cfg,
                             run_dir=w / "runs" / f"{recipe}-s{s}", evaluate=False)
            pols[f"s{s}"] = r.policy
            train[f"s{s}"] = {"seconds": round(r.seconds, 1), "timesteps": r.timesteps,
                              "steps_per_second": round(r.timesteps / max(r.seconds, 1e-9)),
                              "artifact": str(r.artifact), "load": os.getloadavg()}
        for path in args.transfer:
            # an agent trained on another (dev) world, offered to the selection as is
            pols[f"transfer:{Path(path).parent.name}@{Path(path).name}"] = load_policy(path)
        cands = with_sampling(pols)
        sel = select_timing(cands, sc, n_users=args.val_users)
        out: dict[str, Any] = {"penalty": penalties[recipe], "train": train,
                               "selection": sel.to_dict(),
                               "shipped": truth_row(sel.policy, ref, sc_truth, item,
                                                    args.eval_users)}
        if args.truth_all:
            out["candidates_truth"] = {n: truth_row(p, ref, sc_truth, item, args.eval_users)
                                       for n, p in cands.items()}
        rec[recipe] = out
        print(f"  -> shipped {sel.name}: {fmt(out['shipped'])}", file=sys.stderr, flush=True)
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    rec["load"] = os.getloadavg()
    return rec


def fmt(t: dict[str, Any]) -> str:
    return (f"{t['diff']:+.3f} [{t['lower']:+.3f}, {t['upper']:+.3f}] ({100 * t['rel']:+.1f}%, "
            f"[{100 * t['rel_lower']:+.1f}, {100 * t['rel_upper']:+.1f}])")


def table(recs: list[dict[str, Any]], recipes: list[str]) -> str:
    rows = ["| world | split | recipe (unsub weight) | shipped | objective vs heuristic, "
            "per user [95% CI] (rel) | unsub share learned / heuristic | sends/user/day "
            "learned / heuristic | best candidate on truth |", "|" + "---|" * 8]
    for r in recs:
        h = r["heuristic_truth"]
        for rc in recipes:
            if rc not in r:
                continue
            o = r[rc]
            t = o["shipped"]
            best = ""
            if o.get("candidates_truth"):
                n, b = max(o["candidates_truth"].items(), key=lambda kv: kv[1]["diff"])
                best = f"{n}: {100 * b['rel']:+.1f}%"
            rows.append(
                f"| {r['world']} | {r['split']} | {rc} ({o['penalty']:.1f}) "
                f"| {o['selection']['name']} | {fmt(t)} "
                f"| {100 * t['unsub_share']:.1f}% / {100 * h['unsub_share']:.1f}% "
                f"| {t['sends_per_user_day']:.2f} / {h['sends_per_user_day']:.2f} | {best} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default=",".join(DEV_WORLDS))
    ap.add_argument("--recipes", default="c40,user-value")
    ap.add_argument("--users", type=int, default=1000, help="logged users per world")
    ap.add_argument("--seed", type=int, default=0, help="seed of the logs")
    ap.add_argument("--seeds", default="0,1", help="PPO seeds per recipe")
    ap.add_argument("--recipe-seeds", action="append", default=[],
                    help="RECIPE=SEEDS to override --seeds for one recipe (repeatable)")
    ap.add_argument("--timesteps", type=int, default=600_000, help="PPO steps per seed")
    ap.add_argument("--transfer", action="append", default=[],
                    help="a PPO artifact trained elsewhere, added to every selection "
                         "(repeatable; e.g. policies/ppo-timing/v2, trained on the default "
                         "world)")
    ap.add_argument("--val-users", type=int, default=1000)
    ap.add_argument("--eval-users", type=int, default=2000)
    ap.add_argument("--truth-all", action=argparse.BooleanOptionalAction, default=True,
                    help="also score every candidate on the truth (diagnostics)")
    ap.add_argument("--out", default="out/timing_gen")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.worlds.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise SystemExit(f"unknown world(s) {unknown}; known: {', '.join(WORLDS)}")
    held = [n for n in names if n in HELDOUT_WORLDS]
    if held:
        print(f"held-out worlds {held}: run once, change nothing after", file=sys.stderr)
    recipes = args.recipes.split(",")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    recs: list[dict[str, Any]] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        recs.append(world_loop(name, args))
        (out / "timing_generalization.json").write_text(
            json.dumps({"settings": settings, "worlds": recs}, indent=2, default=float))
    if args.json:
        print(json.dumps({"settings": settings, "worlds": recs}, indent=2, default=float))
    else:
        print(f"settings: {settings}\n")
        print(table(recs, recipes))



if __name__ == "__main__":
    main()
