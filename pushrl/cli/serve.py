"""`pushrl serve`: run the policy server (FastAPI under uvicorn[standard])."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from pushrl.rules.channels import ChannelSet
    from pushrl.rules.guardrails import Guardrails
    from pushrl.rules.holdout import Holdout
    from pushrl.rules.uplift import UpliftGate
    from pushrl.rules.volume import VolumeTarget
    from pushrl.rules.triggers import TriggerConfig, TriggerKind


def command(
    ctx: typer.Context,
    registry: Path = typer.Option(Path("policies"), "--registry", help="Policy registry."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port."),
    state: Path | None = typer.Option(None, "--state", help="State dir (durable log); default "
                                      "$PUSHRL_HOME, else ./.pushrl."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (1: the user "
                                "state and guardrail counters live in one process)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback address "
                                  "without API keys."),
    api_keys: Path | None = typer.Option(None, "--api-keys", help="JSON file of hashed API "
                                         "keys (python -m pushrl.serve.auth new ...)."),
    catalog: Path | None = typer.Option(None, "--catalog", help="pushlog dataset whose items "
                                        "seed the catalog and fit the feature spec (first "
                                        "start)."),
    history: Path | None = typer.Option(None, "--history", help="pushlog dataset to import "
                                        "into a new --state first (`pushrl state import`); "
                                        "ignored once the state holds history."),
    quiet_hours: str | None = typer.Option(None, "--quiet-hours", help="Local quiet hours "
                                           "START-END (e.g. 22-8; 0-0 disables). Default: the "
                                           "--scenario's, else the active timing policy's."),
    max_per_day: int | None = typer.Option(None, "--max-per-day", min=0, help="Sends per user "
                                           "per local day (0 = no cap). Default: the "
                                           "--scenario's, else the active timing policy's."),
    max_per_week: int | None = typer.Option(None, "--max-per-week", min=0, help="Sends per user "
                                            "in the 168 h before the decision's hour (0 = no "
                                            "cap). Default: the --scenario's, else the active "
                                            "timing policy's."),
    scenario: str | None = typer.Option(None, "--scenario", help="Scenario (DIR/scenario.toml "
                                        "from `pushrl init`): guardrails, and its data as the "
                                        "default --catalog."),
    attribution_hours: int = typer.Option(72, "--attribution-hours", min=1, help="Feedback "
                                          "window; later reports are kept but flagged."),
    sync: str = typer.Option("full", "--sync", help="SQLite synchronous: full (fsync per "
                             "group commit) or normal (crash-safe, not power-loss-safe)."),
    seed: int | None = typer.Option(None, "--seed", help="Decision RNG seed."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    public_docs: bool = typer.Option(False, "--public-docs/--no-public-docs", help="With "
                                     "--api-keys, serve /docs and /openapi.json without a key "
                                     "(default: any valid key needed)."),
    public_metrics: bool = typer.Option(False, "--public-metrics/--no-public-metrics",
                                        help="With --api-keys, serve /metrics without a key "
                                        "(default: any valid key needed)."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1, help="Seconds "
                                         "until a request's headers must be complete (else "
                                         "408 and close)."),
    body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1, help="Seconds from "
                                       "the headers until the body must be complete (else "
                                       "the connection is closed)."),
    keep_alive: int = typer.Option(5, "--keep-alive", min=1, help="Seconds an idle "
                                   "keep-alive connection stays open."),
    limit_concurrency: int = typer.Option(1000, "--limit-concurrency", min=1, help="Open "
                                          "connections + running requests beyond which "
                                          "requests get 503."),
    time_window: str = typer.Option("3653,731", "--time-window", help="PAST,FUTURE days "
                                    "around the wall clock in which request times are "
                                    "accepted."),
    late_bound: int = typer.Option(168, "--late-bound", min=0, help="Hours an event may "
                                   "arrive after its user's state moved on (it is placed in "
                                   "its hour); later ones get 409 event_too_late. Default: "
                                   "the longest feature window."),
    accept_empty_state: bool = typer.Option(False, "--accept-empty-state", help="Start anew "
                                            "although the state dir's log is missing or "
                                            "empty (see README: state recovery)."),
    holdout_share: float | None = typer.Option(None, "--holdout", help="Live holdout: share "
                                               "of users (0-0.5, e.g. 0.05) never sent, to "
                                               "measure lift (`pushrl lift`). Stored in the "
                                               "state; default: the stored one, else the "
                                               "--scenario's [holdout], else none."),
    holdout_salt: str = typer.Option("0", "--holdout-salt", help="Salt of the holdout's user "
                                     "hash."),
    volume: float | None = typer.Option(None, "--volume", min=0.0, help="Global volume "
                                        "target: at most this many pushes per subscribed user "
                                        "per week on average, met by a price on each send "
                                        "(per-user caps stay hard guardrails)."),
    volume_value: Path | None = typer.Option(None, "--volume-value", help="With --volume: "
                                             "rank sends by an open model JSON "
                                             "(pushrl.train.send_value) times the fatigue "
                                             "discount instead of the engagement proxy."),
    volume_value_power: float = typer.Option(1.0, "--volume-value-power", help="With "
                                             "--volume: the proxy's power on engagement "
                                             "(engagement^p / (1 + sends_7d)^2)."),
    holdout_campaign: str = typer.Option("default", "--holdout-campaign", help="Campaign "
                                         "name of the holdout (part of the hash)."),
    holdout_incumbent: str = typer.Option("none", "--holdout-incumbent", help="Policy of the "
                                          "held-out users: `none` (no push) or a baseline "
                                          "(e.g. most-active-hour): lift is then measured "
                                          "against it."),
    uplift: Path | None = typer.Option(None, "--uplift", help="Send only if it helps: an "
                                       "uplift model JSON (pushrl.train.uplift); a send goes "
                                       "out only where its predicted incremental value is at "
                                       "least --uplift-threshold."),
    uplift_threshold: float = typer.Option(0.0, "--uplift-threshold", help="Least predicted "
                                           "incremental outcome per send (the model's units)."),
    uplift_min_hours: float = typer.Option(0.0, "--uplift-min-hours", help="Send only if it "
                                           "helps: no push within this many hours of the "
                                           "user's last purchase (purchase events, converted "
                                           "pushes); alone or with --uplift."),
    triggers: str | None = typer.Option(None, "--triggers", help="Behaviour-triggered "
                                        "pushes: a TOML file whose [triggers] table sets the "
                                        "rules ([triggers.cart] etc.; a scenario file works), "
                                        "or `default`. Off without it."),
    trigger_delay: int = typer.Option(1, "--trigger-delay-hours", min=0, help="Delay of the "
                                      "heuristic delay policy (the kind's closest arm)."),
    trigger_delay_policy: str | None = typer.Option(
        None, "--trigger-delay-policy", help="Delay policy of new triggers instead of the "
        "fixed delay: a delay baseline (delay-next-active-hour, delay-fixed-0h ...) or a "
        "`pushrl train triggers` artifact directory."),
    trigger_holdout: list[str] | None = typer.Option(
        None, "--trigger-holdout", help="Per-trigger-kind live holdout KIND=SHARE (e.g. "
        "cart=0.05; repeat for several kinds): that share of users is never sent that kind "
        "(other kinds and scheduled pushes still are); salt --holdout-salt; stored in the "
        "state; `pushrl lift --trigger-kind KIND` measures it."),
    scheduled_priority: int = typer.Option(0, "--scheduled-priority", help="`decide` answers "
                                           "with a due trigger only when its priority is above "
                                           "this."),
    templates: Path | None = typer.Option(None, "--templates", help="Message-template "
                                          "catalog (templates/NAME[/vN]): every sent push gets "
                                          "an approved template, its copy and "
                                          "pscore_template (checked at start, never at send)."),
    template_policy: str | None = typer.Option(None, "--template-policy", help="A `pushrl "
                                               "templates train` artifact choosing the "
                                               "template (default: uniform over the approved "
                                               "ones)."),
    channels: str | None = typer.Option(None, "--channels", help="Delivery channels: a "
                                        "TOML file with [channels.NAME] tables (cost, "
                                        "quiet_hours, caps, session_only; a scenario file "
                                        "works) or `default` (push, email, in_app). Every send "
                                        "then gets a channel (or none) and pscore_channel."),
    channel_policy: str | None = typer.Option(None, "--channel-policy", help="A `pushrl "
                                              "channels train` artifact choosing the channel "
                                              "(default: uniform over the allowed ones)."),
    shards: int = typer.Option(0, "--shards", min=0, help="Run N shard servers (users "
                               "partitioned by a hash of the user id, each with its own state "
                               "dir STATE/shard-k and durable log) behind one router on "
                               "--host/--port (1: router + one shard, to measure the router); "
                               "0: one plain server. See README: sharded serving."),
    shard_url: list[str] | None = typer.Option(None, "--shard-url", help="Route to shard "
                                               "servers running elsewhere instead of starting "
                                               "them: one URL per shard, in shard order (each "
                                               "started with --shard K/N). Repeat the option."),
    plan: list[Path] | None = typer.Option(None, "--plan", help="A `pushrl plan` file to "
                                           "serve at GET /v1/users/{id}/plan (repeat for "
                                           "several days)."),
    shard: str | None = typer.Option(None, "--shard", hidden=True, help="K/N: serve as shard "
                                     "K of N (set by --shards for its children)."),
    uds: Path | None = typer.Option(None, "--uds", hidden=True, help="Listen on this Unix "
                                    "socket instead of --host/--port."),
    watch_seconds: float = typer.Option(1.0, "--watch-seconds", min=0.0, help="How often the "
                                        "registry's active pointer is checked for a promote "
                                        "made by another process (0: never)."),
) -> None:
    """Serve decisions: out of the box the default baselines (most-active-hour timing with a
    daily cap, most-popular item) until a policy is promoted.

    Guardrails default to the active timing policy's (the scenario it was trained under, e.g.
    quiet 22-8, 2/day, 10/week); any of --quiet-hours/--max-per-day/--max-per-week sets all
    of them (unset ones take the default scenario's) and a mismatch with the policy's is
    logged as a warning."""
    import uvicorn

    from pushrl.errors import PushrlError
    from pushrl.serve.app import create_app
    from pushrl.rules.holdout import Holdout
    from pushrl.serve.holdout import check as check_holdout
    from pushrl.serve.config import ServeConfig, is_loopback, state_dir
    from pushrl.serve.timeouts import HttpLimits, uvicorn_config
    from pushrl.serve.history import check_history
    from pushrl.serve.store import check_log

    if workers != 1:
        raise PushrlError("--workers must be 1: each user's feature state and guardrail "
                          "counters live in one process (a second worker would double-send); "
                          "scale out by running one server per user shard, each with its own "
                          "--state")
    if api_keys is None and not is_loopback(host) and not insecure:
        raise PushrlError(f"refusing to serve on non-loopback address {host} without API keys; "
                          "pass --api-keys FILE (python -m pushrl.serve.auth new --file FILE "
                          "--scopes decide,admin) or --insecure")
    guardrails, sc_data, hold = guardrail_options(scenario, quiet_hours, max_per_day,
                                                  max_per_week)
    catalog = catalog or sc_data
    if holdout_share is not None:
        try:
            hold = Holdout(holdout_share, holdout_salt, holdout_campaign, holdout_incumbent)
        except ValueError as exc:
            raise PushrlError(f"--holdout: {exc}") from None
    kind_holds = _trigger_holdouts(trigger_holdout, holdout_salt, triggers, scenario)
    try:
        past, future = (int(x) for x in time_window.split(","))
    except ValueError:
        raise PushrlError(f"--time-window must be PAST,FUTURE days, got {time_window!r}") \
            from None
    if template_policy is not None and templates is None:
        raise PushrlError("--template-policy needs --templates (the catalog whose approved "
                          "templates are its arms)")
    chan_set = _channel_set(channels, channel_policy)
    if plan:
        from pushrl.serve.served_plans import check_plan_files

        check_plan_files(plan)
    if history is not None and shards:
        raise PushrlError("--history cannot be imported into a sharded state; import it into "
                          "a plain state dir, or start the shards without it (see README: "
                          "sharded serving)")
    cfg = ServeConfig(registry=registry, state=state_dir(state), api_keys=api_keys,
                      triggers=_trigger_rules(triggers), trigger_delay_hours=trigger_delay,
                      trigger_delay_policy=trigger_delay_policy,
                      scheduled_priority=scheduled_priority,
                      templates=templates, template_policy=template_policy,
                      guardrails=guardrails,
                      attribution_hours=attribution_hours, sync=sync, seed=seed,
                      catalog=catalog, public_docs=public_docs, public_metrics=public_metrics,
                      time_window_days=(past, future), accept_empty_state=accept_empty_state,
                      late_bound_hours=late_bound, holdout=hold, trigger_holdouts=kind_holds,
                      volume=(None if volume is None
                              else _volume(volume, volume_value, volume_value_power)),
                      uplift=_uplift(uplift, uplift_threshold, uplift_min_hours),
                      watch_seconds=watch_seconds, shard=_shard(shard),
                      plans=tuple(plan or ()), channels=chan_set,
                      channel_policy=channel_policy)
    if shard_url:
        from pushrl.serve.supervisor import run_router

        run_router(cfg, list(shard_url), host=host, port=port, limits=HttpLimits(
            header_timeout, body_timeout, keep_alive, limit_concurrency), log_level=log_level)
        return
    if shards:
        from pushrl.serve.supervisor import run_sharded

        run_sharded(cfg, shards, _child_args(ctx), host=host, port=port, limits=HttpLimits(
            header_timeout, body_timeout, keep_alive, limit_concurrency), log_level=log_level)
        return
    check_log(cfg.state, accept_empty=accept_empty_state)  # one clear line, not a traceback
    hold = check_holdout(cfg.state, hold)
    from pushrl.serve.trigger_holdout import check as check_kind_holdouts

    check_kind_holdouts(cfg.state, kind_holds)  # a changed share/salt: one line, not a 500
    if hold is not None and hold.has_incumbent:  # load it now: one line, not a 500 later
        from pushrl.compare.runner import PolicySpec

        try:
            PolicySpec.parse(hold.incumbent).load()
        except PushrlError as exc:
            raise PushrlError(f"--holdout-incumbent {hold.incumbent!r}: {exc}") from None
    if history is not None:
        _import_once(history, cfg.state, sync)
    check_history(cfg.state)
    limits = HttpLimits(header_timeout, body_timeout, keep_alive, limit_concurrency)
    uvicorn.Server(uvicorn_config(create_app(cfg), host=host, port=port, limits=limits,
                                  log_level=log_level, uds=uds)).run()


#: Options of the parent that its shards do not get (it sets theirs).
_PARENT_ONLY = {"host", "port", "state", "workers", "shards", "shard", "uds", "watch_seconds",
                "seed", "insecure", "history", "shard_url"}


def _channel_set(channels: str | None, channel_policy: str | None) -> ChannelSet | None:
    """``--channels`` as a :class:`~pushrl.rules.channels.ChannelSet` (None without)."""
    from pushrl.errors import PushrlError

    if channel_policy is not None and channels is None:
        raise PushrlError("--channel-policy needs --channels (the channels it chooses "
                          "between: a [channels.NAME] TOML file or `default`)")
    if channels is None:
        return None
    from pushrl.serve.channels import load_channel_config

    return load_channel_config(channels)


def _trigger_holdouts(specs: list[str] | None, salt: str, triggers: str | None,
                      scenario: str | None = None) -> dict[TriggerKind, Holdout]:
    """``--trigger-holdout KIND=SHARE`` options (:mod:`pushrl.serve.trigger_holdout`), else
    the ``--scenario``'s ``[holdout.triggers]`` table."""
    from pushrl.errors import PushrlError
    from pushrl.rules.holdout import parse_trigger_holdouts as parse

    try:
        out = parse(specs or (), salt)
    except ValueError as exc:
        raise PushrlError(str(exc)) from None
    where = "--trigger-holdout"
    if not out and scenario is not None:
        from pushrl.envs.scenario import load_scenario

        out = load_scenario(scenario).trigger_holdouts
        where = f"the scenario's [holdout.triggers] ({scenario})"
    if out and triggers is None:
        raise PushrlError(f"{where} needs --triggers (the rules that create the triggers it "
                          "holds out)")
    return dict(out)


def _child_args(ctx: typer.Context) -> list[str]:
    """The options this `pushrl serve --shards` was given, as its shards' command line
    (those left at their defaults and :data:`_PARENT_ONLY` left out)."""
    out: list[str] = []
    for p in ctx.command.params:
        if not getattr(p, "opts", None) or p.name in _PARENT_ONLY or p.name is None:
            continue
        v = ctx.params.get(p.name)
        if v is None or v == p.default:
            continue
        flag = max(p.opts, key=len)
        if isinstance(v, list | tuple):  # a repeatable option: once per value
            for x in v:
                out += [flag, str(x)]
        elif getattr(p, "is_flag", False):
            if p.secondary_opts:
                out.append(flag if v else max(p.secondary_opts, key=len))
            elif v:
                out.append(flag)
        else:
            out += [flag, str(v)]
    return out


def _shard(ref: str | None) -> tuple[int, int] | None:
    """``--shard K/N``."""
    from pushrl.errors import PushrlError

    if ref is None:
        return None
    try:
        k, n = (int(x) for x in ref.split("/"))
    except ValueError:
        raise PushrlError(f"--shard must be K/N, got {ref!r}") from None
    if not 0 <= k < n:
        raise PushrlError(f"--shard {ref}: K must be in 0..N-1")
    return k, n


def _uplift(path: Path | None, threshold: float, min_hours: float) -> UpliftGate | None:
    """``--uplift FILE --uplift-threshold T --uplift-min-hours H`` as a gate, None without
    either (one line on a bad file or value)."""
    from pushrl.errors import PushrlError
    from pushrl.rules.uplift import UpliftGate, UpliftModel

    if path is None and not min_hours:
        return None
    try:
        return UpliftGate(None if path is None else UpliftModel.load(path), threshold,
                          min_hours)
    except ValueError as exc:
        raise PushrlError(f"--uplift: {exc}") from None


def _volume(v: float, value: Path | None = None, power: float = 1.0) -> VolumeTarget:
    """``--volume V [--volume-value FILE] [--volume-value-power P]`` (one line on a bad value
    or file)."""
    from pushrl.errors import PushrlError
    from pushrl.rules.volume import OpenModel, VolumeTarget

    try:
        model = None if value is None else OpenModel.load(value)
    except ValueError as exc:
        raise PushrlError(f"--volume-value: {exc}") from None
    try:
        return VolumeTarget(v, value_model=model, value_power=power)
    except ValueError as exc:
        raise PushrlError(f"--volume: {exc}") from None
def _trigger_rules(ref: str | None) -> TriggerConfig | None:
    """``--triggers``: None, the default rules, or a TOML file's ``[triggers]`` table."""
    import tomllib

    from pushrl.errors import PushrlError
    from pushrl.rules.triggers import TriggerConfig as Config

    if ref is None:
        return None
    if ref == "default":
        return Config.default()
    try:
        data = tomllib.loads(Path(ref).read_text())
    except OSError as exc:
        raise PushrlError(f"--triggers {ref}: cannot read it ({exc.strerror}); pass a TOML "
                          "file with a [triggers] table, or `default`") from None
    except tomllib.TOMLDecodeError as exc:
        raise PushrlError(f"--triggers {ref} is not valid TOML ({exc})") from None
    if "triggers" not in data:
        raise PushrlError(f"--triggers {ref} has no [triggers] table; add e.g. "
                          "[triggers.cart] with wait_h = 1, or pass `default`")
    return Config.parse(data["triggers"])


def _import_once(data: Path, state: Path, sync: str) -> None:
    """``--history``: import ``data`` into ``state`` unless it already holds history."""
    import json
    import sqlite3

    from pushrl.serve.history import META_KEY, import_history
    from pushrl.serve.store import LOG_FILE

    db = state / LOG_FILE
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (META_KEY,)).fetchone()
        except sqlite3.Error:
            row = None
        finally:
            conn.close()
        if row is not None:
            src = json.loads(row[0])["source"]
            if Path(src) != data.resolve():
                typer.secho(f"warning: --history {data} ignored: {state} already holds the "
                            f"history of {src}", err=True, fg="yellow")
            return
    res = import_history(data, state, sync=sync)
    typer.echo(f"imported {res['n_users']:,} users and {res['n_activity']:,} events of {data} "
               f"into {state} in {res['seconds']['total']:.1f} s", err=True)


