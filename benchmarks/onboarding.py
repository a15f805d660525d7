"""Benchmark (issue 13, "Onboarding <= 5 minutes"): a 2.6M-row log to a ready server, timed.

Usage: python benchmarks/onboarding.py [--data out/onboarding/data] [--out out/onboarding/run]
       [--world commuter --users 4000 --days 28 --seed 7] [--history log|none|import]
       [--profile STEP] [--json]

The log (when ``--data`` does not exist yet) is written by ``pushrl data synth --world W``
(not timed: it stands in for a team's export). Then the zero-hand-edit path, each step a
fresh process as a user types it, timed (wall) with its peak RSS (``wait4`` of the step's
process):

1. ``pushrl init DATA --objective examples/objective.toml --out DIR`` (validate, split the
   users 80/20, fit the simulator to the training users, write the scenario);
2. ``pushrl train bandit --scenario DIR/scenario.toml`` (VW item policy, training users);
   (``train timing``: PPO timesteps are excluded per the issue, so it is not run);
3. ``pushrl evaluate --policy ARTIFACT --scenario ...`` (OPE gate on the held-out users,
   recorded in the model card);
4. ``pushrl policies promote`` (``--force`` with a reason when the gate blocks: recorded);
5. ``pushrl serve --scenario ... --registry ...`` until ``/readyz`` answers 200 (``serve``),
   then the users' history brought in (``history``: ``log`` = PUT /v1/users + POST /v1/events
   of every logged activity event, :func:`pushrl.compare.served.import_history`; ``import`` =
   ``pushrl state import DATA --state DIR`` before the server starts, timed as ``history``).
   The server's peak RSS is its ``VmHWM`` after the history.

Target: the sum <= 300 s wall on this machine. ``--profile STEP`` re-runs one step under
cProfile and prints its top functions by cumulative time (py-spy is not installed).
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

ROOT = Path(__file__).resolve().parents[1]


def uptime() -> str:
    """``uptime``'s load average (the machine is shared: every figure is 'under load')."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def timed(*args: str, expect: tuple[int, ...] = (0,),
          prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``pushrl ARGS --json`` in a fresh process: its JSON, wall seconds, peak RSS."""
    cmd = [sys.executable, *prefix, "-m", "pushrl", *args, "--json"]
    t0 = time.perf_counter()
    with open(os.devnull, "w") as dn:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=dn, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out = p.stdout.read() if p.stdout else ""
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    p.returncode = code
    if code not in expect:
        raise SystemExit(f"`pushrl {' '.join(args)}` failed (exit {code})")
    try:
        body: dict[str, Any] = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        body = {"stdout": out[-2000:]}
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "exit": code, "json": body}


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set of a running process (``VmHWM``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def serve_step(sc: str, registry: Path, state: Path, data: Path, history: str) -> dict[str, Any]:
    """``pushrl serve`` until ready, then the history brought in; walls and peak RSS."""
    import pandas as pd

    from pushrl.compare.served import import_history, import_state, serve
    from pushrl.envs.scenario import load_scenario

    users = pd.read_parquet(data / "users.parquet", columns=["user_id", "timezone"])
    ids = users["user_id"].astype(str).tolist()
    tzs = users["timezone"].astype(str).tolist()
    imported = 0.0
    if history == "import":  # `pushrl state import` first; the server starts on that state
        t1 = time.perf_counter()
        n = int(import_state(data, state)["n_activity"])
        imported = time.perf_counter() - t1
    t0 = time.perf_counter()
    with serve(registry, sc, seed=0, state=state) as srv:
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        if history != "import":
            n = import_history(srv, load_scenario(sc), ids, ids, tzs, history)
        hist = time.perf_counter() - t1 + imported
        # one decision for every user at the scenario start: the server is usable
        t2 = time.perf_counter()
        start = load_scenario(sc).start_bucket * 3600
        for a in range(0, len(ids), 1000):
            srv.post("/v1/decide/batch", {"requests": [{"user_id": u, "ts": start}
                                                       for u in ids[a:a + 1000]]})
        first = time.perf_counter() - t2
        rss = vm_hwm_mb(srv.proc.pid)
    return {"serve_ready_s": round(ready, 2), "history_s": round(hist, 2),
            "history_events": n, "history_users": len(ids),
            "first_decisions_s": round(first, 2), "server_peak_rss_mb": rss}


def profile(step: list[str], out: Path) -> str:
    """Top 25 functions by cumulative time of one step run under cProfile."""
    prof = out / "step.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "pushrl", *step],
                   capture_output=True, check=False)
    import pstats

    from io import StringIO

    buf = StringIO()
    pstats.Stats(str(prof), stream=buf).sort_stats("cumulative").print_stats(25)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="out/onboarding/data")
    ap.add_argument("--out", default="out/onboarding/run")
    ap.add_argument("--world", default="commuter", help="world of the generated log")
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--history", default="log", choices=("log", "none", "import"))
    ap.add_argument("--profile", default=None, choices=("init", "bandit", "evaluate"),
                    help="re-run this step under cProfile and print its hot functions")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    rec: dict[str, Any] = {"settings": vars(args), "uptime_start": uptime()}
    if not (data / "pushes.parquet").exists():
        rec["synth"] = timed("data", "synth", "--world", args.world, "--users", str(args.users),
                             "--days", str(args.days), "--seed", str(args.seed), "--out",
                             str(data))
    import pyarrow.parquet as pq

    rec["rows"] = {t: pq.ParquetFile(data / f"{t}.parquet").metadata.num_rows
                   for t in ("pushes", "activity", "users", "items")}
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    steps: dict[str, Any] = {}
    objective = str(ROOT / "examples" / "objective.toml")
    steps["init"] = timed("init", str(data), "--objective", objective, "--out", str(out))
    sc = steps["init"]["json"]["scenario"]
    steps["bandit"] = timed("train", "bandit", "--scenario", sc, "--out",
                            str(out / "policies" / "vw"))
    art = steps["bandit"]["json"]["artifact"]
    steps["evaluate"] = timed("evaluate", "--policy", art, "--scenario", sc,
                              "--out", str(out / "ope"), expect=(0, 1))
    gate_passed = steps["evaluate"]["exit"] == 0
    name, version = Path(art).parent.name, Path(art).name
    promote = ["policies", "promote", f"{name}@{version}", "--registry",
               str(out / "policies")]
    if not gate_passed:
        promote += ["--force", "--reason", "onboarding benchmark: gate blocked, forced"]
    steps["promote"] = timed(*promote)
    steps["promote"]["forced"] = not gate_passed
    rec["uptime_before_serve"] = uptime()
    steps["serve"] = serve_step(sc, out / "policies", out / "state", data, args.history)
    for k in ("init", "bandit", "evaluate", "promote"):
        steps[k].pop("json", None) if k != "evaluate" else steps[k].update(
            json={"gate": steps[k]["json"].get("gate", {}).get("failed_rules")})
    rec["steps"] = steps
    walls = {k: steps[k]["wall_s"] for k in ("init", "bandit", "evaluate", "promote")}
    walls["serve_ready"] = steps["serve"]["serve_ready_s"]
    walls["history"] = steps["serve"]["history_s"]
    rec["wall_s"] = walls
    rec["total_wall_s"] = round(sum(walls.values()), 1)
    rec["target_s"] = 300
    rec["bottleneck"] = max(walls, key=lambda k: walls[k])
    rec["uptime_end"] = uptime()
    if args.profile:
        step = {"init": ["init", str(data), "--objective", objective, "--out",
                         str(out / "profile_init")],
                "bandit": ["train", "bandit", "--scenario", sc, "--out",
                           str(out / "profile_vw")],
                "evaluate": ["evaluate", "--policy", art, "--scenario", sc, "--out",
                             str(out / "profile_ope")]}[args.profile]
        rec["profile"] = profile(step, out)
    (out / "onboarding.json").write_text(json.dumps(rec, indent=2, default=str))
    if args.json:
        print(json.dumps(rec, indent=2, default=str))
    else:
        print(f"{rec['rows']}\n{rec['uptime_start']}")
        for k, v in walls.items():
            rss = (steps[k]["peak_rss_mb"] if k in steps else steps["serve"]["server_peak_rss_mb"])
            print(f"{k:12s} {v:8.1f} s   peak RSS {rss} MB")
        print(f"total {rec['total_wall_s']} s (target <= 300 s); bottleneck: {rec['bottleneck']}")
        if "profile" in rec:
            print(rec["profile"])


if __name__ == "__main__":
    main()
