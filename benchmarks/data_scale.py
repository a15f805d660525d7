"""Benchmark: the data path at scale, time and peak memory of each stage (issue #20 item 1).

Usage:
    python benchmarks/data_scale.py --users 10000,30000,100000 --root /work/scale_data \
        [--stages synth,validate,sim_fit,train_bandit] [--json benchmarks/results/data_scale.json] \
        [--keep] [--max-seconds S --progress]

For every N (users x ``--days`` days, ``pushrl data synth`` user parts of 10k users) it runs
each stage as its own ``python -m pushrl ...`` process, one at a time, and records the wall
time and two peaks: ``rss_gib`` (the largest single process, as ``/usr/bin/time`` reports)
and ``tree_gib`` (the whole process tree sampled every 0.2 s from /proc: `train bandit`
runs VW as a second process). Stages: ``synth``; ``validate`` (`pushrl data validate`,
streamed by chunks); ``sim_fit`` (`pushrl sim fit`, a 20k-user sample above 20k users);
``train_bandit`` (`pushrl train bandit`, by user shards).

Then it fits ``time ~ N^a`` and ``peak ~ N^b`` per stage (least squares in logs over the
sizes measured): ``b ~ 0`` is memory that does not grow with the log. The target: 1M
users x 28 days within 8 GiB peak for validate, sim fit and train bandit.

``--max-seconds S`` stops a stage still running after S seconds and records it as unfinished
with its peaks so far; with ``--progress`` (the CLI's progress bar written into the stage's log)
also the rounds `train bandit` had fed to VW and their rate (overall and over the second half),
so a stage that cannot finish in the time available still reports a rate and a peak.

Timings depend on the machine's load: the script prints ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_GIB = 8.0
TARGET = "1M users x 28 days: validate, sim fit, train bandit within 8 GiB peak RSS"
STAGES = ("synth", "validate", "sim_fit", "train_bandit")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> tuple[int, int]:
    """Bytes resident in ``root`` and all its descendants, and in the largest one (/proc)."""
    kids: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            rss[int(p.name)] = int((p / "statm").read_text().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(p.name))
    total, largest, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        largest = max(largest, rss.get(pid, 0))
        todo.extend(kids.get(pid, []))
    return total, largest


_ROUNDS = re.compile(rb"([\d,]+) rounds")


def _rounds_so_far(log: Path) -> int | None:
    """The last round count the progress bar wrote into ``log`` (``--progress``), if any."""
    try:
        with open(log, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 65536, 0))
            hits = _ROUNDS.findall(f.read())
    except OSError:
        return None
    return int(hits[-1].replace(b",", b"")) if hits else None


def run(cmd: list[str], log: Path, max_seconds: float | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Run ``cmd`` under /usr/bin/time; wall seconds, largest-process and tree peaks (GiB).

    With ``max_seconds`` a stage still running then is stopped (its process group killed) and
    returned with ``"finished": False``, its peaks so far, and (``progress``: the CLI's
    progress bar is written to ``log``) the rounds done so far and their rate, sampled every
    30 s in ``"samples"`` ([seconds, rounds, tree GiB]).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if progress:  # the rich bar on stderr even with --json and into a file (rich >= 14)
        env.update(PUSHRL_PROGRESS="1", TTY_COMPATIBLE="1", TTY_INTERACTIVE="1",
                   COLUMNS="160")
    tfile = log.with_suffix(".time")
    tfile.unlink(missing_ok=True)
    full = ["/usr/bin/time", "-o", str(tfile), "-f", "%e %M", *cmd]
    t0 = time.perf_counter()
    stopped = [False]
    samples: list[list[float]] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        peak, largest = [0], [0]

        def poll() -> None:
            last = 0.0
            while proc.poll() is None:
                tree, big = _tree_rss(proc.pid)
                peak[0], largest[0] = max(peak[0], tree), max(largest[0], big)
                now = time.perf_counter() - t0
                if progress and now - last >= 30:
                    last = now
                    samples.append([round(now, 1), _rounds_so_far(log) or 0,
                                    round(tree / 1024**3, 3)])
                if max_seconds is not None and now > max_seconds and not stopped[0]:
                    stopped[0] = True
                    os.killpg(proc.pid, signal.SIGTERM)
                time.sleep(0.2)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        rc = proc.wait()
        th.join()
    wall = time.perf_counter() - t0
    if stopped[0]:
        rounds = _rounds_so_far(log) if progress else None
        res: dict[str, Any] = {
            "finished": False, "stopped_after_seconds": round(wall, 1),
            "rss_gib": round(largest[0] / 1024**3, 3), "tree_gib": round(peak[0] / 1024**3, 3)}
        if rounds is not None:
            res.update(rounds_so_far=rounds, rounds_per_s=round(rounds / wall, 1))
            late = [s for s in samples if s[0] >= wall / 2 and s[1] > 0]
            if len(late) >= 2:  # the steady rate over the second half (after the start-up)
                res["rounds_per_s_second_half"] = round(
                    (late[-1][1] - late[0][1]) / (late[-1][0] - late[0][0]), 1)
        if samples:
            res["samples"] = samples
        return res
    if rc != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}):\n{tail}")
    _, kb = tfile.read_text().split()[-2:]
    res = {"seconds": round(wall, 1), "rss_gib": round(int(kb) / 1024**2, 3),
           "tree_gib": round(peak[0] / 1024**3, 3)}
    if samples:
        res["samples"] = samples
    return res


def commands(n: int, data: Path, days: int) -> dict[str, list[str]]:
    py = [sys.executable, "-m", "pushrl"]
    return {
        "synth": [*py, "data", "synth", "--users", str(n), "--days", str(days), "--out",
                  str(data), "--json"],
        "validate": [*py, "data", "validate", str(data), "--json"],
        "sim_fit": [*py, "sim", "fit", str(data), "--out", str(data / "_sim"), "--json"],
        "train_bandit": [*py, "train", "bandit", "--data", str(data), "--out",
                         str(data / "_policies" / "vw"), "--json"],
    }


def growth(rows: list[dict[str, Any]], stage: str, key: str) -> float | None:
    """Exponent ``a`` of ``key ~ users^a`` (least squares in logs), None with < 2 sizes."""
    pts = [(r["users"], r[stage][key]) for r in rows
           if stage in r and r[stage].get(key, 0) > 0 and r[stage].get("finished", True)]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", default="10000,30000,100000")
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--root", type=Path, default=Path("/work/scale_data"))
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--keep", action="store_true", help="keep the generated logs")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop a stage still running after this many seconds and record it "
                         "as unfinished, with its peaks and (--progress) its rate so far")
    ap.add_argument("--progress", action="store_true",
                    help="write the CLI's progress bar into the stage logs (train bandit's "
                         "rounds: sampled every 30 s)")
    a = ap.parse_args()
    stages = [s for s in a.stages.split(",") if s]
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    print(uptime[0], flush=True)
    rows: list[dict[str, Any]] = []
    for n in (int(u) for u in a.users.split(",")):
        data = a.root / f"scale_{n}"
        if "synth" in stages and data.exists():
            shutil.rmtree(data)
        row: dict[str, Any] = {"users": n, "days": a.days}
        for st in stages:
            cmd = commands(n, data, a.days)[st]
            res = run(cmd, a.root / f"scale_{n}_{st}.log", a.max_seconds, a.progress)
            row[st] = res
            if not res.get("finished", True):
                rate = (f", {res['rounds_so_far']:,} rounds at {res['rounds_per_s']:,.0f}/s"
                        if "rounds_so_far" in res else "")
                print(f"N={n:>9,} {st:<13} UNFINISHED: stopped after "
                      f"{res['stopped_after_seconds']:.1f} s{rate}, peak so far "
                      f"{res['rss_gib']:.2f} GiB (tree {res['tree_gib']:.2f})", flush=True)
                break
            print(f"N={n:>9,} {st:<13} {res['seconds']:>8.1f} s  peak {res['rss_gib']:.2f} GiB "
                  f"(tree {res['tree_gib']:.2f})", flush=True)
        if "synth" in stages:
            meta = json.loads((data / "meta.json").read_text())
            row["user_parts"] = meta.get("user_parts", 1)
            row["disk_gib"] = round(sum(f.stat().st_size for f in data.rglob("*")
                                        if f.is_file()) / 1024**3, 3)
        rows.append(row)
        if not a.keep:
            shutil.rmtree(data, ignore_errors=True)
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    fits = {st: {"time_exponent": growth(rows, st, "seconds"),
                 "peak_exponent": growth(rows, st, "tree_gib")} for st in stages}
    print(f"\n{'users':>10} " + " ".join(f"{s:>26}" for s in stages))
    for r in rows:
        cells = [(f"{r[s]['seconds']:>9.1f} s {r[s]['tree_gib']:>6.2f} GiB" if "seconds" in r[s]
                  else f"unfinished {r[s]['tree_gib']:>6.2f} GiB") if s in r else ""
                 for s in stages]
        print(f"{r['users']:>10,} " + " ".join(f"{c:>26}" for c in cells))
    print("growth exponents (x ~ users^a): " + "; ".join(
        f"{s}: time {f['time_exponent']}, peak {f['peak_exponent']}" for s, f in fits.items()))
    print(f"target: {TARGET}")
    print(uptime[-1])
    out = {"target": TARGET, "target_gib": TARGET_GIB, "rows": rows, "growth": fits,
           "uptime": uptime, "peak": "tree_gib = process tree (VW included), rss_gib = "
           "largest single process"}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
