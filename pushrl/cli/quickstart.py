"""`pushrl quickstart`: the whole loop on embedded data, in a few minutes.

1. synthesize a push world; 2. fit the simulator; 3. train a VW bandit and a *toy-length*
PPO run (minutes; it shows the training loop, it is not the result); 4. evaluate the bandit,
the toy run and the shipped, properly trained PPO artifact (``policies/ppo-timing/v2``, 3M
steps) with the deployment gate, and promote what passes; 5. compare against the heuristics
in the simulator; 6. write the HTML report; 7. start the server and make one decision with
the promoted policies. The console ends with the headline: each policy's objective vs the
best heuristic with its 95% CI, the gate verdicts and the decision.

Every step runs the real ``pushrl`` command a user would type (printed as it runs, with its
own progress bars), so the quickstart doubles as a tour of the CLI.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pushrl import resources
from pushrl.cli._common import console, emit
from pushrl.errors import PushrlError

#: The properly trained timing agent shipped for the default scenario (see its card).
SHIPPED_PPO = Path("policies") / "ppo-timing" / "v2"


def _run(args: list[str], *, expect: tuple[int, ...] = (0,),
         spinner: bool = False) -> dict[str, Any]:
    """Run ``pushrl ARGS --json`` (its progress bars and errors on our stderr) and return its
    JSON. ``spinner``: for commands without a bar of their own, an elapsed-time spinner."""
    cmd = [sys.executable, "-m", "pushrl.cli.main", *args, "--json"]
    console.print(f"[dim]$ pushrl {shlex.join(args)}[/]")
    with _spinner(f"pushrl {args[0]} {args[1]}" if spinner else None):
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, check=False,
                             env={**os.environ, "PYTHONUNBUFFERED": "1",
                                  "PUSHRL_PROGRESS": "1"})
    if res.returncode not in expect:
        raise PushrlError(f"step `pushrl {args[0]} {args[1] if len(args) > 1 else ''}` failed "
                          f"(exit {res.returncode}); its error is printed above")
    try:
        out: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError:
        out = {"stdout": res.stdout[-2000:]}
    out["_exit"] = res.returncode
    return out


@contextlib.contextmanager
def _spinner(label: str | None) -> Iterator[None]:
    if label is None:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), console=console,
                  transient=True) as prog:
        prog.add_task(label, total=None)
        yield


def _scenario(out: Path, data: Path, sim: Path) -> Path:
    """A copy of the default scenario pointing at the quickstart's data and simulator."""
    src = resources.find(Path("envs") / "default.toml")
    if src is None:
        raise PushrlError("the default scenario envs/default.toml was not found (a broken "
                          "install: reinstall pushrl)")
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
            "--state", str(state), "--catalog", str(catalog), "--seed", "0"]
    console.print(f"[dim]$ pushrl {shlex.join(args)}[/]")
    proc = subprocess.Popen([sys.executable, "-m", "pushrl.cli.main", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300  # a loaded machine loads policies slowly
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
                raise PushrlError("the server did not become ready within 300 s")
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
            # Ask hour by hour through the user's waking hours (as a scheduler would) until
            # the timing policy sends, so the decision shows the item policy too: a promoted
            # stochastic agent may send rarely, so up to two weeks (seeded server: the same
            # policy gives the same answer every run).
            decision: dict[str, Any] = {}
            start = datetime.date(2026, 3, 31)
            for ts in (f"{start + datetime.timedelta(days=d)}T{h:02d}:00:00Z"
                       for d in range(14) for h in range(6, 22)):
                r = c.post("/v1/decide", json={"user_id": "quickstart-user", "ts": ts})
                if r.status_code != 200:
                    raise PushrlError(f"/v1/decide answered {r.status_code}: {r.text[:200]}")
                decision = r.json()
                if decision.get("send"):
                    break
        return decision
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _gate(name: str, res: dict[str, Any]) -> bool:
    passed = res["_exit"] == 0
    rules = res.get("gate", {}).get("failed_rules") or []
    console.print(f"{name} {'PASSES' if passed else 'is BLOCKED by'} the gate vs the logging "
                  f"policy{' (' + ', '.join(rules) + ')' if rules else ''}")
    return passed


def _headline(cmp: dict[str, Any], gates: dict[str, bool], reference: str,
              labels: dict[str, str]) -> list[str]:
    """One line per policy: objective/user, relative difference to the reference with its
    95% CI (paired, common random numbers), and the policy's gate verdict."""
    summ = {r["policy"]: r for r in cmp["summary"] if r["metric"] == "objective"}
    paired = {r["policy"]: r for r in cmp["paired"] if r["metric"] == "objective"}
    heuristics = [p for p in summ if p not in labels]
    best = max(heuristics, key=lambda p: summ[p]["value"])
    ref = summ[reference]["value"]
    lines = [f"best heuristic: {best} ({summ[best]['value']:.3f}/user)"
             + ("" if best == reference else f"; differences vs {reference}")]
    for label, what in labels.items():
        if label not in paired:
            continue
        d = paired[label]
        rel = (f"{d['diff'] / ref:+.1%} [{d['lower'] / ref:+.1%}, {d['upper'] / ref:+.1%}]"
               if ref else f"{d['diff']:+.3f} [{d['lower']:+.3f}, {d['upper']:+.3f}]")
        verdict = {True: "gate PASS", False: "gate BLOCKED", None: "no gate"}[gates.get(label)]
        lines.append(f"{label} ({what}): {summ[label]['value']:.3f}/user, {rel} vs {reference}"
                     f" (95% CI); {verdict}")
    return lines


def _copy_shipped_ppo(reg: Path) -> Path | None:
    """The shipped trained timing artifact, copied into the quickstart's registry (its card
    gets the quickstart's gate evidence, the repository's copy is left untouched)."""
    src = resources.find(SHIPPED_PPO)
    if src is None:
        console.print(f"[yellow]the shipped trained agent {SHIPPED_PPO} is not here (it ships "
                      "with the repository, not the wheel): only the toy run is evaluated[/]")
        return None
    dst = reg / SHIPPED_PPO.parent.name / SHIPPED_PPO.name
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("ope"))
    return dst


def command(
    out: Path = typer.Option(Path("out/quickstart"), "--out", help="Working directory."),
    users: int = typer.Option(2000, help="Synthetic users."),
    days: int = typer.Option(28, help="Synthetic days."),
    seed: int = typer.Option(0, help="Seed of everything."),
    ppo_timesteps: int = typer.Option(200_000, "--ppo-timesteps",
                                      help="Steps of the toy-length PPO run."),
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
    summary["sim_fit"] = _run(["sim", "fit", str(data), "--out", str(sim)], spinner=True)
    scenario = _scenario(out, data, sim)
    step(3, "train a VW bandit (what) and a toy-length PPO run (when)")
    summary["bandit"] = _run(["train", "bandit", "--data", str(data), "--out",
                              str(reg / "vw-bandit"), "--seed", str(seed)], spinner=True)
    console.print(f"[bold yellow]toy-length PPO run[/]: {ppo_timesteps:,} steps, to show the "
                  "training loop; the shipped agent policies/ppo-timing/v2 was trained 3M steps")
    summary["ppo"] = _run(["train", "timing", "--scenario", str(scenario), "--timesteps",
                           str(ppo_timesteps), "--seed", str(seed), "--out", str(reg / "ppo-toy")])
    shipped = _copy_shipped_ppo(reg)
    step(4, "off-policy evaluation on held-out logs, gate, promotion")
    candidates = {"vw-bandit": reg / "vw-bandit", "ppo-toy": reg / "ppo-toy"}
    if shipped is not None:
        candidates["ppo-timing@v2"] = shipped
    gates: dict[str, bool] = {}
    for name, path in candidates.items():
        res = _run(["evaluate", "--data", str(held), "--policy", str(path), "--scenario",
                    str(scenario), "--out", str(out / "ope" / name.replace("@", "_"))],
                   expect=(0, 1))
        summary[f"evaluate_{name}"] = res
        gates[name] = _gate(name, res)
    timing = next((n for n in ("ppo-toy", "ppo-timing@v2") if gates.get(n)), None)
    promoted = [n for n in ("vw-bandit", timing) if n is not None and gates.get(n)]
    for name in promoted:
        summary[f"promote_{name}"] = _run(["policies", "promote", name.split("@")[0],
                                           "--registry", str(reg)], spinner=True)
    if timing is None:
        console.print("[yellow]no timing policy passed the gate: the server keeps its default "
                      "timing baseline[/]")
    step(5, "compare against the heuristics in the simulator")
    ppo_labels = {"ppo-toy": f"toy run, {ppo_timesteps:,} steps"}
    specs = ["-p", "never-send", "-p", "fixed-hour:hour=19", "-p", "most-active-hour",
             "-p", f"ppo-toy={reg / 'ppo-toy'}"]
    if shipped is not None:
        specs += ["-p", f"ppo-timing@v2={shipped}"]
        ppo_labels["ppo-timing@v2"] = "shipped agent, trained 3M steps"
    summary["compare"] = _run(["compare", "--scenario", str(scenario), *specs,
                               "--reference", "most-active-hour", "--item-policy",
                               str(reg / "vw-bandit"), "--users", str(compare_users),
                               "--out", str(out / "compare")])
    step(6, "write the HTML report")
    report = Path(summary["compare"]["report_html"]).resolve()
    console.print(f"report written: {report}")
    step(7, "serve the promoted policies and make one decision")
    summary["decision"] = _serve_one_decision(reg, out / "state", data)
    summary["gates"] = gates
    summary["promoted"] = promoted
    summary["report_html"] = str(report)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        emit(summary, True)
    console.rule("[bold green]done[/]")
    console.print(f"[bold]Report:[/] {report}\n[bold]OPE reports:[/] {(out / 'ope').resolve()}"
                  f"\n[bold]Policies:[/] {reg.resolve()}  ({summary['seconds']} s)")
    console.rule("[bold]headline[/]")
    summary_lines = _headline(summary["compare"], gates, "most-active-hour", ppo_labels)
    summary_lines.append("vw-bandit (item policy): gate "
                         f"{'PASS' if gates['vw-bandit'] else 'BLOCKED'}")
    d = summary["decision"]
    summary_lines.append(
        f"decision for quickstart-user at {d.get('ts')}: send={d.get('send')} "
        f"item={d.get('item_id')} timing policy={d.get('policy')} "
        f"item policy={d.get('item_policy')} pscore={d.get('pscore', 0):.3f}")
    for line in summary_lines:
        console.print(line, highlight=False, soft_wrap=True)
