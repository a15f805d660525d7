"""`pushrl serve`: run the policy server (FastAPI under uvicorn[standard])."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
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
    quiet_hours: str | None = typer.Option(None, "--quiet-hours", help="Local quiet hours "
                                           "START-END (e.g. 22-8; 0-0 disables); default: "
                                           "the --scenario's, else 22-8."),
    max_per_day: int | None = typer.Option(None, "--max-per-day", min=0, help="Sends per user "
                                           "per local day; default: the --scenario's, else 2."),
    max_per_week: int | None = typer.Option(None, "--max-per-week", min=0, help="Sends per "
                                            "user per 168 h; default: the --scenario's, else 7."),
    scenario: str | None = typer.Option(None, "--scenario", help="Scenario (DIR/scenario.toml "
                                        "from `pushrl init`): guardrails, and its data as the "
                                        "default --catalog."),
    attribution_hours: int = typer.Option(72, "--attribution-hours", min=1, help="Feedback "
                                          "window; later reports are kept but flagged."),
    sync: str = typer.Option("full", "--sync", help="SQLite synchronous: full (fsync per "
                             "group commit) or normal (crash-safe, not power-loss-safe)."),
    seed: int | None = typer.Option(None, "--seed", help="Decision RNG seed."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve decisions: out of the box the default baselines (most-active-hour timing with a
    daily cap, most-popular item) until a policy is promoted."""
    import uvicorn

    from pushrl.errors import PushrlError
    from pushrl.serve.app import create_app
    from pushrl.serve.config import GuardrailConfig, ServeConfig, is_loopback, state_dir

    if workers != 1:
        raise PushrlError("--workers must be 1: each user's feature state and guardrail "
                          "counters live in one process (a second worker would double-send); "
                          "scale out by running one server per user shard, each with its own "
                          "--state")
    if api_keys is None and not is_loopback(host) and not insecure:
        raise PushrlError(f"refusing to serve on non-loopback address {host} without API keys; "
                          "pass --api-keys FILE (python -m pushrl.serve.auth new --file FILE "
                          "--scopes decide,admin) or --insecure")
    if scenario is not None:
        from pushrl.envs.scenario import load_scenario

        sc = load_scenario(scenario)
        g = sc.guardrails
        quiet_hours = quiet_hours or f"{g.quiet_start}-{g.quiet_end}"
        max_per_day = g.max_sends_per_day if max_per_day is None else max_per_day
        max_per_week = g.max_sends_per_week if max_per_week is None else max_per_week
        catalog = catalog or sc.data
    quiet_hours = quiet_hours or "22-8"
    max_per_day = 2 if max_per_day is None else max_per_day
    max_per_week = 7 if max_per_week is None else max_per_week
    try:
        qs, qe = (int(x) for x in quiet_hours.split("-"))
    except ValueError:
        raise PushrlError(f"--quiet-hours must be START-END local hours, got {quiet_hours!r}") \
            from None
    cfg = ServeConfig(registry=registry, state=state_dir(state), api_keys=api_keys,
                      guardrails=GuardrailConfig(qs, qe, max_per_day, max_per_week),
                      attribution_hours=attribution_hours, sync=sync, seed=seed,
                      catalog=catalog)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, access_log=False,
                loop="uvloop", http="httptools", timeout_graceful_shutdown=5)
