"""`pushrl quickstart`: the whole loop on embedded data, in a few minutes.

1. synthesize a push world; 2. fit the simulator; 3. train a VW bandit and a short PPO run;
4. evaluate them with the deployment gate; 5. compare against the heuristics in the
simulator; 6. write the HTML report; 7. start the server and make one decision.

Every step runs the real ``pushrl`` command a user would type (printed as it runs), so the
quickstart doubles as a tour of the CLI.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import typer

from pushrl.cli._common import console, emit
from pushrl.errors import PushrlError

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], *, expect: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Run ``pushrl ARGS --json`` and return its JSON; raise with its last error line."""
    cmd = [sys.executable, "-m", "pushrl.cli.main", *args, "--json"]
    console.print(f"[dim]$ pushrl {shlex.join(args)}[/]")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if res.returncode not in expect:
        raise PushrlError(f"step `pushrl {args[0]} {args[1] if len(args) > 1 else ''}` failed "
                          f"(exit {res.returncode}): {_last_error(res.stderr)}")
    try:
        out: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError:
        out = {"stdout": res.stdout[-2000:]}
    out["_exit"] = res.returncode
    return out


def _last_error(stderr: str) -> str:
    """The most informative line of a failed command's stderr (skips rich box borders)."""
    lines = [ln.strip(" │╭╮╰╯─") for ln in stderr.splitlines()]
    lines = [ln for ln in lines if any(c.isalnum() for c in ln)]
    for ln in reversed(lines):
        if ln.lower().startswith(("error", "usage")) or "Error" in ln:
            return ln
    return lines[-1] if lines else "(no output)"


