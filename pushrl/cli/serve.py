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
    quiet_hours: str = typer.Option("22-8", "--quiet-hours", help="Local quiet hours START-END "
                                    "(e.g. 22-8; 0-0 disables)."),
    max_per_day: int = typer.Option(2, "--max-per-day", min=0, help="Sends per user per "
                                    "local day."),
    max_per_week: int = typer.Option(7, "--max-per-week", min=0, help="Sends per user per "
                                     "168 h."),
    attribution_hours: int = typer.Option(72, "--attribution-hours", min=1, help="Feedback "
                                          "window; later reports are kept but flagged."),
    sync: str = typer.Option("full", "--sync", help="SQLite synchronous: full (fsync per "
                             "group commit) or normal (crash-safe, not power-loss-safe)."),
    seed: int | None = typer.Option(None, "--seed", help="Decision RNG seed."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    time_window: str = typer.Option("3653,731", "--time-window", help="PAST,FUTURE days "
                                    "around the wall clock in which request times are "
                                    "accepted."),
    accept_empty_state: bool = typer.Option(False, "--accept-empty-state", help="Start anew "
                                            "although the state dir's log is missing or "
                                            "empty (see README: state recovery)."),
) -> None:
    """Serve decisions: out of the box the default baselines (most-active-hour timing with a
    daily cap, most-popular item) until a policy is promoted."""
    import uvicorn

    from pushrl.errors import PushrlError
    from pushrl.serve.app import create_app
    from pushrl.serve.config import GuardrailConfig, ServeConfig, is_loopback, state_dir
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
    try:
        qs, qe = (int(x) for x in quiet_hours.split("-"))
    except ValueError:
        raise PushrlError(f"--quiet-hours must be START-END local hours, got {quiet_hours!r}") \
            from None
    try:
        past, future = (int(x) for x in time_window.split(","))
    except ValueError:
        raise PushrlError(f"--time-window must be PAST,FUTURE days, got {time_window!r}") \
            from None
    cfg = ServeConfig(registry=registry, state=state_dir(state), api_keys=api_keys,
                      guardrails=GuardrailConfig(qs, qe, max_per_day, max_per_week),
                      attribution_hours=attribution_hours, sync=sync, seed=seed,
                      catalog=catalog, time_window_days=(past, future),
                      accept_empty_state=accept_empty_state)
    check_log(cfg.state, accept_empty=accept_empty_state)  # one clear line, not a traceback
    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, access_log=False,
                loop="uvloop", http="httptools", timeout_graceful_shutdown=5)
