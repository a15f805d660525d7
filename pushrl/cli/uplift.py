"""`pushrl uplift fit`: the send-only-if-it-helps model from a server's own holdout log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pushrl.cli._common import console, emit

if TYPE_CHECKING:
    from pushrl.rules.triggers import TriggerConfig

app = typer.Typer(help="Send only if it helps: fit the uplift model of `pushrl serve --uplift`.",
                  no_args_is_help=True)


@app.command("fit")
def fit(
    out: Path = typer.Option(..., "--out", help="Where to write the model JSON (the file "
                             "`pushrl serve --uplift` reads)."),
    state: Path | None = typer.Option(None, "--state", help="Server state directory of a "
                                      "server that ran --holdout (default $PUSHRL_HOME, else "
                                      "./.pushrl)."),
    alpha: float = typer.Option(1e-3, "--alpha", min=0.0, help="Ridge penalty per row on "
                                "standardised features."),
    trigger_kinds: bool = typer.Option(
        False, "--trigger-kinds", help="Per trigger kind, from the live per-kind holdouts "
        "(`serve --trigger-holdout KIND=SHARE`: each trigger row's `holdout`/`p_holdout`) "
        "instead of the scheduled campaign's holdout: incremental conversions per trigger "
        "with a user-clustered 95% interval and a T-learner per kind."),
    data: Path | None = typer.Option(None, "--data", help="With --trigger-kinds: an exported "
                                     "log (`pushrl logs export`) instead of --state."),
    triggers: str | None = typer.Option(
        None, "--triggers", help="With --trigger-kinds: the server's --triggers (default or a "
        "TOML file with a [triggers] table); default: the log's ground_truth.json, else the "
        "default rules."),
    horizon_h: int = typer.Option(168, "--horizon-h", min=1, help="With --trigger-kinds: "
                                  "conversion window after each trigger's event (hours)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fitted model as JSON."),
) -> None:
    """Fit the T-learner of incremental conversions per send (pushed conversions plus
    `purchase` events, treated vs held-out users) from the server log's live holdout, on
    each user's features at their first decision; the same rows as `pushrl lift --state`.
    With --trigger-kinds: one estimate and model per trigger kind from the per-kind
    holdouts (`pushrl.train.trigger_uplift`)."""
    from pushrl.serve.config import state_dir
    from pushrl.serve.holdout import uplift_data
    from pushrl.train.uplift import fit_uplift

    if trigger_kinds:
        _fit_kinds(out, state, data, triggers, horizon_h, alpha, as_json)
        return
    if data is not None or triggers is not None:
        from pushrl.errors import PushrlError

        raise PushrlError("--data and --triggers go with --trigger-kinds (the scheduled "
                          "campaign's fit reads the server's --state)")
    src = state_dir(state)
    d = uplift_data(src)
    model = fit_uplift(d.raw, d.treated, d.outcome, d.sends, kind="conversions", alpha=alpha,
                       meta={"source": "server log", "state": str(src),
                             "days": round(d.days, 3)})
    path = model.save(out)
    if as_json:
        emit({"model": str(path), **model.to_dict()}, True)
        return
    pred = model.predict(d.raw[d.treated])
    console.print(f"uplift model: {path} ({int(d.treated.sum())} treated, "
                  f"{int((~d.treated).sum())} held-out users over {d.days:.1f} days; predicted "
                  f"incremental conversions per send: median {float(_median(pred)):.4g}); "
                  f"serve it with `pushrl serve --uplift {path} --uplift-threshold T`")


def _rules(ref: str | None, data: Path) -> TriggerConfig:
    """``--triggers``: the server's flag's rules, else the log's ground_truth.json, else the
    defaults."""
    import json

    from pushrl.cli.serve import _trigger_rules
    from pushrl.rules.triggers import TriggerConfig

    if ref is not None:
        cfg = _trigger_rules(ref)
        assert cfg is not None  # None only without a ref
        return cfg
    gt = Path(data) / "ground_truth.json"
    doc = json.loads(gt.read_text()) if gt.exists() else {}
    return TriggerConfig.parse(doc.get("triggers", {}).get("config"))


def _fit_kinds(out: Path, state: Path | None, data: Path | None, triggers: str | None,
               horizon_h: int, ridge: float, as_json: bool) -> None:
    """``--trigger-kinds``: per-kind estimates and models from an export (or a state,
    exported to a temporary directory first)."""
    import tempfile

    from rich.markup import escape

    from pushrl.cli._common import out as stdout
    from pushrl.data.validate import load_dataset
    from pushrl.errors import PushrlError
    from pushrl.train.trigger_uplift import from_log

    if data is not None and state is not None:
        raise PushrlError("pass --data (an exported log) or --state (a server's), not both")
    with tempfile.TemporaryDirectory(prefix="pushrl-uplift-") as tmp:
        src = data
        if src is None:
            from pushrl.serve.config import state_dir
            from pushrl.serve.export import export

            src = Path(export(state_dir(state), Path(tmp) / "export")["out"])
        cfg = _rules(triggers, src)
        ds, report = load_dataset(src)
        res = from_log(ds, cfg, horizon_h=horizon_h, ridge=ridge,
                       meta={"data": str(data) if data is not None else None,
                             "state": None if state is None else str(state),
                             "fingerprint": report.fingerprint})
    path = res.save(out)
    if as_json:
        emit({"model": str(path), **res.to_dict()}, True)
        return
    stdout.print(escape(f"incremental conversions per trigger, treated vs held out "
                        f"({100 * (1 - res.alpha):g}% CI clustered by user; window "
                        f"{res.horizon_h} h):"), soft_wrap=True)
    for k in res.kinds.values():
        p = (f"{k.p_holdout[0]:.3g}" if k.p_holdout[0] == k.p_holdout[1]
             else f"{k.p_holdout[0]:.3g}-{k.p_holdout[1]:.3g}")
        stdout.print(escape(
            f"  {k.kind}: {k.triggers:,} triggers ({k.held_out:,} held out, p {p}), converted "
            f"{k.treated_rate:.4f} treated vs {k.held_out_rate:.4f} held out: incremental "
            f"{k.incremental:+.4f} [{k.lower:+.4f}, {k.upper:+.4f}] per trigger, "
            f"{k.incremental_per_send:+.4f} per send; model: "
            f"{'yes' if k.model is not None else 'no (< 20 per arm)'}"), soft_wrap=True)
    console.print(f"per-kind uplift: {path}")


def _median(x: object) -> float:
    import numpy as np

    return float(np.median(np.asarray(x))) if np.asarray(x).size else float("nan")
