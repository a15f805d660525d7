"""Power and false-pass rate of the item deployment gate, on replicated logs (issue 13).

The served generalization run (``benchmarks/results/generalization_served.md``) had the gate
block the VW item bandit on four of five worlds although it is +76-254 % better than
most-popular on the true world. This benchmark measures, per world:

1. **Real held-out logs** (what the unforced loop sees): ``pushrl evaluate`` of the world's VW
   artifact on its held-out logs (:func:`pushrl.ope.evaluate.evaluate_policy`, the CLI's code
   path) with the gate BEFORE (``DeploymentGate()``: DR, two-sided 95 % bootstrap, floor
   ``max(100, 0.01 n)``) and AFTER (the item gate's new default, ``ITEM_GATE`` in
   :mod:`pushrl.ope.evaluate_item`), against the logger and against most-popular fitted on
   the world's training logs; pass/fail, the interval and the true improvement.
2. **Replicated logs** (semi-synthetic, fixed seeds): the held-out log's contexts are kept,
   and each replication redraws the logged item from the world's logging policy and the
   outcomes (open, click | open, conversion | click, revenue = price) from the world's TRUE
   probabilities (:class:`pushrl.train.vw_online.TrueWorldSource`); the reward model is
   cross-fitted again on every replication. The truth of a candidate is its exact expected
   reward over those contexts (the bandit estimand). Candidates: ``vw`` and ``most-popular``
   (truly better than the logger; VW truly better than most-popular) and two deterministic
   candidates that are NOT better by construction (they read the truth): ``null-below``
   picks, on every round, the item with the largest true reward *strictly below* the
   baseline's true reward there (slightly worse on every round), ``null-random`` a fixed
   random item per round (the logger's value up to chance; counted as a null only where its
   truth is not above the baseline's). A pass of a null candidate is a false pass.

Loggers: uniform (default, commuter) and eps-greedy (night-owls, fatigue-heavy: the greedy
item of each hourly slot is recovered from the rows logged with the greedy propensity and
carried forward to slots without such a row). The Thompson logger of taste-clicks cannot be
reconstructed from the logged propensities (only the logged item's probability is stored), so
taste-clicks has the real-log part only.

Setup per world (``--out``, reused when present): ``pushrl data synth --world W`` 1000 users x
28 days seed 0 (training) and 500 users seed 1000 (held out), ``pushrl init``, ``pushrl train
bandit --scenario`` (the same commands and sizes as ``benchmarks/generalization.py``).

    python benchmarks/gate_power.py [--worlds ...] [--replications 100] [--out out/gp]
        [--json benchmarks/results/gate_power.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.validate import load_dataset
from pushrl.data.worlds import DEV_WORLDS, HELDOUT_WORLDS
from pushrl.ope import make_estimator
from pushrl.ope._common import ResolvedPolicy
from pushrl.ope.evaluate import evaluate_policy
from pushrl.ope.evaluate_item import ITEM_GATE, _item_inputs, crossfit_item_rewards
from pushrl.ope.gate import DeploymentGate
from pushrl.policies.item_baselines import MostPopular
from pushrl.policies.registry import load_policy
from pushrl.rules.reward import RewardWeights, item_reward, realised
from pushrl.train.vw_online import TrueWorldSource

BEFORE = DeploymentGate()
GATES: dict[str, DeploymentGate] = {"before": BEFORE, "after": ITEM_GATE}
#: Variants measured on the replicated logs only (what each change does on its own).
VARIANTS: dict[str, DeploymentGate] = {
    **GATES,
    "after-sndr": replace(ITEM_GATE, estimator=make_estimator("sndr")),
    "two-sided+support": replace(ITEM_GATE, one_sided=False),
}


def pushrl(*args: str) -> None:
    """``pushrl ARGS`` as a user would type it (output discarded, failure fatal)."""
    res = subprocess.run([sys.executable, "-m", "pushrl.cli.main", *args], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"`pushrl {' '.join(args)}` failed:\n{res.stderr[-2000:]}")


def prepare(world: str, out: Path) -> Path:
    """Training logs, held-out logs, init and the VW bandit of ``world`` (reused if present)."""
    d = out / world
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "logs").exists():
        pushrl("data", "synth", "--world", world, "--users", "1000", "--days", "28", "--seed",
               "0", "--out", str(d / "logs"))
    if not (d / "held").exists():
        pushrl("data", "synth", "--world", world, "--users", "500", "--days", "28", "--seed",
               "1000", "--out", str(d / "held"))
    if not (d / "init" / "scenario.toml").exists():
        pushrl("init", str(d / "logs"), "--out", str(d / "init"))
    if not (d / "vw" / "v1").exists():
        pushrl("train", "bandit", "--scenario", str(d / "init" / "scenario.toml"), "--out",
               str(d / "vw"), "--seed", "0")
    return d


@dataclass
class World:
    """One world's held-out rounds, policies and true outcome probabilities."""

    name: str
    reward: RewardWeights
    vw: ResolvedPolicy
    popular: ResolvedPolicy
    held: Any
    rounds: Any
    dists: dict[str, np.ndarray]  # (n, k) per candidate
    p_open: np.ndarray
    p_click: np.ndarray
    p_conv: np.ndarray
    price: np.ndarray
    value: np.ndarray  # (n, k) true expected reward
    logger: np.ndarray | None  # (n, k) logging distribution, None when not recoverable


