"""`pushrl compare`: paired comparison of timing policies in a scenario's simulator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from pushrl.cli._common import console, emit, out, progress_bar

if TYPE_CHECKING:
    from pushrl.compare.result import CompareResult


def command(
    scenario: str = typer.Option("default", help="Scenario name (envs/NAME.toml) or path."),
    policy: list[str] = typer.Option(..., "--policy", "-p",
                                     help="Policy: baseline name (NAME or NAME:k=v,...), "
                                          "artifact path, or label=SPEC. Repeat."),
    users: int = typer.Option(10_000, help="Simulated users per seed."),
    days: int | None = typer.Option(None, help="Days to simulate (default: scenario horizon)."),
    seeds: int = typer.Option(1, min=1, help="Independent replications."),
    reference: str | None = typer.Option(None, help="Label to compare against (default: first)."),
    item_policy: str | None = typer.Option(None, "--item-policy",
                                           help="Item policy for all (artifact or baseline)."),
    out_dir: Path = typer.Option(Path("out/compare"), "--out", help="Report directory."),
    shard_size: int = typer.Option(25_000, "--shard-size",
                                   help="Users per shard (fixes the random streams)."),
    ray: bool = typer.Option(False, "--ray", help="Run shards on a local Ray."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="Join an existing Ray cluster (ray://host:port "
                                                "or auto)."),
    workers: int | None = typer.Option(None, help="CPUs of the local Ray (default: all)."),
    fatigue: float | None = typer.Option(None, help="What-if: fatigue multiplier."),
    shift: int | None = typer.Option(None, help="What-if: activity shift in hours."),
    organic: bool = typer.Option(False, "--organic", help="What-if: users also buy without a "
                                 "push (scenario organic_purchases); incremental metrics then "
                                 "differ from attributed ones."),
    channel_policy: list[str] | None = typer.Option(
        None, "--channel-policy", help="Channel choice: push-only, uniform, fixed:NAME or a "
        "`pushrl channels train` artifact; every --policy runs under each (label "
        "TIMING|CHANNEL) with per-channel response, cost and unsubscribes (a simulator "
        "fitted on a log with channels). Repeat."),
    channels: str | None = typer.Option(None, "--channels", help="With --channel-policy: a "
                                        "TOML file with [channels.NAME] tables or `default` "
                                        "(default: the scenario's [channels])."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    triggers: Path | None = typer.Option(
        None, "--triggers", help="Compare trigger DELAY policies on this trigger log "
        "(pushlog v1.1 with a triggers table, e.g. `pushrl data synth --world triggers`): "
        "recovered / incremental conversions, sends per recovered, by kind, paired CIs."),
    trigger_source: str = typer.Option(
        "auto", "--trigger-source", help="With --triggers: truth (the trigger world's "
        "ground_truth_triggers.parquet), fitted (a trigger simulator fitted from the log) or "
        "auto (truth when the log has it)."),
    holdout_frac: float = typer.Option(
        0.0, "--holdout-frac", help="With --triggers: compare on the held-out users of this "
        "seeded split (as `pushrl train triggers --holdout-frac`; 0 = every user)."),
    split_seed: int = typer.Option(0, "--split-seed", help="With --triggers: the split's seed."),
    trigger_holdout: list[str] | None = typer.Option(
        None, "--trigger-holdout", help="With --triggers: hold KIND=SHARE of the users out of "
        "a trigger kind under every policy (the same users as `pushrl serve "
        "--trigger-holdout` with the same --holdout-salt) and report the lift that holdout "
        "would measure. Repeat per kind."),
    holdout_salt: str = typer.Option("0", "--holdout-salt", help="With --trigger-holdout: "
                                     "the salt of the holdout hash (the server's)."),
) -> None:
    """Run policies on the same simulated users (common random numbers) and report."""
    from pushrl.compare.report import write_report
    from pushrl.compare.runner import compare

    if triggers is not None:
        _triggers(policy, triggers, trigger_source, reference, out_dir, as_json,
                  (holdout_frac, split_seed), (trigger_holdout or [], holdout_salt))
        return

    overrides: dict[str, object] = {}
    if fatigue is not None:
        overrides["fatigue_multiplier"] = fatigue
    if shift is not None:
        overrides["activity_shift_hours"] = shift
    if organic:
        overrides["organic_purchases"] = True
    unit = "shards" if ray or ray_address else "user-days"
    with progress_bar("simulating", 1, enabled=not as_json, unit=unit) as update:
        res = compare(policy, scenario=scenario, users=users, days=days, seeds=seeds,
                      reference=reference, item_policy=item_policy, shard_size=shard_size,
                      ray=ray, ray_address=ray_address, workers=workers, overrides=overrides,
                      channel_policies=channel_policy, channels=_channel_set(channels),
                      progress=update)
    html_path, md_path = write_report(res, out_dir)
    res.save(out_dir)
    payload = res.to_dict() | {"report_html": str(html_path), "report_md": str(md_path)}
    if as_json:
        emit(payload, True)
        return
    t = Table(title=f"{res.meta['scenario']}: {users} users x {res.meta['days']} days x "
                    f"{seeds} seed(s), reference {res.meta['reference']}",
              caption="objective per user; open and unsubscribe rates; revenue in the report",
              box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    # Fits 80 columns: a CI takes two lines, and long policy names fold rather than being cut.
    t.add_column("policy", overflow="fold", min_width=min(max(map(len, res.policies)), 24))
    for c in ("objective", "vs ref [95% CI]", "sends/day", "open", "unsub"):
        t.add_column(c, no_wrap=True, justify="right")
    s = res.summary.set_index(["policy", "metric"])["value"]
    p = res.paired.set_index(["policy", "metric"]) if len(res.paired) else None
    for pol in res.policies:
        if p is not None and (pol, "objective") in p.index:
            d = p.loc[(pol, "objective")]
            ci = f"{d['diff']:+.3f}\n[{d['lower']:+.3f}, {d['upper']:+.3f}]"
        else:
            ci = "reference"
        t.add_row(pol, f"{s[(pol, 'objective')]:.3f}", ci,
                  f"{s[(pol, 'sends_per_user_day')]:.3f}", f"{s[(pol, 'open_rate')]:.2%}",
                  f"{s[(pol, 'unsubscribe_rate')]:.2%}")
    out.print(t)
    _print_channels(res)
    console.print(f"report: {html_path.resolve()} (markdown: {md_path})  "
                  f"[{res.meta['seconds']} s, {res.meta['mode']}]")


def _triggers(policy: list[str], data: Path, source: str, reference: str | None,
              out_dir: Path, as_json: bool, split: tuple[float, int],
              holdout: tuple[list[str], str] = ([], "0")) -> None:
    """`pushrl compare --triggers DATA`: delay policies on the same triggers."""
    from pushrl.compare.trigger_report import write_trigger_report
    from pushrl.compare.triggers import compare_triggers
    from pushrl.errors import PushrlError
    from pushrl.rules.holdout import parse_trigger_holdouts

    try:
        kinds = parse_trigger_holdouts(holdout[0], holdout[1]) if holdout[0] else None
    except ValueError as exc:
        raise PushrlError(str(exc)) from None

    import contextlib

    with console.status("comparing delay policies", spinner="dots") if not as_json \
            else contextlib.nullcontext():
        res = compare_triggers(policy, data, source=source, reference=reference,
                               holdout_frac=split[0], split_seed=split[1],
                               trigger_holdouts=kinds)
    html_path, md_path = write_trigger_report(res, out_dir)
    res.save(out_dir)
    if as_json:
        emit(res.to_dict() | {"report_html": str(html_path), "report_md": str(md_path)}, True)
        return
    m = res.meta
    t = Table(title=f"{m['triggers']} triggers of {m['users']} users ({m['source']}), "
                    f"reference {m['reference']}",
              caption="per user: recovered (push-attributed) and incremental (over "
                      "organic) conversions, sends; s/rec = sends per recovered conversion",
              box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    t.add_column("policy", overflow="fold", min_width=min(max(map(len, res.policies)), 24))
    for c in ("recov.", "incr.", "incr. vs ref", "sends", "s/rec"):
        t.add_column(c, no_wrap=True, justify="right")
    s = res.summary.set_index(["policy", "metric"])["value"]
    p = res.paired.set_index(["policy", "metric"]) if len(res.paired) else None
    for pol in res.policies:
        key = (pol, "trigger_incremental_per_user")
        if p is not None and key in p.index:
            d = p.loc[key]
            ci = f"{d['diff']:+.3f}\n[{d['lower']:+.3f}, {d['upper']:+.3f}]"
        else:
            ci = "reference"
        t.add_row(pol, f"{s[(pol, 'trigger_recovered_per_user')]:.3f}",
                  f"{s[key]:.3f}", ci, f"{s[(pol, 'trigger_sends_per_user')]:.2f}",
                  f"{s[(pol, 'trigger_sends_per_recovered')]:.2f}")
    out.print(t)
    for h in m.get("holdout_lift", []):
        conv = {x["metric"]: x for x in h.get("metrics", [])}.get("conversions")
        ci = (f"{conv['lift']:+.4f} [{conv['low']:+.4f}, {conv['high']:+.4f}]" if conv
              else "n/a (< 2 users in an arm)")
        out.print(f"holdout {h['kind']} {100 * h['share']:g} % under {h['policy']}: "
                  f"{h['held_out']} of {h['users']} users held out; conversions lift per user "
                  f"{ci}; true incremental per treated user "
                  f"{h['true_incremental_per_treated_user']:+.4f}")
    console.print(f"report: {html_path.resolve()} (markdown: {md_path})  [{m['seconds']} s]")
def _channel_set(spec: str | None) -> object:
    """``--channels`` (None: the scenario's)."""
    if spec is None:
        return None
    from pushrl.rules.channels import DEFAULT_CHANNELS, ChannelSet

    if spec == "default":
        return DEFAULT_CHANNELS
    import tomllib

    from pushrl.errors import PushrlError

    try:
        return ChannelSet.from_dict(tomllib.loads(Path(spec).read_text()).get("channels", {}))
    except (OSError, ValueError) as exc:
        raise PushrlError(f"--channels {spec}: {exc}") from None


def _print_channels(res: CompareResult) -> None:
    """Per-channel sends per user and send cost per user of a channel comparison."""
    summary = res.summary
    s = summary.set_index(["policy", "metric"])["value"]
    chans = [m for m in dict.fromkeys(summary["metric"]) if str(m).startswith("sends_ch_")]
    if not chans:
        return
    t = Table(title="channels: sends per user and send cost per user", box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0), pad_edge=False)
    t.add_column("policy", overflow="fold")
    for m in chans:
        t.add_column(m[len("sends_ch_"):-len("_per_user")], justify="right", no_wrap=True)
    t.add_column("cost", justify="right", no_wrap=True)
    for pol in res.policies:
        t.add_row(pol, *(f"{s[(pol, m)]:.2f}" for m in chans),
                  f"{s[(pol, 'channel_cost_per_user')]:.4f}")
    out.print(t)
