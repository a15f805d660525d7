"""`pushrl channels`: train and evaluate the channel slot (push, email, in-app, or none)."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import emit

app = typer.Typer(help="Channels (push, email, in-app): train the channel bandit, evaluate "
                       "it off-policy against push-only.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print JSON.")
_SCENARIO = typer.Option(None, "--scenario",
                         help="Scenario whose [channels.NAME] tables define the channels "
                              "(default: pushrl.rules.channels.DEFAULT_CHANNELS).")
_PENALTY = typer.Option(None, "--unsub-penalty", min=0.0,
                        help="Unsubscribe penalty of the reward (default: the scenario's "
                             "[reward] unsubscribe_penalty; 1 without --scenario). The "
                             "channel's send cost is the scenario's [channels.NAME] cost.")
#: The reward without a scenario: clicks and revenue, the channel's send cost, an unsubscribe
#: penalty of 1 (an unsubscribe loses one channel of the user, the others stay).
_NO_SCENARIO_REWARD = {"open": 0.0, "click": 1.0, "revenue": 0.01, "send_cost": 0.0,
                       "unsubscribe_penalty": 1.0}


def _setup(scenario: str | None, penalty: float | None, *,
           need_channels: bool = True) -> tuple:
    """``(channels, reward weights)``: the scenario's ``[channels.NAME]`` tables and its
    ``[reward]`` weights (``penalty`` overrides the unsubscribe penalty), or
    :data:`~pushrl.rules.channels.DEFAULT_CHANNELS` and :data:`_NO_SCENARIO_REWARD`."""
    from dataclasses import replace

    from pushrl.rules.channels import DEFAULT_CHANNELS
    from pushrl.rules.reward import RewardWeights

    channels, w = DEFAULT_CHANNELS, RewardWeights(**_NO_SCENARIO_REWARD)
    if scenario is not None:
        from pushrl.envs.scenario import load_scenario
        from pushrl.errors import ScenarioError

        sc = load_scenario(scenario)
        if sc.channels is None and need_channels:
            raise ScenarioError(f"scenario {scenario} has no [channels.NAME] tables; add them "
                                "(see pushrl.rules.channels) or drop --scenario")
        channels, w = sc.channels or DEFAULT_CHANNELS, sc.reward
    if penalty is not None:
        w = replace(w, unsubscribe_penalty=float(penalty))
    return channels, w


@app.command("train")
def train(data: Path = typer.Argument(..., help="pushlog directory with channel and "
                                                 "pscore_channel (pushrl data synth "
                                                 "--channels)."),
          out: Path = typer.Option(Path("policies/vw-channel"), "--out",
                                   help="Registry directory (a new version vN inside)."),
          scenario: str | None = _SCENARIO, unsub_penalty: float | None = _PENALTY,
          budget: bool = typer.Option(False, "--budget/--no-budget",
                                      help="Choose the training unsubscribe penalty so that "
                                           "unsubscribes and cost stay below push-only's "
                                           "(off-policy, on validation users) instead of "
                                           "--unsub-multiple."),
          unsub_multiple: float | None = typer.Option(
              None, "--unsub-multiple", min=1.0,
              help="Training unsubscribe penalty = this x the reward's. Default: read off the "
                   "log (pushrl.ope.channel_price.select_unsub_multiple: the smallest multiple "
                   "whose model-estimated unsubscribes are <= 0.7 x push-only's)."),
          as_json: bool = _JSON) -> None:
    """Train the channel slot (VW over none + the channels, given user, item and recency)."""
    from pushrl.data.validate import load_dataset
    from pushrl.ope.evaluate_channel import select_unsub_penalty
    from pushrl.ope.channel_price import select_unsub_multiple
    from pushrl.policies.channel_policy import (
        UNSUB_PRICE_MULTIPLE,
        FixedChannel,
        channel_rounds,
        train_priced_channel_policy,
    )

    channels, w = _setup(scenario, unsub_penalty)
    ds, _ = load_dataset(data)
    rounds = channel_rounds(ds, channels, weights=w)
    sel = None
    push = (FixedChannel(arm=1 + channels.names.index("push"), name="push-only")
            if "push" in channels.names else None)
    if budget and push is not None:
        pol, sel = select_unsub_penalty(rounds, push)
        train_pen = sel["penalty"]
    elif unsub_multiple is None and push is not None:
        pol, sel = select_unsub_multiple(rounds, push)
        train_pen = (w.unsubscribe_penalty or 1.0) * sel["multiple"]
    else:
        mult = UNSUB_PRICE_MULTIPLE if unsub_multiple is None else unsub_multiple
        pol = train_priced_channel_policy(rounds, multiple=mult)
        train_pen = (w.unsubscribe_penalty or 1.0) * mult
    art = pol.save(out, {"data": str(data), "data_fingerprint": ds.fingerprint(),
                         "reward": w.describe(), "n_rounds": rounds.n_rounds,
                         "train_unsub_penalty": train_pen, "unsub_penalty_selection": sel})
    res = {"artifact": str(art), "arms": ["none", *channels.names], "n_rounds": rounds.n_rounds,
           "reward": w.describe(), "train_unsub_penalty": train_pen}
    if as_json:
        emit(res, True)
    else:
        pen = f", training unsubscribe penalty {res['train_unsub_penalty']:g}"
        typer.echo(f"wrote {art}: none + {len(channels)} channels, {rounds.n_rounds:,} "
                   f"rounds{pen}")


@app.command("evaluate")
def evaluate(policy: Path = typer.Argument(..., help="Channel policy artifact "
                                                     "(policies/NAME[/vN])."),
             data: Path = typer.Option(..., "--data", help="pushlog directory (held out)."),
             scenario: str | None = typer.Option(None, "--scenario",
                                                 help="Scenario whose [reward] weights "
                                                      "score the rounds (the channels are "
                                                      "the policy's)."),
             unsub_penalty: float | None = _PENALTY, as_json: bool = _JSON) -> None:
    """OPE (IPW, SNIPW, DR, SNDR) of a channel policy vs push-only, and the deployment gate."""
    from pushrl.data.validate import load_dataset
    from pushrl.errors import ArtifactError
    from pushrl.ope.evaluate_channel import evaluate_channel_policy
    from pushrl.policies.channel_policy import ChannelPolicy, channel_rounds
    from pushrl.policies.registry import load_policy

    pol = load_policy(policy)
    if not isinstance(pol, ChannelPolicy):
        raise ArtifactError(f"{policy} is not a channel policy; train one with "
                            "`pushrl channels train`")
    _, w = _setup(scenario, unsub_penalty, need_channels=False)
    ds, _ = load_dataset(data)
    rounds = channel_rounds(ds, pol.channels, weights=w)
    res = evaluate_channel_policy(rounds, pol)
    if as_json:
        emit(res, True)
        return
    from pushrl.cli.templates import echo_slot_evaluation

    echo_slot_evaluation(res, str(res["baseline"]))
