"""`pushrl uplift fit`: the send-only-if-it-helps model from a server's own holdout log."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import console, emit

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
    as_json: bool = typer.Option(False, "--json", help="Print the fitted model as JSON."),
) -> None:
    """Fit the T-learner of incremental conversions per send (pushed conversions plus
    `purchase` events, treated vs held-out users) from the server log's live holdout, on
    each user's features at their first decision; the same rows as `pushrl lift --state`."""
    from pushrl.serve.config import state_dir
    from pushrl.serve.holdout import uplift_data
    from pushrl.train.uplift import fit_uplift

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


def _median(x: object) -> float:
    import numpy as np

    return float(np.median(np.asarray(x))) if np.asarray(x).size else float("nan")