def _logger_dist(name: str, ds: Any, rounds: Any) -> np.ndarray | None:
    n, k = np.asarray(rounds.context.candidates).shape
    p = np.asarray(rounds.pscore, np.float64)
    if np.allclose(p, 1.0 / k):
        return np.full((n, k), 1.0 / k)
    eps = float(np.round(p.min() * k, 6))
    greedy_p = eps / k + (1.0 - eps)
    if not np.all(np.isclose(p, p.min()) | np.isclose(p, greedy_p)):
        return None  # not eps-greedy (Thompson): the slot's distribution is not stored
    ts = ds.pushes["ts"].to_numpy()[rounds.row]
    order = np.argsort(ts, kind="stable")
    dist = np.full((n, k), eps / k)
    greedy, last_ts, current = -1, None, -1
    slot_greedy: dict[Any, int] = {}
    for i in order[np.isclose(p[order], greedy_p)]:
        slot_greedy.setdefault(ts[i], int(rounds.action[i]))
    for i in order:
        if ts[i] != last_ts:
            last_ts = ts[i]
            current = slot_greedy.get(ts[i], greedy)
            greedy = current
        if current < 0:
            return None
        dist[i, current] += 1.0 - eps
    return dist


def load_world(name: str, d: Path) -> World:
    """Everything the replications need, from the prepared directory ``d``."""
    held, _ = load_dataset(d / "held", quarantine=False)
    logs, _ = load_dataset(d / "logs", quarantine=False)
    vw_art = d / "vw" / "v1"
    card = json.loads((vw_art / "card.json").read_text())
    rs = item_reward(card["reward"])
    vw = ResolvedPolicy(load_policy(vw_art), str(vw_art), "artifact", card, vw_art)
    mp = ResolvedPolicy(MostPopular.fit(logs, reward=rs), "most-popular (training logs)",
                        "object")
    inp = _item_inputs(held, vw, mp, rs, 0, None)
    r = inp.rounds
    src = TrueWorldSource(d / "held", reward=rs)
    if not np.array_equal(src.rounds.row, r.row):
        raise SystemExit(f"{name}: truth rounds and VW rounds differ")
    p_open, p_click, p_conv, value = src.expected_reward(np.arange(r.n_rounds))
    cand = np.asarray(r.context.candidates)
    price = np.asarray(src.world.price)[src.items[cand]]
    logger = _logger_dist(name, held, r)
    dists = {"vw": inp.candidate[:, :, 0], "most-popular": inp.baseline[:, :, 0]}
    return World(name, rs, vw, mp, held, r, dists, p_open, p_click, p_conv, price, value, logger)


