"""`pushrl profiles`: one profile row per user (peak hours, engagement, churn risk, category
affinities, RFM segment, push responsiveness), point-in-time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from pushrl.cli._common import console, emit, out

if TYPE_CHECKING:
    from pushrl.data.profiles import ProfileResult

PARQUET = "profiles.parquet"
MODEL = "profile_model.json"


def command(
    data: Path | None = typer.Argument(None, help="pushlog v1 directory (default: the "
                                       "--scenario's data)."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for profiles.parquet and "
                                 "profile_model.json (created)."),
    scenario: str | None = typer.Option(None, "--scenario", help="Scenario (DIR/scenario.toml "
                                        "from `pushrl init`): its data, and with a [split] the "
                                        "churn model is fitted on the training users and "
                                        "validated on the held-out users."),
    as_of: str | None = typer.Option(None, "--as-of", help="Profile time (ISO, e.g. "
                                     "2026-03-29T00:00:00Z, or unix seconds); only events "
                                     "before its hour count. Default: the end of the log."),
    report: Path | None = typer.Option(None, "--report", help="Also write an HTML report page "
                                       "(segments, peak hours, churn calibration)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write one row per user, computed from the feature pipeline at --as-of: weekday and
    weekend peak local hours, engagement score, churn risk (calibrated probability of no
    activity in the next 14 days), category affinities, RFM segment and open/click rates per
    channel. See `pushrl.data.profiles` for every definition."""
    import pandas as pd

    from pushrl.data.profiles import build_profiles
    from pushrl.data.validate import load_dataset
    from pushrl.errors import PushrlError

    sc = None
    if scenario is not None:
        from pushrl.envs.scenario import load_scenario

        sc = load_scenario(scenario)
    if data is None:
        if sc is None or sc.data is None:
            raise PushrlError("pass the pushlog directory (DATA) or a --scenario with data")
        data = Path(sc.data)
    if not data.is_dir():
        raise PushrlError(f"DATA {str(data)!r} is not a directory; pass a pushlog v1 directory "
                          "(e.g. from `pushrl data synth --out DIR`)")
    if out_dir.exists() and not out_dir.is_dir():
        raise PushrlError(f"--out {str(out_dir)!r} is a file; pass a directory")
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise PushrlError(f"--report {str(report)!r} must end in .html")
    t0 = time.perf_counter()
    ds, _ = load_dataset(data)
    train = evaluate = None
    if sc is not None and sc.split is not None and sc.data is not None and (
            Path(sc.data).resolve() == data.resolve()):
        evaluate = sc.split.held_out(ds.users["user_id"])
        train = ~evaluate
    res = build_profiles(ds, as_of, train=train, evaluate=evaluate)
    secs = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    res.table.to_parquet(out_dir / PARQUET, index=False)
    (out_dir / MODEL).write_text(res.model.to_json())
    page = None
    if report is not None:
        from pushrl.compare.profile_report import write_profile_report

        page = write_profile_report(res, report)
    v = {k: x for k, x in res.model.validation.items() if k != "reliability"}
    segs = res.table["rfm_segment"].value_counts().to_dict()
    summary = {"users": len(res.table),
               "as_of": str(pd.Timestamp(res.as_of, unit="s", tz="UTC")),
               "out": str(out_dir / PARQUET), "model": str(out_dir / MODEL),
               "report": None if page is None else str(page), "churn": v,
               "segments": {str(k): int(n) for k, n in segs.items()},
               "seconds": round(secs, 2)}
    if as_json:
        emit(summary, True)
        return
    _print(summary, res)


def _print(summary: dict[str, Any], res: ProfileResult) -> None:
    from pushrl.compare.profile_report import segment_table

    t = Table(title=f"{summary['users']:,} user profiles as of {summary['as_of']}",
              box=box.SIMPLE)
    for c in ("segment", "users", "share", "mean revenue", "mean churn risk"):
        t.add_column(c, justify="left" if c == "segment" else "right")
    for seg, row in segment_table(res.table).iterrows():
        t.add_row(str(seg), f"{int(row['users']):,}", f"{row['share']:.1%}",
                  f"{row['monetary_mean']:.2f}", f"{row['churn_risk_mean']:.3f}")
    out.print(t)
    c = summary["churn"]
    if "brier" in c:
        out.print(f"churn risk ({c['method']}): Brier {c['brier']:.4f}, AUC {c['auc']:.3f}, "
                  f"calibration error {c['ece']:.4f} over {c['n']:,} users")
    else:
        console.print(f"[yellow]warning:[/] no churn risk: {c.get('error')}")
    out.print(f"wrote {summary['out']} and {summary['model']}"
              + (f" and {summary['report']}" if summary["report"] else "")
              + f" in {summary['seconds']:.1f} s")
