"""`pushrl train triggers`: a learned trigger-delay policy (VW over delay arms) from the
``triggers`` table of a pushlog v1.1 log."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pushrl.cli._common import console, emit


def command(
    data: Path = typer.Option(..., "--data", help="pushlog v1.1 dataset directory with a "
                              "`triggers` table (e.g. `pushrl data synth --world triggers`)"),
    out: Path = typer.Option(..., "--out", help="registry target policies/NAME (new version)"),
    triggers: Path | None = typer.Option(
        None, "--triggers", help="JSON file of the [triggers] tables the log was made with "
                                 "(default: the data's ground_truth.json, else the defaults)"),
    holdout_frac: float = typer.Option(0.0, "--holdout-frac", help="train on the `train` part "
                                       "of a seeded user split holding out this share (0 = all)"),
    split_seed: int = typer.Option(0, "--split-seed", help="seed of the user split"),
    send_cost: str = typer.Option(
        "match", "--send-cost", help="reward cost of one trigger push, or match[:BASELINE]: "
        "chosen from this log so the policy sends no more than delay-fixed-1h (or BASELINE)"),
    unsub_cost: float = typer.Option(1.0, "--unsub-cost", help="reward cost of an unsubscribe"),
    horizon_h: int = typer.Option(168, "--horizon-h", help="conversion window after the event"),
    passes: int = typer.Option(4, help="passes over the trigger rounds"),
    seed: int = typer.Option(0, help="shuffle seed of the later passes"),
    gate_baseline: str = typer.Option(
        "delay-fixed-1h", "--gate-baseline", help="with --holdout-frac: the delay baseline the "
        "OPE gate compares the policy with on the held-out users (recorded in the card)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
) -> None:
    """Train a VW delay policy: each logged trigger decision is a round over the arms
    (delays then drop) with context pushrl/TriggerDelay-v1, reward converted - send_cost *
    sent - unsub_cost * unsubscribed and the logged arm's pscore. With --holdout-frac the
    policy is then evaluated off-policy on the held-out users (IPW, DR vs --gate-baseline,
    complete rounds only) and the deployment gate's decision is written into its model card,
    which `pushrl policies promote` applies."""
    from pushrl.data.split import UserSplit
    from pushrl.errors import DataError
    from pushrl.rules.triggers import TriggerConfig
    from pushrl.train.delay import train_delay

    if triggers is not None:
        try:
            cfg = TriggerConfig.parse(json.loads(Path(triggers).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"--triggers {triggers}: cannot read a JSON object ({e})") from None
    else:
        gt = Path(data) / "ground_truth.json"
        doc = json.loads(gt.read_text()) if gt.exists() else {}
        cfg = TriggerConfig.parse(doc.get("triggers", {}).get("config"))
    split = UserSplit(holdout_frac, split_seed, "train") if holdout_frac > 0 else None
    cost: float | str = send_cost
    if not send_cost.startswith("match"):
        try:
            cost = float(send_cost)
        except ValueError:
            raise DataError(f"--send-cost {send_cost!r}: give a number or match[:BASELINE]"
                            ) from None
    res = train_delay(data, out=out, triggers=cfg, split=split, send_cost=cost,
                      unsub_cost=unsub_cost, horizon_h=horizon_h, passes=passes, seed=seed)
    summary = {"artifact": str(res.artifact), **res.metrics,
               "send_cost": res.card["trigger_policy"]["send_cost"]}
    gate = None
    if split is not None:
        from pushrl.ope.evaluate_delay import gate_trained_delay

        ev = gate_trained_delay(res, data, split, triggers=cfg, baseline=gate_baseline,
                                seed=seed)
        gate = ev["gate"]
        summary["ope"] = {"rounds": ev["rounds"], "censored": ev["censored"],
                          "baseline": gate_baseline, "estimates": ev["estimates"],
                          "gate_passed": gate["passed"], "failed_rules": gate["failed_rules"]}
    if as_json:
        emit(summary, True)
        return
    console.print(f"trained delay policy on {int(res.metrics['train/rounds']):,} trigger "
                  f"rounds in {res.metrics['train/seconds']:.1f} s -> {res.artifact}")
    if gate is not None:
        o = summary["ope"]
        dr, ipw = o["estimates"]["dr"], o["estimates"]["ipw"]
        verdict = ("passed" if gate["passed"] else
                   "refused (" + ", ".join(gate["failed_rules"]) + ")")
        console.print(
            f"OPE on {o['rounds']:,} held-out trigger rounds ({o['censored']:,} censored) vs "
            f"{gate_baseline}: DR difference {dr['difference']:+.4f} [{dr['lower']:+.4f}, "
            f"{dr['upper']:+.4f}], IPW {ipw['difference']:+.4f} [{ipw['lower']:+.4f}, "
            f"{ipw['upper']:+.4f}], ESS {dr['ess']:.0f}; gate {verdict} (in the model card)")