def _below(value: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Deterministic: per round the item with the largest true reward strictly below
    ``ref`` (the smallest-reward item when none is below)."""
    masked = np.where(value < ref[:, None] - 1e-12, value, -np.inf)
    pick = np.where(np.isfinite(masked.max(axis=1)), masked.argmax(axis=1), value.argmin(axis=1))
    return np.eye(value.shape[1])[pick]


def nulls(w: World, baseline: str) -> dict[str, np.ndarray]:
    """The not-better candidates vs ``baseline`` (``logger`` or ``most-popular``)."""
    assert w.logger is not None
    ref = ((w.logger if baseline == "logger" else w.dists["most-popular"]) * w.value).sum(1)
    rng = np.random.default_rng(12345)
    rand = np.eye(w.value.shape[1])[rng.integers(0, w.value.shape[1], w.value.shape[0])]
    return {"null-below": _below(w.value, ref), "null-random": rand}


def draw(w: World, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One replicated log: ``(action, pscore, reward)`` over the held-out contexts."""
    assert w.logger is not None
    rng = np.random.default_rng(seed)
    n = w.value.shape[0]
    cdf = np.cumsum(w.logger, axis=1)
    a = np.minimum((cdf < rng.random(n)[:, None] * cdf[:, -1:]).sum(axis=1), cdf.shape[1] - 1)
    rows = np.arange(n)
    u = rng.random((n, 3))
    opened = u[:, 0] < w.p_open[rows, a]
    clicked = opened & (u[:, 1] < w.p_click[rows, a])
    conv = clicked & (u[:, 2] < w.p_conv[rows, a])
    r = realised(w.reward, delivered=0, opened=opened, clicked=clicked,
                 revenue=np.where(conv, w.price[rows, a], 0.0), unsubscribed=0, converted=conv)
    return a, w.logger[rows, a], r


def replicate(w: World, replications: int, n_bootstrap: int) -> dict[str, Any]:
    """Pass rates of every (gate, baseline, candidate) over ``replications`` logs."""
    truth_log = (w.logger * w.value).sum(1).mean()
    cands = {"logger": {"vw": w.dists["vw"], "most-popular": w.dists["most-popular"],
                        **nulls(w, "logger")},
             "most-popular": {"vw": w.dists["vw"], **nulls(w, "most-popular")}}
    truth = {b: {c: float((d * w.value).sum(1).mean()
                          - (truth_log if b == "logger"
                             else (w.dists["most-popular"] * w.value).sum(1).mean()))
                 for c, d in cs.items()} for b, cs in cands.items()}
    passes: dict[str, int] = {}
    lowers: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for s in range(replications):
        a, ps, r = draw(w, 10_000 + s)
        q = crossfit_item_rewards(w.rounds.context, a, r, None, 1, seed=s)
        for b, cs in cands.items():
            base = None if b == "logger" else w.dists["most-popular"][:, :, None]
            for c, d in cs.items():
                for g, gate in VARIANTS.items():
                    res = replace(gate, n_bootstrap_samples=n_bootstrap).evaluate(
                        r, a, ps, d[:, :, None], base, None, q, random_state=s)
                    key = f"{g}|{b}|{c}"
                    passes[key] = passes.get(key, 0) + int(res.passed)
                    lowers.setdefault(key, []).append(res.comparison.lower)
    rows = []
    for key, k in passes.items():
        g, b, c = key.split("|")
        rate = k / replications
        se = float(np.sqrt(max(rate * (1 - rate), 1e-12) / replications))
        rows.append({"world": w.name, "gate": g, "baseline": b, "candidate": c,
                     "truth_improvement": truth[b][c], "better": truth[b][c] > 0,
                     "pass_rate": rate, "pass_rate_se": se, "replications": replications,
                     "median_lower": float(np.median(lowers[key]))})
    return {"rows": rows, "seconds": round(time.perf_counter() - t0, 1),
            "truth_logger": float(truth_log)}


def real(w: World, seed: int = 0) -> list[dict[str, Any]]:
    """The real held-out log through ``evaluate_policy`` (the CLI's path), before and after."""
    out = []
    truth_log = float(w.value[np.arange(w.value.shape[0]), w.rounds.action].mean())
    truth = {"vw": float((w.dists["vw"] * w.value).sum(1).mean()),
             "most-popular": float((w.dists["most-popular"] * w.value).sum(1).mean())}
    for b in ("logger", "most-popular"):
        for g, gate in GATES.items():
            res = evaluate_policy(w.held, w.vw, None if b == "logger" else w.popular,
                                  estimators=["dr", "sndr"], n_bootstrap=1000, seed=seed,
                                  gate=gate, gate_estimator=gate.estimator.estimator_name)
            c = res.gate.comparison
            out.append({"world": w.name, "gate": g, "baseline": b,
                        "passed": res.gate.passed, "failed_rules": list(res.gate.failed_rules),
                        "estimate": c.difference, "lower": c.lower, "upper": c.upper,
                        "interval_alpha": c.alpha, "ess": res.gate.diagnostics.ess,
                        "ess_floor": res.gate.ess_floor, "support_ess": res.gate.support_ess,
                        "n_rounds": res.data["n_rounds"],
                        "truth_improvement": truth["vw"] - (truth_log if b == "logger"
                                                            else truth["most-popular"])})
    return out


def markdown(result: dict[str, Any]) -> str:
    """The two tables of ``benchmarks/results/gate_power.md``."""
    lines = ["| world | baseline | gate | verdict (failed rules) | improvement [interval] | "
             "true improvement | ESS / floor (support ESS) |", "|" + "---|" * 7]
    for r in result["real"]:
        verdict = "pass" if r["passed"] else f"block ({', '.join(r['failed_rules'])})"
        lvl = (1 - r["interval_alpha"]) * 100
        lines.append(f"| {r['world']} | {r['baseline']} | {r['gate']} | {verdict} | "
                     f"{r['estimate']:+.4f} [{r['lower']:+.4f}, {r['upper']:+.4f}] ({lvl:g} %) | "
                     f"{r['truth_improvement']:+.4f} | {r['ess']:.0f} / {r['ess_floor']:.0f} "
                     f"({r['support_ess']:.0f}) |")
    lines += ["", "| world | baseline | candidate | true improvement | gate | pass rate "
              "(± se) | median lower bound |", "|" + "---|" * 7]
    for r in sorted(result["replicated"], key=lambda r: (r["world"], r["baseline"],
                                                        r["candidate"], r["gate"])):
        lines.append(f"| {r['world']} | {r['baseline']} | {r['candidate']} | "
                     f"{r['truth_improvement']:+.4f} ({'better' if r['better'] else 'NOT better'})"
                     f" | {r['gate']} | {r['pass_rate']:.2f} ± {r['pass_rate_se']:.2f} | "
                     f"{r['median_lower']:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default=",".join((*DEV_WORLDS, *HELDOUT_WORLDS)))
    ap.add_argument("--replications", type=int, default=100)
    ap.add_argument("--n-bootstrap", type=int, default=200, help="per replicated gate call")
    ap.add_argument("--no-real", action="store_true", help="skip the real-log evaluations")
    ap.add_argument("--out", default="out/gp")
    ap.add_argument("--json", default=None, help="write everything to this JSON file")
    args = ap.parse_args()
    result: dict[str, Any] = {"real": [], "replicated": [], "seconds": {},
                              "gates": {g: {"estimator": v.estimator.estimator_name,
                                            "alpha": v.alpha, "one_sided": v.one_sided,
                                            "min_ess": v.min_ess,
                                            "min_ess_fraction": v.min_ess_fraction,
                                            "min_ess_support_fraction":
                                                v.min_ess_support_fraction,
                                            "method": v.method} for g, v in GATES.items()}}
    for name in args.worlds.split(","):
        d = prepare(name, Path(args.out))
        w = load_world(name, d)
        if not args.no_real:
            result["real"] += real(w)
        if w.logger is not None and args.replications > 0:
            rep = replicate(w, args.replications, args.n_bootstrap)
            result["replicated"] += rep["rows"]
            result["seconds"][name] = rep["seconds"]
        print(f"{name} done {time.strftime('%H:%M:%S')} load {os.getloadavg()}", flush=True)
    result["load"] = os.getloadavg()
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
