"""Benchmarks of the VW item bandit: training throughput, decision latency, quality.

    python benchmarks/bandit.py [--json] [--repeats 3] [--sections process,throughput,latency,obd]

* process: ``pushrl train bandit`` whole process (fresh interpreter, as a user runs it) vs
  ``python -m vowpalwabbit -d FILE`` on the same examples, interleaved (target >= 0.8)::

      python benchmarks/bandit.py --sections process --datasets synth --repeats 3 [--write]

* throughput: ``pushrl train bandit`` end to end (Parquet -> load/validate -> pipeline
  features -> VW text -> VW's driver -> model bytes) against VW's own driver training on the
  very same examples file in-process (``pyvw.Workspace(... -d FILE)``, what
  ``python -m vowpalwabbit -d FILE`` runs, without interpreter start-up). Runs are
  interleaved; the ratio of medians and of best times are reported (target >= 0.8), and
  CPU seconds (the machine is shared, wall times are noisy).
* latency: in-process ``decide`` of a trained synth policy for one user with 50 candidates
  (p50 / p99, target p99 < 1 ms), and batch decisions per second.
* obd: train on half of the OBD "random" logs, estimate the policy's CTR on the other half
  with the OPE estimators (IPW, SNIPW, DR with a cross-fitted reward model; 95% bootstrap
  CIs) and compare with the on-policy CTRs of the random and BTS logging policies.
* online: 100k interactions with ``pushrl/PushItem-v0`` (see ``--online``); VW vs uniform,
  most-popular and the ground-truth oracle, 95% CIs.

A single top-to-bottom script (house style for benchmarks): it prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vowpalwabbit import __version__ as VW_VERSION  # noqa: E402
from vowpalwabbit import pyvw  # noqa: E402

from pushrl.data.validate import load_dataset  # noqa: E402
from pushrl.policies.item_data import build_rounds, take_context  # noqa: E402
from pushrl.policies.vw import VWConfig  # noqa: E402
from pushrl.train.vw_train import train_rounds, train_vw  # noqa: E402

DATASETS = {"synth": ROOT / "simulator_data" / "synth",
            "obd": ROOT / "simulator_data" / "obd" / "random"}


def cpu() -> float:
    """CPU seconds of this process and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _dataset(name: str) -> Path:
    """A shipped dataset by name (``synth``, ``obd``) or any dataset directory."""
    if name in DATASETS:
        return DATASETS[name]
    if not Path(name).is_dir():
        raise SystemExit(f"--datasets: {name!r} is neither {'/'.join(DATASETS)} nor a directory")
    return Path(name).resolve()


def throughput(name: str, path: Path, repeats: int, cfg: VWConfig) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-bench-"))
    ex = tmp / "examples.vw"
    first = train_vw(path, cfg, examples_path=ex)  # also warms the page cache
    n = int(first.metrics["train/rounds"])
    ours, ours_cpu, drv, drv_cpu, stages = [], [], [], [], []
    for _ in range(repeats):
        c0, t0 = cpu(), time.perf_counter()
        res = train_vw(path, cfg)
        ours.append(time.perf_counter() - t0)
        ours_cpu.append(cpu() - c0)
        stages.append(res.metrics)
        c0, t0 = cpu(), time.perf_counter()
        ws = pyvw.Workspace(arg_list=[*cfg.args(), "-d", str(ex), "-f", str(tmp / "m.vw"),
                                      "--quiet"])
        ws.finish()
        drv.append(time.perf_counter() - t0)
        drv_cpu.append(cpu() - c0)
    size_mb = round(ex.stat().st_size / 1e6, 1)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    med = statistics.median
    last = stages[-1]
    return {
        "dataset": name, "rounds": n, "candidates": int(first.metrics["train/n_actions"]),
        "examples_file_mb": size_mb,
        "vw_args": cfg.args(), "repeats": repeats,
        "ours_seconds": [round(x, 3) for x in ours], "driver_seconds": [round(x, 3) for x in drv],
        "ours_rounds_per_s": round(n / med(ours)), "driver_rounds_per_s": round(n / med(drv)),
        "ratio": round(med(drv) / med(ours), 3),
        "ratio_best": round(min(drv) / min(ours), 3),
        "ours_cpu_s": round(med(ours_cpu), 2), "driver_cpu_s": round(med(drv_cpu), 2),
        "cpu_ratio": round(med(drv_cpu) / med(ours_cpu), 3),
        "ours_load_s": round(last["train/seconds_load"], 2),
        "ours_vw_after_last_chunk_s": round(last["train/seconds_vw_after_last_chunk"], 2),
        "target_ratio": 0.8,
    }


