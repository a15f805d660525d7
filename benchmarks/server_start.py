"""Server start-up over a large log (#20 "a server starts on its catalog in < 5 s", #13 item 4).

Whole processes, as an operator runs them, on one pushlog directory (e.g. 4,000 users x 28
days = 2.6M decision rows: ``pushrl data synth --users 4000 --days 28 --world commuter``):

1. ``pushrl state import DATA --state S``: wall time (one-off, target <= 60 s);
2. ``pushrl serve --state S``: wall time from the process start until ``/readyz`` answers
   200, first start after the import and a restart (target < 5 s);
3. ``pushrl serve --state C --catalog DATA``: the same, first start (reads the catalog and
   fits spec and popularity) and a restart;
4. the floor in the same run: ``pushrl serve`` on an empty state dir until ``/healthz``
   (interpreter, imports, uvicorn), so figures under load can be read as floor + data.

    python benchmarks/server_start.py --data DIR [--runs 3] [--json] [--out FILE]
    python benchmarks/server_start.py --data DIR --catalog-only   # 3. and 4. only (a log
        too large to import: `--catalog` reads the items and a part of the users)
    python benchmarks/server_start.py --data DIR --triggers default --no-catalog  # the
        imported starts with the trigger tracker on (#16: its first start replays the
        imported history's trigger inputs, a restart loads the clean shutdown's snapshot)

Each figure is the median over ``--runs`` (fresh state dirs per run); ``uptime`` is recorded
next to the figures (the machine is shared). ``cpu_s`` is each child's CPU time (user +
system): on a loaded machine it is closer to what the wall time is on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

from _output import emit_json  # benchmarks/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _ready_seconds(args: list[str], timeout: float = 120.0, path: str = "/readyz",
                   cpu: list[float] | None = None) -> float:
    """Start ``pushrl serve ARGS``; seconds until ``path`` is 200; then stop it. Appends the
    server process's CPU seconds (start-up, then idle until stopped) to ``cpu``."""
    port = _port()
    c0 = _cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pushrl", "serve", *args, "--port",
                             str(port)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("server not ready in time")
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if cpu is not None:
            cpu.append(_cpu() - c0)


def _start(out: dict[str, list[float]], cpu: dict[str, list[float]], key: str,
           args: list[str]) -> None:
    out[key].append(_ready_seconds(args, cpu=cpu[key]))


def run(data: Path, runs: int, catalog_only: bool = False, triggers: str | None = None,
        catalog: bool = True) -> dict[str, Any]:
    """Time import, start on the imported state and start on ``--catalog`` (only the
    empty floor and ``--catalog`` with ``catalog_only``: a log too large to import)."""
    out: dict[str, list[float]] = {k: [] for k in (
        "start_empty_s", "import_s", "start_imported_first_s", "start_imported_restart_s",
        "start_catalog_first_s", "start_catalog_restart_s")}
    cpu: dict[str, list[float]] = {k: [] for k in out}
    report: dict[str, Any] = {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="pushrl-start-") as tmp:
            t = Path(tmp)
            reg = ["--registry", str(t / "policies")]
            # the floor in the same run: interpreter, imports, uvicorn, an empty state
            # (no items, so /healthz: /readyz says "no_items")
            out["start_empty_s"].append(_ready_seconds(["--state", str(t / "empty"), *reg],
                                                       path="/healthz",
                                                       cpu=cpu["start_empty_s"]))
            if catalog_only:
                cat = ["--state", str(t / "catalog"), "--catalog", str(data), *reg]
                _start(out, cpu, "start_catalog_first_s", cat)
                _start(out, cpu, "start_catalog_restart_s", cat)
                continue
            t0, c0 = time.perf_counter(), _cpu()
            res = subprocess.run([sys.executable, "-m", "pushrl", "state", "import", str(data),
                                  "--state", str(t / "imported"), "--json"], env=_env(),
                                 capture_output=True, text=True, check=True)
            out["import_s"].append(time.perf_counter() - t0)
            cpu["import_s"].append(_cpu() - c0)
            report = json.loads(res.stdout)
            state = ["--state", str(t / "imported"), *reg,
                     *(["--triggers", triggers] if triggers else [])]
            _start(out, cpu, "start_imported_first_s", state)
            _start(out, cpu, "start_imported_restart_s", state)
            if not catalog:
                continue
            cat = ["--state", str(t / "catalog"), "--catalog", str(data), *reg]
            _start(out, cpu, "start_catalog_first_s", cat)
            _start(out, cpu, "start_catalog_restart_s", cat)
    out = {k: v for k, v in out.items() if v}
    cpu = {k: v for k, v in cpu.items() if v}
    if catalog_only:  # the log's size from the footers (nothing imported)
        from pushrl.data.io import table_rows

        report = {"n_users": table_rows(data, "users"), "n_decisions": table_rows(data, "pushes"),
                  "n_activity": table_rows(data, "activity")}
    return {"data": str(data), "n_users": report.get("n_users"),
            "n_decisions": report.get("n_decisions"), "n_activity": report.get("n_activity"),
            "runs": runs, "import_stages_s": report.get("seconds"), "triggers": triggers,
            **{k: round(median(v), 2) for k, v in out.items()},
            **{f"{k}_all": [round(x, 2) for x in v] for k, v in out.items()},
            "cpu_s": {k: round(median(v), 2) for k, v in cpu.items()},
            "targets": {"import_s": 60.0, "start_s": 5.0},
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="pushlog directory")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--catalog-only", action="store_true",
                    help="only the empty floor and --catalog starts (no state import: a log "
                         "too large to import, e.g. 1M users x 28 days)")
    ap.add_argument("--triggers", default=None,
                    help="start the imported state with `--triggers RULES` (default|FILE)")
    ap.add_argument("--no-catalog", action="store_true", help="skip the --catalog starts")
    a = ap.parse_args()
    res = run(a.data, a.runs, a.catalog_only, a.triggers, not a.no_catalog)
    emit_json(res, a.out, echo=a.json)
    if a.json:
        return
    print(f"{res['n_decisions']:,} decisions, {res['n_users']:,} users ({res['uptime']})")
    if "import_s" in res:
        print(f"import: {res['import_s']} s wall, {res['cpu_s']['import_s']} s CPU "
              "(target <= 60 s)")
    for k in ("start_empty_s", "start_imported_first_s", "start_imported_restart_s",
              "start_catalog_first_s", "start_catalog_restart_s"):
        if k in res:
            print(f"{k}: {res[k]} s wall, {res['cpu_s'][k]} s CPU (target < 5 s)")


if __name__ == "__main__":
    main()
