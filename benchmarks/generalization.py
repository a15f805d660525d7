"""Benchmark (issue 13, item 8): the whole loop on every world of the zoo, scored by the truth.

Usage: python benchmarks/generalization.py [--worlds taste-clicks,fatigue-heavy] [--users 4000]
       [--holdout-frac 0.25] [--days 28] [--eval-users 1000] [--ppo-timesteps 1000000]
       [--out out/generalization] [--served [--history import|log|warm|none]] [--reuse] [--json]

Per world (``pushrl.data.worlds``; split ``dev`` / ``held-out`` as declared there), every step
as a team types it, with no hand edits and no ``--force``:

1. ``pushrl data synth --world W`` writes the world's log (``--users`` x ``--days``, seed
   ``--seed``; default 4000 x 28, the issue's reference log).
2. ``pushrl init LOG --holdout-frac F --out W/init`` (default objective): validate, split the
   users into training and held-out parts (``F`` = 0.25: ~3000 + ~1000), fit the simulator to
   the training users, write scenario.toml.
3. ``pushrl train bandit --scenario`` (VW, training users) and ``pushrl train timing
   --scenario`` (PPO, ``--ppo-timesteps`` in the fitted simulator, ``--ppo-seeds`` one run
   each), then the timing SELECTION (:func:`pushrl.train.select.select_timing`, the rule of
   ``train timing --select``; ``--val-users`` fitted-simulator validation users, never the
   truth): the best agent ships only if it beats most-active-hour there with a positive 95 %
   lower bound and its unsubscribe increase is shown below the non-inferiority margin
   (+0.5 pp: `UNSUBSCRIBE_MARGIN`); otherwise the heuristic timing ships (reason recorded).
4. ``pushrl evaluate --scenario`` of both on the scenario's HELD-OUT users with the gate's
   defaults (the item gate ``ITEM_GATE``, the timing gate): the verdict is recorded in the
   artifact's card, which ``pushrl policies promote`` reads. What SHIPS
   (:func:`shipped_policies`): the agent only if the selection shipped it and its gate passed;
   VW only if its gate passed; otherwise the server's default of that kind.
5. The policies are scored with the world's TRUE response: ``pushrl.compare`` with the init
   scenario and ``truth = true``, paired on the same users and counter-based random numbers
   (common random numbers), in the simulator's batch rollout: the TRAINED set (selected
   timing + VW, whatever the gate said: a diagnostic), the SHIPPED set, and the bandit alone,
   each vs the same-information heuristic (``most-active-hour``: each user's most active
   allowed local hour from the logged activity, daily cap, plus ``most-popular`` of the log).
   With ``--served`` the shipped sets are ALSO scored through the real server
   (:func:`pushrl.compare.served.drive`): ``pushrl serve`` runs as a process per policy set
   (reference: an empty registry, i.e. the server's defaults; learned: the selected agent (if
   any) and VW, each ``pushrl policies promote``d WITHOUT ``--force``, a refused promotion
   leaving the default active; bandit alone: VW promoted the same way; a set whose promoted
   artifacts equal an earlier set's is not served twice), the users' history is brought in
   (``--history``, default ``import``: ``pushrl state import``, each drawn user its own served
   copy), and every hour the server decides for every user, the world's true response is
   applied and posted back as feedback, and the hour's true activity is posted.
6. Simulator fidelity: ``pushrl sim validate`` replays the logging policy in the fitted
   simulator; open and unsubscribe rates vs the logs (relative error and z), and the click
   model's held-out AUC / log-loss vs the constant.

Prints one table (and ``--json`` everything). Do not tune anything on the held-out worlds.
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

from pushrl.compare.runner import compare
from pushrl.compare.stats import estimate, paired_difference
from pushrl.data.worlds import DEV_WORLDS, HELDOUT_WORLDS, WORLDS


def run(*args: str, expect: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """``pushrl ARGS --json`` as a user would type it; its JSON (and exit code)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pushrl.cli.main", *args, "--json"],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if res.returncode not in expect:
        raise SystemExit(f"`pushrl {' '.join(args)}` failed (exit {res.returncode}):\n"
                         f"{res.stderr[-3000:]}")
    if res.returncode == 2:  # a user error the CLI reports as one line (e.g. GateRefused)
        return {"_exit": 2, "error": res.stderr.strip().splitlines()[-1],
                "_seconds": round(time.perf_counter() - t0, 1)}
    out: dict[str, Any] = json.loads(res.stdout)
    out["_exit"] = res.returncode
    out["_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def paired(a: Any, ref: Any, metric: str, days: float) -> dict[str, float]:
    e = paired_difference(a, ref, metric, days=days)
    base = estimate(ref, metric, days=days).value
    return {"diff": e.value, "lower": e.lower, "upper": e.upper, "ref": base,
            "rel": e.value / abs(base) if base else float("nan"),
            "rel_lower": e.lower / abs(base) if base else float("nan")}


def shipped_policies(rec: dict[str, Any]) -> dict[str, Any]:
    """What the loop ships, as a team would decide it without hand edits: the timing agent
    only if the selection shipped it AND its OPE gate passed; the item bandit only if its gate
    passed. Anything else: the server's default of that kind (most-active-hour /
    most-popular of the server's own data)."""
    ppo_ok = bool(rec["select"]["artifact"]) and rec["gate_ppo"]["passed"]
    vw_ok = rec["gate_bandit"]["passed"]
    return {"timing": "ppo" if ppo_ok else "most-active-hour",
            "item": "vw" if vw_ok else "most-popular",
            "timing_why": ("selection shipped the agent and its gate passed" if ppo_ok else
                           "selection shipped the heuristic" if not rec["select"]["artifact"]
                           else "selection shipped the agent but its OPE gate blocked it: "
                           + ",".join(rec["gate_ppo"]["failed_rules"])),
            "item_why": ("gate passed" if vw_ok else "gate blocked VW: "
                         + ",".join(rec["gate_bandit"]["failed_rules"]))}


def served_loop(w: Path, rec: dict[str, Any], sc: str,
                args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference, learned and bandit-alone policy sets served through ``pushrl serve``.

    Every artifact is promoted as a team would, WITHOUT ``--force``: a refused promotion
    leaves the server's default of that kind active (recorded in ``promote``). A set whose
    promotions were all refused IS the reference (same server, same defaults, same users and
    draws), so it is not served twice: its frame is the reference's (difference exactly 0).
    """
    import shutil

    import pandas as pd

    from pushrl.compare.served import drive

    arts = {"ppo": Path(rec["ppo"]["artifact"]), "vw": Path(rec["bandit"]["artifact"])}
    ship = shipped_policies(rec)
    wanted = {"reference": (),
              "learned": (("ppo",) if rec["select"]["artifact"] else ()) + ("vw",),
              "bandit": ("vw",)}
    frames: dict[str, pd.DataFrame] = {}
    out: dict[str, Any] = {"history": args.history, "shipped": ship, "promote": {}}
    for key, names in wanted.items():
        reg = w / "served" / key
        shutil.rmtree(reg, ignore_errors=True)
        reg.mkdir(parents=True)
        active: list[str] = []
        for n in names:
            name = arts[n].parent.name  # an artifact's identity is its registry path
            shutil.copytree(arts[n], reg / name / arts[n].name)
            got_p = run("policies", "promote", name, "--registry", str(reg), expect=(0, 2))
            out["promote"].setdefault(key, {})[n] = (
                "promoted" if got_p["_exit"] == 0 else got_p.get("error", "refused"))
            if got_p["_exit"] == 0:
                active.append(n)
        out.setdefault("active", {})[key] = active
        twin = next((k for k, a in out["active"].items() if k != key and a == active), None)
        if twin is not None:  # the same promoted set was served already: same server run
            frames[key] = frames[twin]
            out[key] = {"seconds": 0.0, "same_as": twin}
            print(f"[{time.strftime('%H:%M:%S')}]   served {key}: promoted {active}, the "
                  f"same set as {twin}", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        # seed 0: the users and random numbers of `compare`'s first seed (the batch figures)
        got = drive(reg, sc, users=args.served_users, days=args.served_days, seed=0,
                    history=args.history, label=key, import_cache=w / "served" / "import")
        f = got.result.to_frame()
        f["seed"], f["user"] = 0, range(len(f))
        frames[key] = f
        out[key] = {"seconds": round(time.perf_counter() - t0, 1), "timing": got.timing,
                    "requests": got.requests, "served_blocked": got.served_blocked}
        if key == "reference":
            out["days"] = float(got.result.days)
        print(f"[{time.strftime('%H:%M:%S')}]   served {key}: {out[key]}", file=sys.stderr,
              flush=True)
    days = out["days"]
    lt, hv, hp = frames["learned"], frames["bandit"], frames["reference"]
    out.update({
        "objective_learned_vs_heuristic": paired(lt, hp, "objective", days),
        "unsub_learned_minus_heuristic": paired(lt, hp, "unsubscribe_rate", days),
        "unsub_heuristic": estimate(hp, "unsubscribe_rate", days=days).value,
        "unsub_learned": estimate(lt, "unsubscribe_rate", days=days).value,
        "objective_bandit_vs_popular": paired(hv, hp, "objective", days),
        "objective_per_user": {k: estimate(f, "objective", days=days).value
                               for k, f in frames.items()},
        "sends_per_user_day": {k: estimate(f, "sends_per_user_day", days=days).value
                               for k, f in frames.items()},
    })
    return out, frames


def cached(w: Path, key: str, reuse: bool, *args: str,
           expect: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """:func:`run`, its JSON kept in ``W/steps/KEY.json``; with ``reuse`` a kept one is
    returned instead of running again (``--reuse``: e.g. serve what an earlier run trained)."""
    f = w / "steps" / f"{key}.json"
    if reuse and f.is_file():
        out: dict[str, Any] = json.loads(f.read_text())
        return out
    out = run(*args, expect=expect)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(out, indent=2, default=str))
    return out


def select(w: Path, sc: str, trained: list[dict[str, Any]], reuse: bool,
           val_users: int) -> dict[str, Any]:
    """The timing selection (kept in ``W/steps/select.json``): every trained agent as its
    card serves it (argmax or sampled) vs most-active-hour on ``val_users`` fitted-simulator
    validation users. ``artifact`` is the agent to ship, None for the heuristic."""
    from pushrl.policies.registry import load_policy
    from pushrl.train.select import explain, select_timing

    f = w / "steps" / "select.json"
    if reuse and f.is_file():
        kept: dict[str, Any] = json.loads(f.read_text())
        if kept.get("val_users") == val_users and kept.get("candidates") == [
                t["artifact"] for t in trained]:
            return kept
    t0 = time.perf_counter()
    cands = {f"ppo-s{t['seed']}": load_policy(t["artifact"]) for t in trained}
    sel = select_timing(cands, sc, n_users=val_users)
    art = {f"ppo-s{t['seed']}": t["artifact"] for t in trained}.get(sel.name)
    reason = explain(sel, val_users)
    out = {"val_users": val_users, "candidates": [t["artifact"] for t in trained],
           "name": sel.name, "artifact": art, "reason": reason, "selection": sel.to_dict(),
           "_seconds": round(time.perf_counter() - t0, 1)}
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(out, indent=2, default=str))
    print(f"[{time.strftime('%H:%M:%S')}]   selection: {reason}", file=sys.stderr, flush=True)
    return out


def gate_summary(g: dict[str, Any]) -> dict[str, Any]:
    """The gate's verdict from ``pushrl evaluate --json``: passed, failed rules, the paired
    improvement (estimate and the lower bound the rule tests), ESS vs its floor, rounds."""
    gate = g["gate"]
    comp = gate.get("comparison") or {}
    diag = gate.get("diagnostics") or {}
    data = g.get("data") or {}
    return {"passed": g["_exit"] == 0, "failed_rules": list(gate.get("failed_rules", [])),
            "messages": list(gate.get("messages", [])),
            "estimator": g.get("gate_estimator") or comp.get("estimator_name"),
            "improvement": comp.get("difference"), "lower": comp.get("lower"),
            "upper": comp.get("upper"), "alpha": comp.get("alpha"),
            "one_sided": gate.get("one_sided"), "ess": diag.get("ess"),
            "ess_floor": gate.get("ess_floor"), "support_ess": gate.get("support_ess"),
            "n_rounds": data.get("n_rounds", diag.get("n_rounds")), "split": data.get("split"),
            "seconds": g.get("_seconds")}


def world_loop(name: str, args: argparse.Namespace) -> dict[str, Any]:
    w = Path(args.out) / name
    data, init = w / "data", w / "init"
    rec: dict[str, Any] = {"world": name, "split": "dev" if name in DEV_WORLDS else "held-out"}
    t0 = time.perf_counter()
    size = ["--users", str(args.users), "--days", str(args.days)]
    re = args.reuse
    cached(w, "synth", re, "data", "synth", "--world", name, *size, "--seed", str(args.seed),
           "--out", str(data))
    # one log per world, split by `pushrl init` into training and held-out users (what a
    # company does with its own log): every training stage reads the training users, the
    # gate (`pushrl evaluate`) the held-out ones
    rec["init"] = cached(w, "init", re, "init", str(data), "--out", str(init),
                         "--holdout-frac", str(args.holdout_frac))
    sc = rec["init"]["scenario"]
    vw, ppo = w / "policies" / "vw", w / "policies" / "ppo"
    rec["bandit"] = cached(w, "bandit", re, "train", "bandit", "--scenario", sc, "--out",
                           str(vw), "--seed", str(args.seed))
    trained = []
    for s in (int(x) for x in args.ppo_seeds.split(",")):
        key = f"ppo-s{s}"
        print(f"[{time.strftime('%H:%M:%S')}]   train timing seed {s}", file=sys.stderr,
              flush=True)
        trained.append(cached(w, key, re, "train", "timing", "--scenario", sc, "--timesteps",
                              str(args.ppo_timesteps), "--seed", str(s), "--out",
                              str(ppo.parent / key), "--run-dir", str(w / "runs" / key)))
    rec["ppo_runs"] = trained
    rec["select"] = select(w, sc, trained, re, args.val_users)
    # the gate judges the shipped agent (the first one when the heuristic shipped)
    rec["ppo"] = next((t for t in trained if t["artifact"] == rec["select"]["artifact"]),
                      trained[0])
    gate_ppo = f"gate_{Path(rec['ppo']['artifact']).parent.name}"
    for key, art in (("gate_bandit", rec["bandit"]["artifact"]),
                     ("gate_ppo", rec["ppo"]["artifact"])):
        # as a team types it: the scenario's held-out users, the gate's default settings;
        # the verdict is recorded in the artifact's card, which `policies promote` reads
        g = cached(w, gate_ppo if key == "gate_ppo" else key, re, "evaluate", "--policy", art,
                   "--scenario", sc, "--out", str(w / "ope" / key), expect=(0, 1))
        rec[key] = gate_summary(g)
    fid = cached(w, "fidelity", re, "sim", "validate", str(init / "sim"), str(data),
                 expect=(0, 1))
    ov, click = fid["replay"]["overall"], fid["components"]["click"]
    rec["fidelity"] = {k: {m: ov[k][m] for m in ("rate_log", "rate_sim", "rel_error", "z")}
                       for k in ("open_rate", "unsubscribe_rate")}
    rec["fidelity"]["click"] = {m: click.get(m) for m in ("auc", "log_loss",
                                                          "log_loss_baseline")}
    # scored by the truth, same users and random numbers for every run
    popular = f"most-popular:data={data.resolve()}"
    kw: dict[str, Any] = {"scenario": sc, "users": args.eval_users, "days": args.eval_days,
                          "overrides": {"truth": True}}
    frames: dict[str, Any] = {}
    if args.prepare_only:
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        return rec
    ship = shipped_policies(rec)
    rec["shipped"] = ship
    if args.served:
        rec["served"], frames = served_loop(w, rec, sc, args)
    sel_timing = rec["select"]["artifact"] or "most-active-hour"
    timing_of = {"ppo": sel_timing, "most-active-hour": "most-active-hour"}
    item_of = {"vw": rec["bandit"]["artifact"], "most-popular": popular}
    # (timing, item) of each batch set: trained = what was trained, whatever the gate said
    # (the forced diagnostic); shipped = what the unforced loop ships (the served sets')
    combos = {"trained": (sel_timing, item_of["vw"]),
              "bandit_trained": ("most-active-hour", item_of["vw"]),
              "reference": ("most-active-hour", popular),
              "shipped": (timing_of[ship["timing"]], item_of[ship["item"]]),
              "bandit_shipped": ("most-active-hour", item_of[ship["item"]])}

    def batch(users: int, n_days: int | None) -> tuple[dict[str, Any], float]:
        """Per-user frames of the batch rollout, one per set of ``combos`` (one ``compare``
        per item policy, every timing of that item policy in it: paired, same draws)."""
        k = {**kw, "users": users, "days": n_days}
        got: dict[str, Any] = {}
        days_ = 0.0
        for item in dict.fromkeys(i for _, i in combos.values()):
            timings = list(dict.fromkeys(t for t, i in combos.values() if i == item))
            res = compare([f"t{j}={t}" for j, t in enumerate(timings)], item_policy=item, **k)
            pu = res.per_user
            days_ = float(res.meta["days"])
            for key, (t, i) in combos.items():
                if i == item:
                    lab = f"t{timings.index(t)}"
                    got[key] = pu[pu.policy == lab].reset_index(drop=True)
        return got, days_

    bf, days = batch(args.eval_users, args.eval_days)
    lt, hp, hv = bf["trained"], bf["reference"], bf["bandit_trained"]
    st = bf["shipped"]
    rec["truth"] = {
        "users": args.eval_users, "days": days,
        "objective_learned_vs_heuristic": paired(lt, hp, "objective", days),
        "unsub_learned_minus_heuristic": paired(lt, hp, "unsubscribe_rate", days),
        "unsub_heuristic": estimate(hp, "unsubscribe_rate", days=days).value,
        "unsub_learned": estimate(lt, "unsubscribe_rate", days=days).value,
        "objective_bandit_vs_popular": paired(hv, hp, "objective", days),
        "objective_shipped_vs_heuristic": paired(st, hp, "objective", days),
        "unsub_shipped_minus_heuristic": paired(st, hp, "unsubscribe_rate", days),
        "unsub_shipped": estimate(st, "unsubscribe_rate", days=days).value,
        "sends_per_user_day": {"learned": estimate(lt, "sends_per_user_day", days=days).value,
                               "shipped": estimate(st, "sends_per_user_day", days=days).value,
                               "heuristic": estimate(hp, "sends_per_user_day",
                                                     days=days).value},
    }
    if frames:  # same users and draws: served - batch per user is the serving skew
        same = (args.served_users, args.served_days) == (args.eval_users, args.eval_days)
        sb, sdays = (bf, days) if same else batch(args.served_users, args.served_days)
        rec["served"]["served_minus_batch"] = {
            k: paired(frames[k], sb[b], "objective", sdays)
            for k, b in (("reference", "reference"), ("learned", "shipped"),
                         ("bandit", "bandit_shipped"))}
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def _ci(d: dict[str, float]) -> str:
    return (f"{d['diff']:+.3f} [{d['lower']:+.3f}, {d['upper']:+.3f}] "
            f"({100 * d['rel']:+.1f}%, low {100 * d['rel_lower']:+.1f}%)")


def table(recs: list[dict[str, Any]]) -> str:
    head = ("| world | split | SHIPPED vs heuristic: objective/user [95% CI] "
            "| TRAINED timing+VW vs heuristic (gate ignored: diagnostic) "
            "| unsub trained / heuristic | VW alone vs most-popular [95% CI] "
            "| gate VW / PPO | sim open rel (z) | sim unsub rel (z) | click AUC, LL vs const |")
    rows = [head, "|" + "---|" * 10]
    for r in recs:
        t, f = r["truth"], r["fidelity"]
        c = f["click"]
        gate = "/".join("pass" if r[k]["passed"] else "block" for k in ("gate_bandit",
                                                                         "gate_ppo"))
        rows.append(
            f"| {r['world']} | {r['split']} | {_ci(t['objective_shipped_vs_heuristic'])} "
            f"| {_ci(t['objective_learned_vs_heuristic'])} "
            f"| {100 * t['unsub_learned']:.1f}% / {100 * t['unsub_heuristic']:.1f}% "
            f"| {_ci(t['objective_bandit_vs_popular'])} | {gate} "
            f"| {100 * f['open_rate']['rel_error']:+.1f}% ({f['open_rate']['z']:+.1f}) "
            f"| {100 * f['unsubscribe_rate']['rel_error']:+.1f}% "
            f"({f['unsubscribe_rate']['z']:+.1f}) "
            f"| {c['auc']:.3f}, {c['log_loss']:.4f} vs {c['log_loss_baseline']:.4f} |")
    return "\n".join(rows)


def served_table(recs: list[dict[str, Any]]) -> str:
    """Served figures (through ``pushrl serve``) next to the batch rollout's."""
    head = ("| world | split | SERVED shipped vs heuristic [95% CI] | unsub shipped / heuristic "
            "| SERVED bandit alone (promoted unforced) vs most-popular [95% CI] | served - batch "
            "objective/user: reference / shipped / bandit [95% CI] |")
    rows = [head, "|" + "---|" * 6]
    for r in recs:
        s = r.get("served")
        if not s:
            continue
        skew = " / ".join(f"{d['diff']:+.3f} [{d['lower']:+.3f}, {d['upper']:+.3f}]"
                          for d in s["served_minus_batch"].values())
        rows.append(f"| {r['world']} | {r['split']} | {_ci(s['objective_learned_vs_heuristic'])} "
                    f"| {100 * s['unsub_learned']:.1f}% / {100 * s['unsub_heuristic']:.1f}% "
                    f"| {_ci(s['objective_bandit_vs_popular'])} | {skew} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default=",".join((*DEV_WORLDS, *HELDOUT_WORLDS)),
                    help="comma-separated world names (default: all)")
    ap.add_argument("--users", type=int, default=4000, help="logged users per world (the "
                    "issue's reference log: 4000 users x 28 days)")
    ap.add_argument("--holdout-frac", type=float, default=0.25, help="`pushrl init "
                    "--holdout-frac`: share of the log's users held out for the gate "
                    "(0.25: ~3000 training + ~1000 held-out users)")
    ap.add_argument("--days", type=int, default=28, help="logged days")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-users", type=int, default=1000, help="users scored by the truth")
    ap.add_argument("--eval-days", type=int, default=None, help="days scored (default: the "
                                                                "scenario's horizon)")
    ap.add_argument("--ppo-timesteps", type=int, default=1_000_000)
    ap.add_argument("--ppo-seeds", default="0", help="PPO seeds per world (one run each; "
                    "the selection chooses among them and the heuristic)")
    ap.add_argument("--val-users", type=int, default=3000, help="fitted-simulator "
                    "validation users of the timing selection")
    ap.add_argument("--prepare-only", action="store_true", help="stop each world after "
                    "training, selection, gate and fidelity (fill the --reuse cache)")
    ap.add_argument("--out", default="out/generalization")
    ap.add_argument("--served-users", type=int, default=500, help="--served: users served "
                    "through the real server (the first of the batch rollout's users)")
    ap.add_argument("--served-days", type=int, default=None, help="--served: days served "
                    "(default: the scenario's horizon)")
    ap.add_argument("--served", action="store_true", help="also score through the real "
                    "server, hour by hour (pushrl.compare.served)")
    ap.add_argument("--history", default="import", choices=("import", "log", "warm", "none"),
                    help="--served: the users' past brought into the server (import: "
                    "`pushrl state import` of the whole log, pushes included; log: all "
                    "logged activity over HTTP; warm: its first 7 days, as the simulator's "
                    "warm start)")
    ap.add_argument("--reuse", action="store_true", help="reuse the steps an earlier run "
                    "left in --out (W/steps/*.json) instead of running them again")
    ap.add_argument("--table-from-results", action="store_true", help="run nothing: print "
                    "the table of the worlds' OUT/W/result.json (each left by a finished "
                    "world, e.g. of runs for one world at a time)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.worlds.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise SystemExit(f"unknown world(s) {unknown}; known: {', '.join(WORLDS)}")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    recs = []
    for name in names:
        if args.table_from_results:
            got = json.loads((Path(args.out) / name / "result.json").read_text())
            settings = {"per_world": {**settings.get("per_world", {}),
                                      name: got.pop("settings")}}
            recs.append(got)
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        recs.append(world_loop(name, args))
        recs[-1]["load_avg_end"] = os.getloadavg()
        recs[-1]["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not args.prepare_only:
            (Path(args.out) / name / "result.json").write_text(
                json.dumps({"settings": settings, **recs[-1]}, indent=2, default=str))
        # after every world, so a long run leaves its finished worlds behind
        (Path(args.out) / "generalization.json").write_text(
            json.dumps({"settings": settings, "worlds": recs}, indent=2, default=str))
        if not args.prepare_only:
            print(table(recs[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if args.prepare_only:
        return
    if args.json:
        print(json.dumps({"settings": settings, "worlds": recs}, indent=2, default=str))
    else:
        print(f"settings: {settings}\n(this table: scored with each world's true response "
              "in the simulator's batch rollout; --served adds the server's below)\n")
        print(table(recs))
        if args.served:
            print(f"\nthrough the real server (pushrl serve, history={args.history}):\n")
            print(served_table(recs))


if __name__ == "__main__":
    main()