def uptime() -> str:
    """``uptime``'s line (the load averages to print next to every figure)."""
    import subprocess

    r = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return r.stdout.strip() or " ".join(f"{x:.2f}" for x in os.getloadavg())


def children_cpu() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def whole_process(name: str, path: Path, repeats: int, cfg: VWConfig,
                  trees: list[Path] | None = None) -> dict[str, Any]:
    """``pushrl train bandit`` as a user runs it (a fresh interpreter: imports, load, features,
    VW text piped to VW's driver, artifact) vs ``python -m vowpalwabbit -d FILE`` on the same
    examples (written once beforehand), interleaved; wall and CPU of the whole process tree.

    ``trees``: run ``pushrl`` from each of these checkouts (default: this one), interleaved
    with the driver in every repeat (their order rotated each repeat), so trees and the
    driver share the same minutes. Each
    run's CPU is split: pushrl's process before training (interpreter, imports, CLI), during
    training (load, features, VW text, fingerprint, artifact; all its threads) and VW's
    driver child (from the run's ``--json`` metrics; older trees without them: total only).
    """
    import shutil
    import subprocess

    trees = trees or [ROOT]
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-bench-"))
    ex = tmp / "examples.vw"
    n = int(train_vw(path, cfg, examples_path=ex).metrics["train/rounds"])
    for tree in trees:
        # an installed pushrl has its bytecode (pip compiles it, as it did VW's modules); a
        # checkout run with PYTHONDONTWRITEBYTECODE=1 would recompile ~50 modules every start
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "pushrl")],
                       check=True, capture_output=True)
    ours_cmd = [sys.executable, "-m", "pushrl", "train", "bandit", "--data", str(path),
                "--json", "--out"]
    drv_cmd = [sys.executable, "-m", "vowpalwabbit", *cfg.args(), "-d", str(ex), "-f",
               str(tmp / "m.vw"), "--quiet"]

    def run(cmd: list[str], tree: Path = ROOT) -> dict[str, Any]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree),
                                                            os.environ.get("PYTHONPATH", "")])}
        c0, t0 = children_cpu(), time.perf_counter()
        r = subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tmp, text=True)
        out = {"wall": time.perf_counter() - t0, "cpu": children_cpu() - c0,
               "load1": os.getloadavg()[0]}
        if cmd[2] == "pushrl":
            m = json.loads(r.stdout)["metrics"]
            if "train/cpu_seconds_vw" in m:
                out["cpu_vw"] = m["train/cpu_seconds_vw"]
                out["cpu_pushrl_train"] = m["train/cpu_seconds_pushrl"]
                out["cpu_pushrl_start"] = out["cpu"] - out["cpu_vw"] - out["cpu_pushrl_train"]
            for k in ("seconds_load", "seconds_writer_idle", "seconds_vw_after_last_chunk"):
                if f"train/{k}" in m:  # (older trees lack some)
                    out[k] = m[f"train/{k}"]
        return out

    drv: list[dict[str, Any]] = []
    ours: dict[str, list[dict[str, Any]]] = {str(t): [] for t in trees}
    for r in range(repeats):
        drv.append(run(drv_cmd))
        # the trees' order rotates every repeat, so no tree always runs right after the
        # driver (with a fixed order the first tree looked penalised in bandit5's runs)
        for i in np.roll(np.arange(len(trees)), -r).tolist():
            ours[str(trees[i])].append(run([*ours_cmd, str(tmp / "policies" / f"p{r}-{i}")],
                                           trees[i]))
    shutil.rmtree(tmp)
    med = statistics.median
    dw, dc = [x["wall"] for x in drv], [x["cpu"] for x in drv]
    res: dict[str, Any] = {
        "dataset": name, "rounds": n, "repeats": repeats,
        "ours_command": " ".join(ours_cmd[1:]) + " DIR",
        "driver_command": " ".join(drv_cmd[1:]), "driver_wall_s": [round(x, 2) for x in dw],
        "driver_cpu_s": [round(x, 2) for x in dc],
        "load1_after_each_driver_run": [round(x["load1"], 1) for x in drv],
        "target_ratio": 0.8, "trees": {}}
    for tree, runs in ours.items():
        ow, oc = [x["wall"] for x in runs], [x["cpu"] for x in runs]
        t: dict[str, Any] = {
            "ours_wall_s": [round(x, 2) for x in ow], "ours_cpu_s": [round(x, 2) for x in oc],
            "ratio_wall": round(med(dw) / med(ow), 3),
            "ratio_wall_pairs": [round(d / o, 3) for d, o in zip(dw, ow, strict=True)],
            "ratio_cpu": round(med(dc) / med(oc), 3),
            "ratio_cpu_pairs": [round(d / o, 3) for d, o in zip(dc, oc, strict=True)],
            "load1_after_each_run": [round(x["load1"], 1) for x in runs]}
        if all("cpu_vw" in x for x in runs):
            for k in ("cpu_pushrl_start", "cpu_pushrl_train", "cpu_vw"):
                t[k + "_s"] = [round(x[k], 2) for x in runs]
        for k in ("seconds_load", "seconds_writer_idle", "seconds_vw_after_last_chunk"):
            if all(k in x for x in runs):
                t[k] = [round(x[k], 2) for x in runs]
        res["trees"][tree] = t
    first = res["trees"][str(trees[0])]  # the headline keys (this tree unless --tree)
    res.update({k: first[k] for k in ("ours_wall_s", "ours_cpu_s", "ratio_wall",
                                      "ratio_wall_pairs", "ratio_cpu")})
    return res


