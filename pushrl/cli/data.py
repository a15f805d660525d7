"""`pushrl data`: validate, synthesize and import pushlog v1 datasets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from pushrl.cli._common import console, emit, out, progress_bar
from pushrl.errors import DataError, PushrlError

if TYPE_CHECKING:
    from pushrl.data.validate import ValidationReport

app = typer.Typer(help="Validate, synthesize and import pushlog v1 datasets.", no_args_is_help=True)


@app.command("validate")
def validate(
    data: Path = typer.Argument(..., help="Dataset directory (pushlog v1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (errors as "
                                 "{\"error\": ...} with a non-zero exit)."),
    min_ts: str | None = typer.Option(None, "--min-ts", help="Earliest accepted ts (default: "
                                      "meta.json ts_range, else 2000-01-01T00:00:00Z)."),
    max_ts: str | None = typer.Option(None, "--max-ts", help="Latest accepted ts (default: "
                                      "meta.json ts_range, else one year after now)."),
    declare_send_pscore: float | None = typer.Option(
        None, "--declare-send-pscore", help="Record in DATA/meta.json that the logger sent "
        "with this constant probability at every logged opportunity (1 = every logged row "
        "was sent for sure, e.g. OBD): for logs without a pscore_send column."),
    chunk_rows: int | None = typer.Option(
        None, "--chunk-rows", min=1000, help="Stream activity and pushes this many rows at a "
        "time (bounded memory). Default: streamed when the log has more than 8M "
        "decisions, else read whole."),
) -> None:
    """Check a dataset against pushlog v1; quarantine bad rows to DIR/_rejected/."""
    try:
        report = _validate(data, min_ts, max_ts, declare_send_pscore, chunk_rows)
    except (PushrlError, ValueError, OSError) as exc:  # the errors main() maps to one line
        if not as_json:
            raise
        emit({"error": str(exc), "type": type(exc).__name__}, True)
        raise typer.Exit(2) from None
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
    out.print(f"date range {s['date_range'][0]} .. {s['date_range'][1]} (accepted window "
              f"{s['ts_range'][0]} .. {s['ts_range'][1]}); users {s['users']}, "
              f"items {s['items']}, decisions {s['decisions']}, send rate {s['send_rate']:.4f}, "
              f"pscore coverage {s['pscore_coverage']:.1%}")
    out.print("outcome rates (per sent): " + ", ".join(
        f"{k}={v:.4f}" for k, v in s["outcomes"].items() if v is not None))
    _print_propensities(s["propensities"])
    if "streamed" in s:
        out.print(f"streamed in chunks of {s['streamed']['chunk_rows']:,} rows (the "
                  "fingerprint hashes the accepted rows in file order)")
    if report.n_rejected:
        out.print(f"[yellow]{report.n_rejected} rows quarantined to {data}/_rejected/ "
                  f"(accepted + rejected = read: {report.reconciles()})[/]")


def _validate(data: Path, min_ts: str | None, max_ts: str | None,
              send_pscore: float | None, chunk_rows: int | None) -> ValidationReport:
    import json

    from pushrl.data.contract import SEND_PSCORE_KEY, declared_send_pscore
    from pushrl.data.io import read_meta
    from pushrl.data.validate import CHUNK_ROWS, load_dataset, should_stream, validate_stream

    if send_pscore is not None:
        declared_send_pscore({SEND_PSCORE_KEY: send_pscore})  # refuse a bad value first
        if not data.is_dir():
            raise DataError(f"dataset directory {str(data)!r} does not exist")
        meta = {**read_meta(data), SEND_PSCORE_KEY: send_pscore}
        (data / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if chunk_rows is not None or should_stream(data):
        return validate_stream(data, chunk_rows=chunk_rows or CHUNK_ROWS, min_ts=min_ts,
                               max_ts=max_ts)
    return load_dataset(data, min_ts=min_ts, max_ts=max_ts)[1]


def _print_propensities(pr: dict[str, Any]) -> None:
    ok = ", ".join(k for k, v in pr["supports"].items() if v) or "none"
    no = ", ".join(k for k, v in pr["supports"].items() if not v) or "none"
    out.print(f"propensities: pscore {pr['pscore']}, pscore_send {pr['pscore_send']}, item "
              f"level {pr['item_pscore'] or 'unknown'}; supports: {ok}; not supported: {no}")
    for m in pr["missing"]:
        out.print(f"[yellow]  {m}[/]")


@app.command("synth")
def synth(
    out_dir: Path = typer.Option(..., "--out", help="Output directory."),
    users: int = typer.Option(2000, min=1, help="Number of users."),
    days: int = typer.Option(28, min=1, help="Days to simulate."),
    seed: int = typer.Option(0, help="Random seed."),
    items: int | None = typer.Option(None, min=8,
                                     help="Number of items (default: the world's, 100 for "
                                          "default)."),
    slots_per_day: int = typer.Option(24, "--slots-per-day",
                                      help="Decision slots per day (divides 24)."),
    world: str = typer.Option("default", "--world",
                              help="World family (pushrl.data.worlds): default, commuter, "
                                   "night-owls, taste-clicks, fatigue-heavy, triggers, lapsing."),
    param: list[str] = typer.Option([], "--param",
                                    help="Override a world parameter, KEY=VALUE (repeatable)."),
    templates: bool = typer.Option(False, "--templates",
                                   help="Add message-template effects and fatigue "
                                        "(pushrl.data.worlds.TEMPLATE_KNOBS; logs template_id)."),
    channels: bool = typer.Option(False, "--channels",
                                  help="Add channels push/email/in-app with opt-in, costs and "
                                       "responses (pushrl.data.worlds.CHANNEL_KNOBS; logs "
                                       "channel, pscore_channel, users.channels)."),
    part_users: int = typer.Option(10_000, "--part-users", min=1,
                                   help="Users per part: larger worlds are generated and "
                                        "written one user part at a time (bounded memory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate a synthetic push world with known ground truth."""
    from pushrl.data.synth import synthesize
    from pushrl.data.worlds import TRIGGER_WORLDS, parse_param, world_config
    from pushrl.errors import DataError

    if 24 % slots_per_day:
        raise DataError(f"--slots-per-day must divide 24, got {slots_per_day}")
    cfg = world_config(world, users=users, days=days, seed=seed, items=items,
                       slots_per_day=slots_per_day, templates=templates, channels=channels,
                       **dict(parse_param(p) for p in param))
    parts = -(-users // part_users)
    if world in TRIGGER_WORLDS:  # behaviour triggers (issue #16): one part, its own generator
        from pushrl.sim.trigger_world import synthesize_triggers

        if users > part_users:
            raise DataError(f"--world {world} is generated in one part: use --users <= "
                            f"--part-users ({part_users})")
        with progress_bar("synthesizing", None, enabled=not as_json, unit="events") as update:
            res = synthesize_triggers(out_dir, cfg, progress=update)
    else:
        with progress_bar("synthesizing", parts * days * 24, enabled=not as_json,
                          unit="hours") as update:
            res = synthesize(out_dir, cfg, progress=update, part_users=part_users)
    if as_json:
        emit(res, True)
    else:
        trig = (f", {res['triggers']:,} triggers ({res['trigger_pushes']:,} sent)"
                if "triggers" in res else "")
        console.print(f"wrote {res['decisions']:,} decisions ({res['sent']:,} sent){trig} and "
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