def _scenario(out: Path, data: Path, sim: Path) -> Path:
    """A copy of the default scenario pointing at the quickstart's data and simulator."""
    src = ROOT / "envs" / "default.toml"
    text = src.read_text()
    doc = tomllib.loads(text)
    lines = []
    for ln in text.splitlines():
        key = ln.split("=")[0].strip()
        if key == "data":
            ln = f'data = "{data.resolve()}"'
        elif key == "sim":
            ln = f'sim = "{sim.resolve()}"'
        elif key == "name":
            ln = 'name = "quickstart"'
        lines.append(ln)
    p = out / "scenario.toml"
    p.write_text("\n".join(lines) + "\n")
    assert doc  # the default parsed, so the copy does too
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_one_decision(registry: Path, state: Path, catalog: Path) -> dict[str, Any]:
    """Start `pushrl serve` on loopback, register a user, ask for one decision, stop."""
    import httpx

    port = _free_port()
    args = ["serve", "--registry", str(registry), "--host", "127.0.0.1", "--port", str(port),
            "--state", str(state), "--catalog", str(catalog)]
    console.print(f"[dim]$ pushrl {shlex.join(args)}[/]")
    proc = subprocess.Popen([sys.executable, "-m", "pushrl.cli.main", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()[-1:]
                raise PushrlError(f"the server exited early: {err[0] if err else 'no output'}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise PushrlError("the server did not become ready within 90 s")
            time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=10) as c:
            for r in (
                c.put("/v1/users/quickstart-user", json={"timezone": "Europe/Berlin",
                                                         "ts": "2026-03-30T00:00:00Z"}),
                c.post("/v1/events", json={"events": [
                    {"user_id": "quickstart-user", "event": "session",
                     "ts": f"2026-03-30T{h:02d}:10:00Z"} for h in (7, 18, 19)]}),
            ):
                if r.status_code != 200:
                    raise PushrlError(f"{r.request.url.path} answered {r.status_code}: "
                                      f"{r.text[:200]}")
            r = c.post("/v1/decide", json={"user_id": "quickstart-user",
                                           "ts": "2026-03-31T17:00:00Z", "horizon_hours": 48})
            if r.status_code != 200:
                raise PushrlError(f"/v1/decide answered {r.status_code}: {r.text[:200]}")
            decision: dict[str, Any] = r.json()
        return decision
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def command(
    out: Path = typer.Option(Path("out/quickstart"), "--out", help="Working directory."),
    users: int = typer.Option(2000, help="Synthetic users."),
    days: int = typer.Option(28, help="Synthetic days."),
    seed: int = typer.Option(0, help="Seed of everything."),
    ppo_timesteps: int = typer.Option(200_000, "--ppo-timesteps", help="Short PPO run."),
    compare_users: int = typer.Option(5000, "--compare-users", help="Users in the comparison."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Run the whole loop on embedded data: synth, fit, train, evaluate, compare, serve."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data, sim, reg = out / "data", out / "sim", out / "policies"
    summary: dict[str, Any] = {}
    steps = 7

    def step(i: int, text: str) -> None:
        console.rule(f"[bold]{i}/{steps} {text}[/]  ({time.perf_counter() - t0:.0f} s)")

    step(1, "synthesize a push world (training logs and held-out logs)")
    summary["synth"] = _run(["data", "synth", "--out", str(data), "--users", str(users),
                             "--days", str(days), "--seed", str(seed)])
    held = out / "heldout"
    summary["synth_heldout"] = _run(["data", "synth", "--out", str(held), "--users",
                                     str(max(users // 2, 50)), "--days", str(days),
                                     "--seed", str(seed + 1)])
    step(2, "fit the simulator to the logs")
    summary["sim_fit"] = _run(["sim", "fit", str(data), "--out", str(sim)])
    scenario = _scenario(out, data, sim)
    step(3, "train a VW bandit (what) and a short PPO run (when)")
    summary["bandit"] = _run(["train", "bandit", "--data", str(data), "--out",
                              str(reg / "vw-bandit"), "--seed", str(seed)])
    summary["ppo"] = _run(["train", "timing", "--scenario", str(scenario), "--timesteps",
                           str(ppo_timesteps), "--seed", str(seed), "--out",
                           str(reg / "ppo-timing")])
    step(4, "off-policy evaluation on held-out logs and the deployment gate")
    for key, name in (("evaluate_bandit", "vw-bandit"), ("evaluate_timing", "ppo-timing")):
        summary[key] = _run(["evaluate", "--data", str(held), "--policy", str(reg / name),
                             "--scenario", str(scenario), "--out", str(out / "ope" / name)],
                            expect=(0, 1))
        verdict = "PASSES" if summary[key]["_exit"] == 0 else "is BLOCKED by"
        rules = summary[key].get("gate", {}).get("failed_rules") or []
        console.print(f"{name} {verdict} the gate vs the logging policy"
                      f"{' (' + ', '.join(rules) + ')' if rules else ''}; report: "
                      f"{out / 'ope' / name}")
    step(5, "compare against the heuristics in the simulator")
    summary["compare"] = _run(["compare", "--scenario", str(scenario),
                               "-p", "never-send", "-p", "fixed-hour:hour=19",
                               "-p", "most-active-hour", "-p", f"ppo={reg / 'ppo-timing'}",
                               "--reference", "most-active-hour", "--item-policy",
                               str(reg / "vw-bandit"), "--users", str(compare_users),
                               "--out", str(out / "compare")])
    step(6, "write the HTML report")
    report = Path(summary["compare"]["report_html"]).resolve()
    console.print(f"report written: {report}")
    step(7, "start the server and make one decision")
    summary["decision"] = _serve_one_decision(reg, out / "state", data)
    console.print(f"decision: {json.dumps(summary['decision'])}")
    summary["report_html"] = str(report)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        emit(summary, True)
    console.rule("[bold green]done[/]")
    console.print(f"[bold]Report:[/] {report}\n[bold]OPE reports:[/] "
                  f"{(out / 'ope').resolve()}\n[bold]Policies:[/] {reg.resolve()}  "
                  f"({summary['seconds']} s)")
