"""`pushrl lift`: the measured incremental effect of a live holdout (treated vs held out)."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import console, emit


def command(
    data: Path | None = typer.Argument(None, help="pushlog dataset whose pushes carry the "
                                       "`holdout` arm (`pushrl logs export` of a server that "
                                       "ran --holdout); omit to read --state."),
    state: Path | None = typer.Option(None, "--state", help="Server state directory (default "
                                      "$PUSHRL_HOME, else ./.pushrl) when DATA is omitted."),
    mde: float | None = typer.Option(None, "--mde", help="Power calculator: days until a "
                                     "relative effect of this size (0.05 = 5 % of the held-out "
                                     "mean) is detectable at 80 % power."),
    power: float = typer.Option(0.8, "--power", min=0.5, max=0.999, help="Power for --mde."),
    pre_days: float | None = typer.Option(None, "--pre-days", min=0.0, help="CUPED pre-period: "
                                          "organic activity in this many days before the "
                                          "experiment's first decision (default: all before)."),
    no_cuped: bool = typer.Option(False, "--no-cuped", help="Report the days to --mde without "
                                  "CUPED's variance reduction."),
    report: Path | None = typer.Option(None, "--report", help="Write lift.html and lift.md "
                                       "(forest plot) into this directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the estimates as JSON."),
    trigger_kind: str | None = typer.Option(None, "--trigger-kind", help="The "
                                            "per-kind holdout of this trigger kind "
                                            "(`serve --trigger-holdout KIND=SHARE`): users "
                                            "with at least one such trigger, by their arm."),
) -> None:
    """Incremental opens, clicks, conversions, revenue, organic activity and sends per user
    of the treated vs the held-out users, with 95 % intervals (raw and CUPED-adjusted by
    pre-period activity), and optionally the days needed to detect an effect (--mde)."""
    from pushrl.compare import lift

    if trigger_kind is not None and data is not None:  # an exported log's triggers table
        from pushrl.compare.trigger_lift import from_log as kind_from_log

        ld = kind_from_log(data, trigger_kind, pre_days=pre_days)
    elif trigger_kind is not None:
        from pushrl.serve.config import state_dir
        from pushrl.serve.trigger_holdout import lift_data as kind_lift_data

        ld = kind_lift_data(state_dir(state), trigger_kind, pre_days=pre_days)
    elif data is not None:
        ld = lift.from_log(data, pre_days=pre_days)
    else:
        from pushrl.serve.config import state_dir
        from pushrl.serve.holdout import lift_data

        ld = lift_data(state_dir(state), pre_days=pre_days)
    est = lift.estimate(ld)
    if report is not None:
        lift.write_report(ld, est, report, mde)
    if as_json:
        metrics = [r.to_dict() for r in est]
        if mde is not None:
            for d, r in zip(metrics, est, strict=True):
                dd = lift.days_to_mde(r, mde, ld.days, power=power, cuped=not no_cuped)
                d["days_to_mde"] = round(dd, 2) if dd == dd else None
        emit({"source": ld.source, "users": len(ld.users),
              "held_out": int(ld.users["held_out"].sum()), "days": round(ld.days, 3),
              "metrics": metrics}, True)
        return
    md = lift.summary_markdown(ld, est, mde, power=power, cuped=not no_cuped)
    console.print(md.replace("**", ""))
    if report is not None:
        console.print(f"report: {report / 'lift.html'}")