def guardrail_options(scenario: str | None, quiet_hours: str | None, max_per_day: int | None,
                      max_per_week: int | None,
                      ) -> tuple[Guardrails | None, Path | None, Holdout | None]:
    """The guardrails of ``--scenario`` overridden by ``--quiet-hours/--max-per-day/
    --max-per-week`` (None: none given, follow the active timing policy), the scenario's
    data directory and its live holdout (`pushrl serve` and `pushrl plan`)."""
    from pushrl.errors import PushrlError
    from pushrl.rules.guardrails import Guardrails

    base: Guardrails | None = None
    data: Path | None = None
    hold: Holdout | None = None
    if scenario is not None:
        from pushrl.envs.scenario import load_scenario  # (imports the simulator: only here)

        sc = load_scenario(scenario)
        base = sc.guardrails
        data = None if sc.data is None else Path(sc.data)
        hold = sc.holdout
    guardrails = base
    if quiet_hours is not None or max_per_day is not None or max_per_week is not None:
        d = base or Guardrails()
        try:
            qs, qe = ((int(x) for x in quiet_hours.split("-")) if quiet_hours is not None
                      else (d.quiet_start, d.quiet_end))
            guardrails = Guardrails(
                qs, qe, d.max_sends_per_day if max_per_day is None else max_per_day,
                d.max_sends_per_week if max_per_week is None else max_per_week)
        except ValueError as exc:
            raise PushrlError(f"--quiet-hours must be START-END local hours 0-23, got "
                              f"{quiet_hours!r} ({exc})") from None
    return guardrails, data, hold
