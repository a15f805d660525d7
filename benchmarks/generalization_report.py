"""Issue 13's table from the per-world results of ``benchmarks/generalization.py --served``.

Usage: python benchmarks/generalization_report.py [--out out/gen_final]
       [--worlds taste-clicks,fatigue-heavy,default,commuter,night-owls]
       [--md benchmarks/results/generalization_served_final.md]
       [--json benchmarks/results/generalization_served_final.json] [--header FILE]

Reads ``OUT/W/result.json`` and the steps it cached (``OUT/W/steps/*.json``: init, bandit,
gates, selection) and writes the tables: served shipped policies vs the same-information
heuristic, the gates' decisions with what the held-out data would need to pass, the batch
diagnostic of the trained (gate-ignoring) policies, simulator fidelity and onboarding wall
time. Computes nothing new: every figure is a measured one or arithmetic on them (stated).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from pushrl.data.worlds import HELDOUT_WORLDS

Z_ONE_SIDED_95 = 1.6448536269514722  # the item gate: one-sided 95 % (two-sided 90 % interval)
Z_TWO_SIDED_95 = 1.959963984540054  # the timing gate: lower bound of the two-sided 95 %


def _pct(d: dict[str, float]) -> str:
    return (f"{d['diff']:+.3f} [{d['lower']:+.3f}, {d['upper']:+.3f}] "
            f"({100 * d['rel']:+.1f} %, low {100 * d['rel_lower']:+.1f} %)")


def _pp(d: dict[str, float]) -> str:
    return f"{100 * d['diff']:+.1f} pp [{100 * d['lower']:+.1f}, {100 * d['upper']:+.1f}]"


def gate_need(g: dict[str, Any], z: float) -> dict[str, Any]:
    """The held-out users the gate's improvement rule would need to pass, if the measured
    effect and its standard error held and the SE shrank as 1/sqrt(users):
    ``n * (z * se / effect)^2``; ``se`` from the interval's width (``(upper - lower) /
    (2 z)``). The ESS rule does not change with size: the ESS and its floor (a share of the
    support ESS, itself ~ rounds / K) both grow in proportion to the rounds."""
    comp = g["gate"]["comparison"]
    diff, lo, up = comp["difference"], comp["lower"], comp["upper"]
    se = (up - lo) / (2 * z)
    n = g["data"]["split"]["n_users"]
    need = n * (z * se / diff) ** 2 if diff > 0 else math.inf
    return {"n_heldout_users": n, "se": se, "users_needed": need,
            "log_users_needed_at_frac": need / g["data"]["split"]["holdout_frac"]}


def load(out: Path, world: str) -> dict[str, Any]:
    w = out / world
    r: dict[str, Any] = json.loads((w / "result.json").read_text())
    steps = {f.stem: json.loads(f.read_text()) for f in (w / "steps").glob("*.json")}
    r["_steps"] = steps
    return r


def gate_row(r: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    st = r["_steps"]
    gb = st["gate_bandit"]
    gp = next(v for k, v in st.items() if k.startswith("gate_ppo"))
    out: dict[str, Any] = {}
    cells = []
    for key, g, z in (("vw", gb, Z_ONE_SIDED_95), ("ppo", gp, Z_TWO_SIDED_95)):
        gate, comp, diag = g["gate"], g["gate"]["comparison"], g["gate"]["diagnostics"]
        need = gate_need(g, z)
        out[key] = {"passed": g["_exit"] == 0, "failed_rules": gate["failed_rules"],
                    "estimator": comp["estimator_name"], "difference": comp["difference"],
                    "lower": comp["lower"], "upper": comp["upper"],
                    "interval_alpha": comp["alpha"], "ess": diag["ess"],
                    "ess_floor": gate["ess_floor"], "support_ess": gate.get("support_ess"),
                    "n_rounds": diag["n_rounds"], **need}
        verdict = "PASS" if g["_exit"] == 0 else "BLOCK (" + ", ".join(gate["failed_rules"]) + ")"
        rules = set(gate["failed_rules"])
        need_s = ""
        if "improvement_lower_bound" in rules:
            need_s += (f"; improvement rule would pass at ~{need['users_needed']:,.0f} held-out "
                       f"users ({need['n_heldout_users']} here)" if math.isfinite(
                           need["users_needed"]) else "; estimate <= 0: no size passes")
        if "ess_floor" in rules:
            sup = gate.get("support_ess")
            need_s += (f"; ESS / support ESS = {diag['ess'] / sup:.2f} < "
                       f"{gate['ess_floor'] / sup:.2f}: no held-out size passes (both grow "
                       "with the rounds)" if sup else "")
        cells.append(f"{verdict}: {comp['estimator_name'].upper()} {comp['difference']:+.4f} "
                     f"[lower {comp['lower']:+.4f}], ESS {diag['ess']:.0f} vs floor "
                     f"{gate['ess_floor']:.0f}, {diag['n_rounds']:,} rounds{need_s}")
    return cells[0], cells[1], out


def onboarding(r: dict[str, Any]) -> dict[str, Any]:
    st = r["_steps"]
    ref = r["served"]["reference"]["timing"]
    parts = {"validate+fit+scenario (init)": st["init"]["_seconds"],
             "train bandit": st["bandit"]["_seconds"],
             "evaluate (item gate)": st["gate_bandit"]["_seconds"],
             "state import (served users)": ref["history"], "serve ready": ref["start"]}
    return {"parts": parts, "total": round(sum(parts.values()), 1),
            "decisions": st["synth"]["decisions"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/gen_final")
    ap.add_argument("--worlds", default="taste-clicks,fatigue-heavy,default,commuter,night-owls")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--header", default=None, help="markdown to put before the tables")
    ap.add_argument("--footer", default=None, help="markdown to put after the tables")
    args = ap.parse_args()
    out = Path(args.out)
    recs = [load(out, w) for w in args.worlds.split(",") if (out / w / "result.json").is_file()]
    md: list[str] = [Path(args.header).read_text()] if args.header else []
    js: dict[str, Any] = {"worlds": {}}

    md += ["## 1. Served, unforced: what the loop ships vs the same-information heuristic",
           "",
           "| world | split | shipped timing / item (why) | SERVED shipped vs heuristic, "
           "objective/user [95 % CI] | unsubscribed shipped / heuristic (diff [95 % CI]) | "
           "sends/user/day shipped / heuristic | bandit alone vs most-popular [95 % CI] | "
           "finished UTC (load 1/5/15) |",
           "|---|---|---|---|---|---|---|---|"]
    held: list[float] = []
    for r in recs:
        s, t, sh = r["served"], r["truth"], r["shipped"]
        if sh["item"] == "vw":
            bandit = f"{_pct(s['objective_bandit_vs_popular'])} served"
        else:
            bandit = (f"not shipped (served = +0); batch diagnostic, VW trained: "
                      f"{_pct(t['objective_bandit_vs_popular'])}")
        unsub_d = s.get("unsub_learned_minus_heuristic")
        unsub = (f"{100 * s['unsub_learned']:.1f} % / {100 * s['unsub_heuristic']:.1f} %"
                 + (f" ({_pp(unsub_d)})" if unsub_d else ""))
        sends = s["sends_per_user_day"]
        la = r["load_avg_end"]
        md.append(f"| {r['world']} | {r['split']} | {sh['timing']} / {sh['item']} "
                  f"({sh['timing_why']}; item: {sh['item_why']}) "
                  f"| {_pct(s['objective_learned_vs_heuristic'])} | {unsub} "
                  f"| {sends['learned']:.2f} / {sends['reference']:.2f} | {bandit} "
                  f"| {r['finished_utc'][11:16]} ({la[0]:.1f}, {la[1]:.1f}, {la[2]:.1f}) |")
        if r["world"] in HELDOUT_WORLDS:
            held.append(s["objective_learned_vs_heuristic"]["rel"])
        js["worlds"][r["world"]] = {k: r[k] for k in ("split", "shipped", "served", "truth",
                                                      "fidelity", "load_avg_end",
                                                      "finished_utc", "seconds")}
        js["worlds"][r["world"]]["settings"] = r["settings"]
        js["worlds"][r["world"]]["selection"] = {
            k: r["_steps"]["select"][k] for k in ("name", "artifact", "reason", "val_users")}
    if held:
        js["heldout_mean_rel_served"] = sum(held) / len(held)
        mean = 100 * sum(held) / len(held)
        md += ["", f"Held-out mean (served, shipped vs heuristic): **{mean:+.1f} %** over "
               f"{len(held)} held-out world(s)."]

    md += ["", "## 2. The gates on each world's held-out users (`pushrl evaluate`, defaults)", "",
           "VW: item gate `ITEM_GATE` (DR vs the logging policy, one-sided 95 % lower bound = "
           "the two-sided 90 % interval's, ESS floor = min(max(100, 1 % n), half the support "
           "ESS)). PPO: timing gate (WDR vs the logging policy per user-day, two-sided 95 % "
           "lower bound, ESS floor). \"Would pass at\": held-out users at which the measured "
           "effect's lower bound would clear 0 if the effect and SE held (SE ~ 1/sqrt(n)); the "
           "ESS rule does not change with size (ESS and floor both grow with the rounds).", "",
           "| world | split | VW gate | PPO gate (the trained agent) | timing selection |",
           "|---|---|---|---|---|"]
    for r in recs:
        vw, ppo, g = gate_row(r)
        js["worlds"][r["world"]]["gates"] = g
        reason = r["_steps"]["select"]["reason"]
        md.append(f"| {r['world']} | {r['split']} | {vw} | {ppo} | {reason} |")

    md += ["", "## 3. Batch rollout scored by the truth (3000 users x 28 days): the trained "
           "policies whatever the gate said (diagnostic, \"forced\") and what shipped", "",
           "| world | split | TRAINED timing+VW vs heuristic [95 % CI] (unsub diff) | "
           "SHIPPED vs heuristic [95 % CI] (unsub diff) | VW alone vs most-popular [95 % CI] | "
           "served - batch objective/user: reference / shipped [95 % CI] |",
           "|---|---|---|---|---|---|"]
    for r in recs:
        t, sk = r["truth"], r["served"]["served_minus_batch"]
        md.append(f"| {r['world']} | {r['split']} | {_pct(t['objective_learned_vs_heuristic'])} "
                  f"({_pp(t['unsub_learned_minus_heuristic'])}) "
                  f"| {_pct(t['objective_shipped_vs_heuristic'])} "
                  f"({_pp(t['unsub_shipped_minus_heuristic'])}) "
                  f"| {_pct(t['objective_bandit_vs_popular'])} "
                  f"| {sk['reference']['diff']:+.3f} [{sk['reference']['lower']:+.3f}, "
                  f"{sk['reference']['upper']:+.3f}] / {sk['learned']['diff']:+.3f} "
                  f"[{sk['learned']['lower']:+.3f}, {sk['learned']['upper']:+.3f}] |")

    diag = [(r, json.loads((out / r["world"] / "ppo_truth.json").read_text()))
            for r in recs if (out / r["world"] / "ppo_truth.json").is_file()]
    if diag:
        md += ["", "### The trained timing agent on the truth (diagnostic, whether it shipped "
               "or not; `benchmarks/generalization_ppo_truth.py`)", "",
               "Agent + VW vs most-active-hour + VW, batch rollout with the true response, "
               "same users and draws as section 3.", "",
               "| world | split | selection shipped | agent vs heuristic, objective/user [95 % CI]"
               " | unsubscribed share diff [95 % CI] | sends/user/day agent / heuristic |",
               "|---|---|---|---|---|---|"]
        for r, d in diag:
            o_, u_, s_ = d["objective"], d["unsubscribe_rate"], d["sends_per_user_day"]
            js["worlds"][r["world"]]["ppo_truth"] = d
            md.append(f"| {r['world']} | {r['split']} | {r['_steps']['select']['name']} "
                      f"| {o_['diff']:+.3f} [{o_['lower']:+.3f}, {o_['upper']:+.3f}] "
                      f"({100 * o_['diff'] / o_['heuristic']:+.1f} %) "
                      f"| {100 * u_['diff']:+.2f} pp [{100 * u_['lower']:+.2f}, "
                      f"{100 * u_['upper']:+.2f}] | {s_['agent']:.2f} / {s_['heuristic']:.2f} |")

    md += ["", "## 4. Simulator fidelity (`pushrl sim validate`, logged actions replayed on the "
           "training users)", "",
           "| world | split | open rate sim vs log, rel (z) | unsubscribe rate sim vs log, rel (z) "
           "| click model AUC, log-loss vs constant | met |", "|---|---|---|---|---|---|"]
    for r in recs:
        f = r["fidelity"]
        o, u, c = f["open_rate"], f["unsubscribe_rate"], f["click"]
        met = (abs(o["rel_error"]) <= 0.1 and abs(o["z"]) < 2 and abs(u["rel_error"]) <= 0.1
               and abs(u["z"]) < 2 and c["log_loss"] < c["log_loss_baseline"])
        md.append(f"| {r['world']} | {r['split']} | {o['rate_sim']:.4f} vs {o['rate_log']:.4f}, "
                  f"{100 * o['rel_error']:+.1f} % ({o['z']:+.1f}) | {u['rate_sim']:.5f} vs "
                  f"{u['rate_log']:.5f}, {100 * u['rel_error']:+.1f} % ({u['z']:+.1f}) | "
                  f"{c['auc']:.3f}, {c['log_loss']:.4f} vs {c['log_loss_baseline']:.4f} | "
                  f"{'yes' if met else 'NO'} |")

    md += ["", "## 5. Onboarding wall time per world (4000 users x 28 days log; PPO aside)", "",
           "| world | decisions in the log | init | train bandit | evaluate | state import "
           "(served users) + serve ready | total (s) |", "|---|---|---|---|---|---|---|"]
    for r in recs:
        ob = onboarding(r)
        js["worlds"][r["world"]]["onboarding"] = ob
        p = list(ob["parts"].values())
        md.append(f"| {r['world']} | {ob['decisions']:,} | {p[0]:.1f} | {p[1]:.1f} | "
                  f"{p[2]:.1f} | {p[3]:.1f} + {p[4]:.1f} | {ob['total']:.1f} |")
    if args.footer:
        md.append(Path(args.footer).read_text())
    text = "\n".join(md) + "\n"
    if args.md:
        Path(args.md).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(js, indent=2, default=str))
    print(text)


if __name__ == "__main__":
    main()
