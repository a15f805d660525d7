"""`pushrl sim`: fit a user-response simulator from a log, and validate it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from pushrl.cli._common import console, emit, out

app = typer.Typer(help="Fit and validate the user-response simulator.", no_args_is_help=True)


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


@app.command("fit")
def fit(
    data: Path | None = typer.Argument(None, help="Dataset directory (pushlog v1); default: "
                                                  "the --scenario's data."),
    out_dir: Path = typer.Option(..., "--out", help="Artifact directory, e.g. "
                                                    "simulator_data/fitted/NAME."),
    scenario: str | None = typer.Option(
        None, "--scenario", help="DIR/scenario.toml from `pushrl init`: fit on the training "
                                 "users of its [split] when DATA is its data."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit summary as JSON."),
    sample_users: int | None = typer.Option(
        None, "--sample-users", min=0, help="Fit on a seeded sample of this many users, "
        "reading only their rows (0 = every user). Default: 20000 when the log has more "
        "than 20000 users, else every user."),
    sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of the user sample."),
) -> None:
    """Fit the simulator point-in-time through the feature pipeline; save a checksummed artifact."""
    from pushrl.data.io import table_rows
    from pushrl.data.sample import SAMPLE_ABOVE, SAMPLE_USERS, load_user_sample
    from pushrl.data.validate import load_dataset
    from pushrl.envs.scenario import load_scenario
    from pushrl.errors import PushrlError
    from pushrl.sim.fit import fit_sim
    from pushrl.sim.model import load_sim, save_sim

    t0 = time.perf_counter()
    sc = load_scenario(scenario) if scenario is not None else None
    data = data or (sc.data if sc is not None else None)
    if data is None:
        raise PushrlError("pass DATA or --scenario DIR/scenario.toml")
    part = (sc.data_split("train") if sc is not None
            and Path(data).resolve() == sc.data.resolve() else None)
    say = (lambda m: None) if as_json else (lambda m: console.print(f"[dim]{m}[/]"))
    if sample_users is None:
        n_users = table_rows(data, "users")
        sample_users = SAMPLE_USERS if n_users is not None and n_users > SAMPLE_ABOVE else 0
    if sample_users:
        # the sample's users of the scenario's training part; lineage: the whole log's
        # fingerprint (a `pushrl data validate` cache, else one streamed pass)
        ds, report, info = load_user_sample(data, sample_users, seed=sample_seed, split=part)
        say(f"fitting on a sample of {info['users']:,} of {info['of_users']:,} users "
            f"(seed {info['seed']}; --sample-users 0 fits every user)"
            + (f", {len(ds.users):,} of them in the training part" if part is not None else ""))
    else:
        ds, report = load_dataset(data, split=part)
    model = fit_sim(ds, report, progress=say)
    save_sim(model, out_dir)
    saved = load_sim(out_dir)  # round trip: checksums verified
    summary = {
        "out": str(out_dir), "kind": saved.kind, "fingerprint": report.fingerprint,
        "split": ds.split,
        "sha256": saved.meta["sha256"], "seconds": round(time.perf_counter() - t0, 1),
        "components": {k: {m: g.metrics.get(m) for m in (
            "n", "positives", "log_loss", "log_loss_baseline", "auc", "ece",
            "calibration_slope", "C")} for k, g in saved.glms.items()},
        "rhythm": saved.meta.get("rhythm"),
        **({"sample": saved.meta["sample"]} if "sample" in saved.meta else {}),
    }
    if as_json:
        emit(summary, True)
        return
    t = Table(title=f"simulator {saved.kind} fitted on {data} -> {out_dir}")
    for c in ("component", "rows", "positives", "log-loss", "baseline", "AUC", "ECE",
              "cal. slope"):
        t.add_column(c)
    for k, m in summary["components"].items():
        t.add_row(k, str(m["n"]), str(m["positives"]), _fmt(m["log_loss"]),
                  _fmt(m["log_loss_baseline"]), _fmt(m["auc"], ".3f"), _fmt(m["ece"]),
                  _fmt(m["calibration_slope"], ".2f"))
    out.print(t)
    r = summary["rhythm"] or {}
    if "loglik_per_event" in r:
        out.print(f"rhythm (held out {r['held_out']}): log-lik/event {r['loglik_per_event']:.3f} "
                  f"vs population baseline {r['loglik_per_event_baseline']:.3f}; by-hour "
                  f"correlation {r['corr_by_local_hour']:.3f}")
    if "sample" in summary:
        sm = summary["sample"]
        out.print(f"fitted on a sample of {sm['users']:,} of {sm['of_users']:,} users "
                  f"(seed {sm['seed']}: {sm['method']})")
    out.print(f"held-out metrics are grouped cross-validation by user; wrote {out_dir} "
              f"(sha256 {summary['sha256'][:12]}) in {summary['seconds']} s")


def _print_push(rep: dict[str, Any]) -> None:
    t = Table(title="components (held out)")
    for c in ("component", "source", "log-loss", "baseline", "AUC", "ECE"):
        t.add_column(c)
    for k, m in rep["components"].items():
        if k == "rhythm":
            continue
        t.add_row(k, m["source"], _fmt(m["log_loss"]), _fmt(m["log_loss_baseline"]),
                  _fmt(m["auc"], ".3f"), _fmt(m["ece"]))
    out.print(t)
    rp = rep.get("replay", {})
    if "overall" in rp:
        t = Table(title=f"replay of the logged actions ({rp['reps']} simulated replicates, "
                        f"{rp['matched_share']:.0%} of the pushes matched): log vs simulator")
        for c in ("aggregate", "log", "sim", "rel. error", "z"):
            t.add_column(c)
        for k, r in rp["overall"].items():
            t.add_row(k, _fmt(r["rate_log"]), _fmt(r["rate_sim"]), _fmt(r["rel_error"], "+.1%"),
                      _fmt(r["z"], "+.2f"))
        for r in rp["unsubscribe_rate_by_sends_7d"]:
            t.add_row(f"unsub | sends_7d {r['key']}", _fmt(r["rate_log"]), _fmt(r["rate_sim"]),
                      _fmt(r["rel_error"], "+.1%"), _fmt(r["z"], "+.2f"))
        out.print(t)
        out.print(f"open rate by local hour: max |z| {rp['max_abs_z_open_by_hour']:.2f} over 24 "
                  "hours (see --json for every hour)")
    tr = rep.get("truth")
    if tr:
        u = tr["unsubscribe"]
        t = Table(title="unsubscribe hazard per push: fitted vs ground truth (logged sends)")
        for c in ("sends_7d", "pushes", "fitted", "truth", "rel. error"):
            t.add_column(c)
        t.add_row("all (mean)", "", _fmt(u["mean_hazard_fit"], ".5f"),
                  _fmt(u["mean_hazard_true"], ".5f"), _fmt(u["rel_error"], "+.1%"))
        for r in u["by_sends_7d"]:
            t.add_row(r["sends_7d"], str(r["n"]), _fmt(r["hazard_fit"], ".5f"),
                      _fmt(r["hazard_true"], ".5f"), _fmt(r["rel_error"], "+.1%"))
        out.print(t)
        o = tr["open_prob_by_local_hour"]
        out.print(f"open probability by local hour: corr {o['corr']:.3f} with the truth, "
                  f"amplitude ratio (sd fit / sd true) {o['sd_ratio']:.2f}")
    for g in rep.get("gates", []):
        colour = "green" if g["pass"] else "red"
        out.print(f"[{colour}]{'PASS' if g['pass'] else 'FAIL'}[/] {g['name']} = "
                  f"{g['value']:.4f} ({g['threshold']})")


def _print_obd(rep: dict[str, Any]) -> None:
    m = rep["components"]["obd_click"]
    out.print(f"P(click | context, item, position) ({m['source']}): log-loss "
              f"{_fmt(m['log_loss'])} vs global rate {_fmt(m['log_loss_baseline'])}, AUC "
              f"{_fmt(m['auc'], '.3f')}, ECE {_fmt(m['ece'])} ({m['positives']} clicks in "
              f"{m['n']} rows)")
    rp = rep["replay"]
    t = Table(title="replay of the logged actions: CTR log vs simulator")
    for c in ("position", "n", "clicks", "CTR log", "CTR sim", "z"):
        t.add_column(c)
    for r in rp["ctr_by_position"]:
        t.add_row(str(r["key"]), str(r["n"]), str(r["clicks_log"]), _fmt(r["ctr_log"]),
                  _fmt(r["ctr_sim"]), _fmt(r["z"], "+.2f"))
    out.print(t)
    out.print(f"CTR by item: {rp['items_abs_z_over_2']} of {rp['items']} items with |z| > 2 "
              "(see --json)")


@app.command("validate")
def validate(
    sim: Path = typer.Argument(..., help="Fitted simulator directory."),
    data: Path = typer.Argument(..., help="Dataset directory (pushlog v1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    seed: int = typer.Option(0, help="Seed of the replay simulation."),
    sample_users: int | None = typer.Option(
        None, "--sample-users", min=0, metavar="<int>",
        help="Validate on a seeded sample of this many users (default when the log has more "
             "than 8M decisions: the simulator's own fit sample if it had one, else 20000; "
             "0 = every user)."),
    sample_seed: int | None = typer.Option(
        None, "--sample-seed", help="Seed of the user sample (default: the fit sample's, else 0)."),
) -> None:
    """Held-out metrics, calibration, replay test and (synthetic data) ground-truth gates."""
    from pushrl.data.sample import SAMPLE_USERS, load_bounded
    from pushrl.data.validate import should_stream
    from pushrl.sim.model import load_sim

    model = load_sim(sim)
    fit_sample = model.meta.get("sample") or {}
    if sample_users is None and should_stream(data):
        # the fit's own sample keeps "same data as the fit" (and its replay test) true
        sample_users = int(fit_sample.get("users") or SAMPLE_USERS)
    if sample_seed is None:
        sample_seed = int(fit_sample.get("seed") or 0)
    ds, report, sample = load_bounded(data, sample_users=sample_users or 0, seed=sample_seed)
    fit_split = model.meta.get("split") or {}
    if sample is None and fit_split.get("of") == report.fingerprint and fit_split.get("part"):
        # the simulator was fitted on one part of this log's user split (`pushrl init`):
        # validate on that part, so the replay test runs on the users it was fitted on
        from pushrl.data.split import UserSplit
        from pushrl.data.validate import load_dataset

        part = UserSplit(float(fit_split["holdout_frac"]), int(fit_split["seed"]),
                         str(fit_split["part"]))
        ds, report = load_dataset(data, quarantine=False, split=part)
        if not as_json:
            typer.echo(f"{data}: the simulator was fitted on its {part.part} users "
                       f"({len(ds.users)}); validating on them", err=True)
    if model.kind == "obd":
        from pushrl.sim.obd import validate_obd

        rep = validate_obd(model, ds, report)
    else:
        from pushrl.sim.validate import validate_push

        rep = validate_push(model, ds, report, seed=seed)
    if sample is not None:
        rep["sample"] = sample
    if as_json:
        emit(rep, True)
    else:
        out.print(f"simulator {sim} on {data} (same data as the fit: {rep['same_data_as_fit']})")
        if sample is not None:
            out.print(f"on a seeded sample of {sample['users']:,} of {sample['of_users']:,} "
                      f"users (seed {sample['seed']}; --sample-users 0 loads every user)")
        (_print_obd if model.kind == "obd" else _print_push)(rep)
    if not rep["passed"]:
        raise typer.Exit(1)
