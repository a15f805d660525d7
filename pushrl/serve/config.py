"""Configuration of the policy server (one dataclass, validated once)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable naming the default state directory.
HOME_ENV = "PUSHRL_HOME"
DEFAULT_HOME = ".pushrl"


def state_dir(explicit: str | Path | None = None) -> Path:
    """The server's state directory: ``explicit``, else ``$PUSHRL_HOME``, else ``./.pushrl``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path(DEFAULT_HOME)


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GuardrailConfig:
    """Serve-time guardrails, counted from the server's own decision log.

    Attributes:
        quiet_start: First local hour (0-23) of quiet hours (no sends).
        quiet_end: First local hour after quiet hours; equal to ``quiet_start`` disables them.
            The window wraps midnight when ``quiet_start > quiet_end`` (22 -> 8 = 22:00-07:59).
        max_per_day: Sends per user per local calendar day.
        max_per_week: Sends per user in any rolling 168 hour window.
    """

    quiet_start: int = 22
    quiet_end: int = 8
    max_per_day: int = 2
    max_per_week: int = 7

    def __post_init__(self) -> None:
        for name in ("quiet_start", "quiet_end"):
            v = getattr(self, name)
            if not 0 <= v <= 23:
                raise ValueError(f"`{name}` must be a local hour in 0..23, got {v}")
        if self.max_per_day < 0 or self.max_per_week < 0:
            raise ValueError(f"caps must be >= 0, got max_per_day={self.max_per_day}, "
                             f"max_per_week={self.max_per_week}")


@dataclass(frozen=True)
class ServeConfig:
    """Everything the app factory needs.

    Attributes:
        registry: Policy registry directory (``policies/``).
        state: State directory (durable log ``log.sqlite3``).
        api_keys: JSON file of hashed API keys; None means no authentication (``--insecure``
            or loopback only).
        guardrails: Serve-time guardrails.
        attribution_hours: Feedback later than this after the decision is kept but flagged
            ``late`` and not counted as an outcome.
        sync: SQLite ``synchronous`` level for the WAL: ``full`` (fsync at every group commit,
            survives power loss) or ``normal`` (survives a process crash only).
        seed: Seed of the decision RNG (None: fresh entropy).
        catalog: Optional pushlog dataset directory whose ``items`` seed the catalog and whose
            data fits the feature spec on first start.
        watch_seconds: How often the registry's active pointer is checked for changes made
            by ``pushrl policies promote`` (0 disables).
        max_batch: Largest ``/v1/decide/batch`` and ``/v1/events`` batch.
        max_horizon_hours: Largest ``horizon_hours``.
        time_window_days: ``(past, future)``: request times must lie within this many days
            of the wall clock (422 otherwise).
        accept_empty_state: Start even when ``feature_spec.json`` shows the state dir held a
            server before but the log is missing or empty (deliberately starting anew).
    """

    registry: Path = Path("policies")
    state: Path = field(default_factory=state_dir)
    api_keys: Path | None = None
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    attribution_hours: int = 72
    sync: str = "full"
    seed: int | None = None
    catalog: Path | None = None
    watch_seconds: float = 1.0
    max_batch: int = 1000
    max_horizon_hours: int = 168
    time_window_days: tuple[int, int] = (3653, 731)
    accept_empty_state: bool = False

    def __post_init__(self) -> None:
        if self.sync not in ("full", "normal"):
            raise ValueError(f"`sync` must be 'full' or 'normal', got {self.sync!r}")
        if self.attribution_hours <= 0:
            raise ValueError(f"`attribution_hours` must be > 0, got {self.attribution_hours}")