def latency(path: Path, n_decisions: int, k: int = 50) -> dict[str, Any]:
    ds, _ = load_dataset(path, quarantine=False)
    rounds = build_rounds(ds)
    pol = train_rounds([rounds], VWConfig()).policy
    rng = np.random.default_rng(0)
    idx = rng.integers(0, rounds.n_rounds, n_decisions)
    ctxs = []
    for i in idx:  # one user, 50 random candidates of the catalog
        c = take_context(rounds.context, np.array([i]))
        keep = np.sort(rng.choice(c.candidates.shape[1], k, replace=False))
        c.candidates, c.mask = c.candidates[:, keep], c.mask[:, keep]
        c.candidate_features = c.candidate_features[:, keep]
        ctxs.append(c)
    for c in ctxs[:50]:  # warm up
        pol.decide(c, rng)
    lat, lat_cpu = np.empty(n_decisions), np.empty(n_decisions)
    for j, c in enumerate(ctxs):
        t0, c0 = time.perf_counter(), time.thread_time()
        pol.decide(c, rng)
        lat_cpu[j] = time.thread_time() - c0  # without time spent preempted (shared cores)
        lat[j] = time.perf_counter() - t0
    batch = take_context(rounds.context, np.arange(min(2000, rounds.n_rounds)))
    t0 = time.perf_counter()
    pol.decide_batch(batch, rng)
    per_s = len(batch) / (time.perf_counter() - t0)
    return {"candidates": k, "decisions": n_decisions,
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
            "max_ms": round(float(lat.max()) * 1e3, 3),
            "cpu_p50_ms": round(float(np.percentile(lat_cpu, 50)) * 1e3, 3),
            "cpu_p99_ms": round(float(np.percentile(lat_cpu, 99)) * 1e3, 3),
            "batch_decisions_per_s_100_candidates": round(per_s), "target_p99_ms": 1.0}


def obd_quality(seed: int = 0) -> dict[str, Any]:
    from pushrl.ope import ESTIMATORS, fit_reward_model

    ds, _ = load_dataset(DATASETS["obd"], quarantine=False)
    rounds = build_rounds(ds)
    rng = np.random.default_rng(seed)
    test_mask = rng.random(rounds.n_rounds) < 0.5
    train, test = rounds.subset(~test_mask), rounds.subset(test_mask)
    out: dict[str, Any] = {"train_rounds": train.n_rounds, "test_rounds": test.n_rounds}
    bts, _ = load_dataset(ROOT / "simulator_data" / "obd" / "bts", quarantine=False)

    def ctr(x: np.ndarray) -> dict[str, float]:
        m, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))
        return {"mean": m, "ci95": [m - 1.96 * se, m + 1.96 * se]}

    out["random_on_policy_ctr_test"] = ctr(test.reward)
    out["bts_on_policy_ctr"] = ctr(bts.pushes["clicked"].astype(float).to_numpy())
    len_list = int(test.position.max()) + 1 if test.position is not None else 1
    q_hat = fit_reward_model(test.context.shared, test.action, test.reward,
                             n_actions=test.n_actions, len_list=len_list,
                             position=test.position, n_folds=3, random_state=seed)
    for exploration in ("squarecb", "epsilon"):
        pol = train_rounds([train], VWConfig(exploration=exploration, seed=seed)).policy
        dist = pol.action_dist(test.context)
        greedy = np.zeros_like(dist)
        greedy[np.arange(len(dist)), np.argmax(dist, axis=1)] = 1.0
        for label, d in ((exploration, dist), (f"{exploration}-greedy", greedy)):
            ad = np.repeat(d[:, :, None], len_list, axis=2)  # same choice at every position
            res = {}
            for est in ("ipw", "snipw", "dr"):
                e = ESTIMATORS[est]()
                kw = {"estimated_rewards_by_reg_model": q_hat} if est == "dr" else {}
                iv = e.estimate_interval(test.reward, test.action, test.pscore, ad,
                                         test.position, alpha=0.05, n_bootstrap_samples=2000,
                                         random_state=seed, **kw)
                res[est] = {k: round(float(v), 5) for k, v in iv.items()}
            out[f"vw_{label}"] = res
    return out


