"""`pushrl init DATA --objective objective.toml --out DIR`: onboard a push log in one command.

Validates the logs (quarantining bad rows), splits their users into a training part and a
held-out part (``--holdout-frac``, default 20 %; :mod:`pushrl.data.split`), fits the
simulator to the training part (``DIR/sim``) and writes ``DIR/scenario.toml``: the data and
simulator paths, the split (``[split]``), episodes starting at the first UTC midnight after
the log, the log's decision slots, and the reward weights and guardrails of the declared
objective. Every later command takes it: ``pushrl train bandit --scenario
DIR/scenario.toml`` and ``sim fit --scenario ...`` read the training part, ``pushrl
evaluate --scenario ...`` (and so the gate and ``promote``) the held-out part, which the gate
accepts as data the policy never saw; ``train timing``, ``compare`` and ``serve`` take it too.

Why a split: a new team has one log, and the gate refuses a policy evaluated on the logs it
was trained on (rule ``held_out_data``). Why by user and not by time: see
:mod:`pushrl.data.split`. Nothing is copied; each stage filters the log at load time.

The objective file (``examples/objective.toml`` is the documented example)::

    name = "my-app"                 # optional: the scenario's name (default: DIR's name)
    horizon_days = 28               # optional: episode length of training and comparisons
    [reward]                        # value of each push outcome; missing keys: defaults
    open = 1.0
    click = 2.0
    revenue = 0.02                  # per currency unit
    send_cost = 0.05                # attention a push costs
    unsubscribe_penalty = 10.0      # value of a subscriber lost
    [guardrails]                    # never violated, in training, evaluation and serving
    quiet_hours = [22, 8]           # local hours [start, end)
    max_sends_per_day = 2
    max_sends_per_week = 7

Without ``--objective`` the default objective (:data:`DEFAULT_OBJECTIVE`, the values above) is
used and a note says so.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from pushrl.cli._common import console, emit
from pushrl.errors import ScenarioError

#: The objective used without ``--objective`` (the default scenario's reward; the server's
#: default weekly cap of 7).
DEFAULT_OBJECTIVE: dict[str, Any] = {
    "reward": {"open": 1.0, "click": 2.0, "revenue": 0.02, "send_cost": 0.05,
               "unsubscribe_penalty": 10.0},
    "guardrails": {"quiet_hours": [22, 8], "max_sends_per_day": 2, "max_sends_per_week": 7},
}
_TOP_KEYS = {"name", "description", "horizon_days", "warm_start"}


def read_objective(path: Path | None) -> tuple[dict[str, Any], list[str]]:
    """The objective of ``path`` merged over :data:`DEFAULT_OBJECTIVE`, and notes on what was
    defaulted. Raises :class:`ScenarioError` for an unknown key or invalid TOML."""
    if path is None:
        return {k: dict(v) for k, v in DEFAULT_OBJECTIVE.items()}, [
            "no --objective given: using the default objective (reward open 1, click 2, "
            "revenue 0.02, send_cost 0.05, unsubscribe_penalty 10; quiet hours 22-8, at most "
            "2 pushes a day and 7 a week); declare yours like examples/objective.toml"]
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ScenarioError(f"--objective {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"--objective {path}: invalid TOML ({exc})") from None
    obj: dict[str, Any] = {k: dict(v) for k, v in DEFAULT_OBJECTIVE.items()}
    notes = []
    for key, val in doc.items():
        if key in obj:
            if not isinstance(val, dict):
                raise ScenarioError(f"--objective {path}: [{key}] must be a table")
            bad = sorted(set(val) - set(obj[key]))
            if bad:
                raise ScenarioError(f"--objective {path}: unknown key(s) {bad} in [{key}]; "
                                    f"known: {sorted(obj[key])}")
            missing = sorted(set(obj[key]) - set(val))
            if missing:
                notes.append(f"objective [{key}] does not declare {missing}: defaults used")
            obj[key].update(val)
        elif key in _TOP_KEYS:
            obj[key] = val
        else:
            raise ScenarioError(f"--objective {path}: unknown key {key!r}; known: "
                                f"{sorted(_TOP_KEYS | set(DEFAULT_OBJECTIVE))}")
    for sec in DEFAULT_OBJECTIVE:
        if sec not in doc:
            notes.append(f"objective has no [{sec}]: defaults used")
    return obj, notes


def log_clock(pushes: pd.DataFrame, activity: pd.DataFrame) -> tuple[str, int]:
    """(first UTC midnight after the last logged event, decision slots per day of the log).

    Slots per day: the number of distinct UTC hours decisions were logged at, when it divides
    24 (a log with decisions at every hour has 24), else 24.
    """
    ts = pd.to_datetime(pushes["ts"], utc=True)
    last = ts.max()
    if len(activity):
        last = max(last, pd.to_datetime(activity["ts"], utc=True).max())
    start = (last.floor("D") + pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    hours = np.unique(ts.dt.hour.to_numpy())
    slots = len(hours) if 24 % max(len(hours), 1) == 0 else 24
    return start, int(slots)


def onboard(data: Path, out: Path, objective: Path | None = None,
            say: Callable[[str], None] | None = None, *, holdout_frac: float = 0.2,
            holdout_seed: int = 0) -> dict[str, Any]:
    """Validate ``data``, split its users, fit the simulator to the training part into
    ``out/sim`` and write ``out/scenario.toml`` with the split.

    Returns a JSON-able summary (paths, validation counts, users per part, notes).

    Raises:
        DataError: ``holdout_frac`` outside (0, 0.5] or a part with too few users.
    """
    from pushrl.data.split import UserSplit, check_holdout_frac
    from pushrl.data.validate import load_dataset
    from pushrl.envs.scenario import INIT_SCENARIO, Scenario, write_scenario
    from pushrl.sim.engine import Guardrails, RewardWeights
    from pushrl.sim.fit import fit_sim
    from pushrl.sim.model import load_sim, save_sim

    say = say or (lambda m: None)
    split = UserSplit(check_holdout_frac(holdout_frac), holdout_seed)  # fails before loading
    obj, notes = read_objective(objective)
    t0 = time.perf_counter()
    say(f"validating {data}")
    full, report = load_dataset(data)
    whole = report.fingerprint
    start, slots = log_clock(full.pushes, full.activity)  # after every user's last event
    ds = split.apply(full)  # the training part; raises when a part is too small
    n_heldout = len(full.users) - len(ds.users)
    del full
    # the report of the part, as `load_dataset(data, split=...)` gives every training stage
    report = dataclasses.replace(report, fingerprint=ds.fingerprint(),
                                 summary={**report.summary, "split": ds.split})
    say(f"  {report.n_rejected} rows quarantined; {len(ds.users)} users for training, "
        f"{n_heldout} held out; fitting the simulator to the training users")
    model = fit_sim(ds, report, progress=say)
    sim_dir = out / "sim"
    save_sim(model, sim_dir)
    load_sim(sim_dir)  # round trip: checksums verified
    g = obj["guardrails"]
    quiet = g["quiet_hours"]
    if not (isinstance(quiet, list) and len(quiet) == 2):
        raise ScenarioError(f"objective guardrails.quiet_hours must be [start, end], got {quiet!r}")
    sc = Scenario(
        name=str(obj.get("name", out.resolve().name)),
        description=str(obj.get("description", f"onboarded by `pushrl init` from {data}")),
        path=None, data=Path(data).resolve(), sim=sim_dir.resolve(), start=start,
        horizon_days=int(obj.get("horizon_days", 28)), slots_per_day=slots,
        warm_start=str(obj.get("warm_start", "week")),
        reward=RewardWeights(**{k: float(v) for k, v in obj["reward"].items()}),
        guardrails=Guardrails(int(quiet[0]), int(quiet[1]), int(g["max_sends_per_day"]),
                              int(g["max_sends_per_week"])), split=split)
    written = write_scenario(out / INIT_SCENARIO, sc, comment=(
        f"Written by `pushrl init {data}"
        + (f" --objective {objective}`" if objective else "` (default objective)")
        + f".\nData fingerprint {whole} (training users: {report.fingerprint}); "
        "episodes start after the log."))
    return {"scenario": str(written.path), "sim": str(sim_dir), "data": str(data),
            "fingerprint": whole,
            "split": {"by": "user", "holdout_frac": split.holdout_frac,
                      "holdout_seed": split.seed, "train_users": len(ds.users),
                      "heldout_users": n_heldout, "train_fingerprint": report.fingerprint},
            "rejected": report.n_rejected,
            "start": start, "slots_per_day": slots, "reward": dataclasses.asdict(sc.reward),
            "guardrails": dataclasses.asdict(sc.guardrails), "notes": notes,
            "seconds": round(time.perf_counter() - t0, 1)}


def command(
    data: Path = typer.Argument(..., help="Your push log (pushlog v1 directory)."),
    out: Path = typer.Option(..., "--out", help="Directory for the simulator and scenario.toml."),
    objective: Path | None = typer.Option(
        None, "--objective", help="objective.toml: reward weights and guardrails (see "
                                  "examples/objective.toml); default: the default objective."),
    holdout_frac: float = typer.Option(
        0.2, "--holdout-frac", help="Share of users held out for `pushrl evaluate` and the "
                                    "gate, in (0, 0.5]; training stages never see them."),
    holdout_seed: int = typer.Option(0, "--holdout-seed", help="Seed of the user split."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Validate DATA, split its users (train / held out), fit the simulator to the training
    users and write DIR/scenario.toml for every later command."""
    say = (lambda m: None) if as_json else (lambda m: console.print(f"[dim]{m}[/]"))
    res = onboard(data, out, objective, say, holdout_frac=holdout_frac,
                  holdout_seed=holdout_seed)
    if as_json:
        emit(res, True)
        return
    for note in res["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    sc, sp = res["scenario"], res["split"]
    console.print(f"[bold]wrote {sc}[/] (simulator {res['sim']}, episodes from {res['start']}, "
                  f"{res['slots_per_day']} slots/day, {res['rejected']} rows quarantined, "
                  f"{sp['train_users']} users for training, {sp['heldout_users']} held out for "
                  f"evaluation, {res['seconds']} s)\nnext: pushrl train bandit --scenario {sc} "
                  f"--out policies/bandit; pushrl train timing --scenario {sc} --out "
                  f"policies/timing; pushrl evaluate --scenario {sc} --policy policies/bandit; "
                  f"pushrl serve --scenario {sc}")
