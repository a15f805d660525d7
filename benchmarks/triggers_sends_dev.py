"""Development check of the learned delay policy's sends bound (issue #16 "no more sends").

    python benchmarks/triggers_sends_dev.py --seeds 4 5 6 [--rounds-cache-dir DIR]
                                            [--out benchmarks/results/triggers_sends_dev]

On DEVELOPMENT trigger worlds (their truth was seen while setting ``MATCH_RATIO``), per world:
the training users' delay rounds (``benchmarks/triggers.py``'s split: 30 % held-out users,
split seed = world seed; ``DIR/rounds_sN.pkl`` reused when present, ``due`` recomputed),
``match_send_cost`` with its defaults, then the chosen policy on the held-out users valued by
the world's truth (incremental conversions, sends, unsubscribes vs fixed 1 h, paired 95 %
bootstrap CIs), and the bias the margin has to cover: the held-out truth sends ratio minus
the training log's SNIPW ``due`` and ``sent`` ratios at the chosen cost. Writes
``OUT.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.data.split import UserSplit
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.policies.baselines import make_baseline
from pushrl.policies.delay_data import delay_rounds, due_sends
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_metrics import ArmOutcomes, trigger_outcomes
from pushrl.sim.trigger_world import (
    TRUTH_FILE,
    WORLD_GUARDRAILS,
    WORLD_TRIGGERS,
    synthesize_triggers,
)
from pushrl.train.delay import match_send_cost

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the benchmark's one paired-CI definition
from triggers import _paired


def _world(seed: int, cache_dir: Path | None) -> tuple[dict, Path]:
    data = Path(f"/tmp/pushrl-triggers-2000x28-s{seed}")
    if not (data / TRUTH_FILE).exists():
        synthesize_triggers(data, world_config("triggers", users=2000, days=28, seed=seed))
    cfg = TriggerConfig.parse(WORLD_TRIGGERS)
    cache = None if cache_dir is None else cache_dir / f"rounds_s{seed}.pkl"
    parts = pickle.loads(cache.read_bytes()) if cache is not None and cache.exists() else {}
    for part in ("train", "heldout"):
        ds, _ = load_dataset(data, quarantine=False, split=UserSplit(0.3, seed, part))
        if part not in parts:
            parts[part] = delay_rounds(ds, cfg, WORLD_GUARDRAILS, unsub_cost=1.0)
        r = parts[part]  # older caches predate `due`: recompute it (the one definition)
        r.due = due_sends(ds, cfg, r.action, r.arms, r.context.extra["send_ts"])
    return parts, data


def run(seed: int, cache_dir: Path | None) -> dict:
    t0 = time.perf_counter()
    parts, data = _world(seed, cache_dir)
    tr, te = parts["train"], parts["heldout"]
    m = match_send_cost(tr, seed=seed)
    truth = pd.read_parquet(data / TRUTH_FILE).set_index("trigger_id")
    o = ArmOutcomes.from_truth(truth.loc[te.trigger_id].reset_index(), te.arms)
    mine = trigger_outcomes(m.policy.action_dist(te.context), o)
    base = trigger_outcomes(make_baseline("delay-fixed-1h").action_dist(te.context), o)
    rng = np.random.default_rng(seed)
    paired = {k: _paired(mine[k], base[k], te.user_id, rng)
              for k in ("incremental", "sends", "unsubscribes")}
    chosen = next(t for t in m.trials if t["send_cost"] == m.send_cost)
    truth_ratio = paired["sends"]["rel"] + 1
    return {"seed": seed, "send_cost": m.send_cost, "match": m.to_dict(), **paired,
            "bias_vs_due": truth_ratio - chosen["due_ratio"],
            "bias_vs_sent": truth_ratio - chosen["sends_ratio_snipw"],
            "seconds": time.perf_counter() - t0, "load_avg": os.getloadavg()}


def _ci(d: dict) -> str:
    return f"{d['rel']:+.1%} [{d['rel_lo']:+.1%}, {d['rel_hi']:+.1%}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[4, 5, 6])
    ap.add_argument("--rounds-cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/triggers_sends_dev"))
    a = ap.parse_args()
    runs = []
    for s in a.seeds:
        runs.append(run(s, a.rounds_cache_dir))
        print(f"seed {s}: {runs[-1]['seconds']:.0f} s, load {os.getloadavg()}", flush=True)
    a.out.with_suffix(".json").write_text(json.dumps({"seeds": a.seeds, "runs": runs},
                                                     indent=1) + "\n")
    lines = ["# Sends bound on DEVELOPMENT trigger worlds (" + ", ".join(map(str, a.seeds))
             + ")\n", "`python benchmarks/triggers_sends_dev.py --seeds "
             + " ".join(map(str, a.seeds)) + "`: `match_send_cost` defaults on the training "
             "users (70 %), truth on the held-out users. These worlds' truth was seen while "
             "setting the margin: development figures, not a test.\n",
             "| seed | send cost | bound (log) | incremental vs 1 h | sends | unsubscribes | "
             "truth - SNIPW due | truth - SNIPW sent | run (s) | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        b = next(t for t in r["match"]["trials"] if t["send_cost"] == r["send_cost"])
        lines.append(f"| {r['seed']} | {r['send_cost']:.4g} | {b['sends_ratio']:.3f} | "
                     f"{_ci(r['incremental'])} | {_ci(r['sends'])} | {_ci(r['unsubscribes'])} "
                     f"| {r['bias_vs_due']:+.2%} | {r['bias_vs_sent']:+.2%} | "
                     f"{r['seconds']:.0f} | {r['load_avg'][0]:.1f} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