def online(n: int, seed: int) -> dict[str, Any]:
    from pushrl.train.vw_online import compare_online

    return compare_online(n_interactions=n, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", default="throughput,latency,obd")
    ap.add_argument("--datasets", default="synth,obd",
                    help="comma-separated: synth, obd or dataset directories (e.g. a "
                         "`pushrl data synth --seed N` world held out from development)")
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--online", type=int, default=100_000, help="interactions (section online)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tree", type=Path, nargs="+", default=None,
                    help="section process: run pushrl from these checkouts, interleaved "
                         "(e.g. --tree /work/main .); default: this checkout")
    ap.add_argument("--write", action="store_true",
                    help="write the sections run to benchmarks/results/bandit.json")
    a = ap.parse_args()
    sections = set(a.sections.split(","))
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                                       "uptime": uptime(), "vw": VW_VERSION}}
    if "throughput" in sections:
        out["throughput"] = [throughput(d, DATASETS[d], a.repeats, VWConfig())
                             for d in a.datasets.split(",")]
        for r in out["throughput"]:
            print(f"throughput {r['dataset']}: {r['rounds']} rounds x {r['candidates']} cands:"
                  f" ours {r['ours_rounds_per_s']} rounds/s (median of {r['ours_seconds']} s),"
                  f" driver {r['driver_rounds_per_s']} rounds/s ({r['driver_seconds']} s):"
                  f" ratio {r['ratio']} (best-of: {r['ratio_best']}; target >= 0.8); CPU ratio"
                  f" {r['cpu_ratio']}",
                  file=sys.stderr)
    if "process" in sections:
        out["process"] = [whole_process(d, _dataset(d), a.repeats, VWConfig(),
                                        [t.resolve() for t in a.tree] if a.tree else None)
                          for d in a.datasets.split(",")]
        for r in out["process"]:
            print(f"whole process {r['dataset']} ({r['rounds']} rounds), interleaved; python -m"
                  f" vowpalwabbit wall {r['driver_wall_s']} s, CPU {r['driver_cpu_s']} s (load "
                  f"after each: {r['load1_after_each_driver_run']})", file=sys.stderr)
            for tree, t in r["trees"].items():
                print(f"  pushrl train bandit [{tree}]: wall {t['ours_wall_s']} s, CPU "
                      f"{t['ours_cpu_s']} s; ratio wall {t['ratio_wall']} (pairs "
                      f"{t['ratio_wall_pairs']}; target >= 0.8), CPU {t['ratio_cpu']} (pairs "
                      f"{t['ratio_cpu_pairs']})", file=sys.stderr)
                if "cpu_vw_s" in t:
                    print(f"    CPU split: pushrl start-up (interpreter, imports, CLI) "
                          f"{t['cpu_pushrl_start_s']} s, pushrl training (load, features, VW "
                          f"text; all threads) {t['cpu_pushrl_train_s']} s, VW's driver child "
                          f"{t['cpu_vw_s']} s", file=sys.stderr)
                if "seconds_writer_idle" in t:
                    print(f"    in train_vw: load {t['seconds_load']} s; the writer waited for "
                          f"pushrl's next chunk {t['seconds_writer_idle']} s (VW starved); VW "
                          f"learned {t['seconds_vw_after_last_chunk']} s after the last chunk",
                          file=sys.stderr)
            print(f"  uptime: {uptime()}", file=sys.stderr)
    if "latency" in sections:
        out["latency"] = latency(DATASETS["synth"], a.decisions)
        r = out["latency"]
        print(f"latency (50 candidates): p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms "
              f"(target < 1 ms); CPU time p50 {r['cpu_p50_ms']} ms, p99 {r['cpu_p99_ms']} ms;"
              f" batch {r['batch_decisions_per_s_100_candidates']} "
              "decisions/s with 100 candidates", file=sys.stderr)
    if "obd" in sections:
        out["obd"] = obd_quality(a.seed)
        print("obd:", json.dumps(out["obd"], indent=1), file=sys.stderr)
    if "online" in sections:
        out["online"] = online(a.online, a.seed)
        print("online:", json.dumps(out["online"], indent=1), file=sys.stderr)
    out["machine"]["load_avg_end"] = os.getloadavg()
    out["machine"]["uptime_end"] = uptime()
    out["load_avg"] = out["machine"]["load_avg"]
    if a.write:
        (ROOT / "benchmarks" / "results" / "bandit.json").write_text(
            json.dumps(out, indent=2, default=str) + "\n")
    if a.json:
        print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
