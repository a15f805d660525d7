"""`pushrl data`: validate, synthesize and import pushlog v1 datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pushrl.cli._common import console, emit, out, progress_bar

app = typer.Typer(help="Validate, synthesize and import pushlog v1 datasets.", no_args_is_help=True)


@app.command("validate")
def validate(
    data: Path = typer.Argument(..., help="Dataset directory (pushlog v1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Check a dataset against pushlog v1; quarantine bad rows to DIR/_rejected/."""
    from pushrl.data.validate import load_dataset

    _, report = load_dataset(data)
    d = report.to_dict()
    if as_json:
        emit(d, True)
        return
    t = Table(title=f"pushlog v1: {data}  (fingerprint {report.fingerprint})")
    for c in ("table", "read", "accepted", "rejected", "reasons"):
        t.add_column(c)
    for name, cnt in report.counts.items():
        t.add_row(name, str(cnt.read), str(cnt.accepted), str(cnt.rejected),
                  ", ".join(f"{k}: {v}" for k, v in cnt.reasons.items()))
    out.print(t)
    s = report.summary
    out.print(f"date range {s['date_range'][0]} .. {s['date_range'][1]}; users {s['users']}, "
              f"items {s['items']}, decisions {s['decisions']}, send rate {s['send_rate']:.4f}, "
              f"pscore coverage {s['pscore_coverage']:.1%}")
    out.print("outcome rates (per sent): " + ", ".join(
        f"{k}={v:.4f}" for k, v in s["outcomes"].items() if v is not None))
    if report.n_rejected:
        out.print(f"[yellow]{report.n_rejected} rows quarantined to {data}/_rejected/ "
                  f"(accepted + rejected = read: {report.reconciles()})[/]")


@app.command("synth")
def synth(
    out_dir: Path = typer.Option(..., "--out", help="Output directory."),
    users: int = typer.Option(2000, min=1, help="Number of users."),
    days: int = typer.Option(28, min=1, help="Days to simulate."),
    seed: int = typer.Option(0, help="Random seed."),
    items: int = typer.Option(100, min=8, help="Number of items."),
    slots_per_day: int = typer.Option(24, "--slots-per-day",
                                      help="Decision slots per day (divides 24)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate the synthetic push world with known ground truth."""
    from pushrl.data.synth import SynthConfig, synthesize
    from pushrl.errors import DataError

    if 24 % slots_per_day:
        raise DataError(f"--slots-per-day must divide 24, got {slots_per_day}")
    cfg = SynthConfig(users=users, days=days, seed=seed, items=items, slots_per_day=slots_per_day)
    with progress_bar("synthesizing", days * 24, enabled=not as_json, unit="hours") as update:
        res = synthesize(out_dir, cfg, progress=update)
    if as_json:
        emit(res, True)
    else:
        console.print(f"wrote {res['decisions']:,} decisions ({res['sent']:,} sent) and "
                      f"{res['activity_events']:,} activity events to {out_dir} in "
                      f"{res['seconds_total']} s")


@app.command("import-obd")
def import_obd(
    out_dir: Path = typer.Option(..., "--out", help="Output directory."),
    policy: str = typer.Option("random", help="Logging policy: random or bts."),
    campaign: str = typer.Option("all", help="Campaign: all, men or women."),
    source: Path | None = typer.Option(None, help="obp-0.4.1 wheel or extracted directory; "
                                                  "downloaded with pip when absent."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Convert the Open Bandit Dataset sample into pushlog v1."""
    from pushrl.data.obd import import_obd as run

    res = run(out_dir, policy, campaign, source)
    if as_json:
        emit(res, True)
    else:
        console.print(f"wrote {res['decisions']} OBD decisions ({policy}/{campaign}) to {out_dir}")
