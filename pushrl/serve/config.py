"""Configuration of the policy server (one dataclass, validated once)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path

from pushrl.rules.channels import ChannelSet
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.rules.uplift import UpliftGate
from pushrl.rules.volume import VolumeTarget
from pushrl.rules.triggers import TriggerConfig, TriggerKind

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
class ServeConfig:
    """Everything the app factory needs.

    Attributes:
        registry: Policy registry directory (``policies/``).
        state: State directory (durable log ``log.sqlite3``).
        api_keys: JSON file of hashed API keys; None means no authentication (``--insecure``
            or loopback only).
        guardrails: Serve-time guardrails (:class:`pushrl.rules.guardrails.Guardrails`);
            None applies the active timing policy's own (the scenario it was trained under),
            else the default scenario's (:func:`pushrl.serve.guardrails.effective`).
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
        public_docs: With ``api_keys``, serve ``/docs`` and ``/openapi.json`` without a key
            (default: any valid key is needed). Without keys everything is open.
        public_metrics: With ``api_keys``, serve ``/metrics`` without a key (default: any
            valid key is needed, e.g. a Prometheus ``authorization`` credential).
        time_window_days: ``(past, future)``: request times must lie within this many days
            of the wall clock (422 otherwise).
        late_bound_hours: Events (and feedback opens) up to this many hours before a user's
            state are placed in their hour; older events get ``409 event_too_late``
            (default 168: the longest feature window).
        holdout: A live holdout (``--holdout``); None runs the one stored in the state's log,
            if any (:mod:`pushrl.serve.holdout`).
        trigger_holdouts: Per-trigger-kind live holdouts (``--trigger-holdout KIND=SHARE``,
            :mod:`pushrl.serve.trigger_holdout`); kinds without one run the stored one, if any.
        volume: A global volume target (``--volume V``: at most V pushes per subscribed user
            per week on average), met by a price on each send (:mod:`pushrl.rules.volume`).
        uplift: Send only if it helps (``--uplift FILE``, :mod:`pushrl.rules.uplift`).
        accept_empty_state: Start even when ``feature_spec.json`` shows the state dir held a
            server before but the log is missing or empty (deliberately starting anew).
        triggers: Behaviour-trigger rules (``--triggers``); None: no triggers (events create
            none, ``/v1/triggers/due`` answers 409).
        trigger_delay_hours: The heuristic delay policy's delay (the kind's closest arm).
        trigger_delay_policy: A delay policy instead of the heuristic: a delay baseline's
            name (``delay-next-active-hour``) or a trained artifact directory (``pushrl
            train triggers``), loaded (checksums verified) at start.
        scheduled_priority: ``decide`` answers with a due trigger only when its priority is
            above this.
        templates: A message-template catalog (``templates/NAME[/vN]``): every sent push
            gets an approved template and its copy (:mod:`pushrl.serve.templates`).
        template_policy: A ``pushrl templates train`` artifact directory choosing the
            template (None: uniform over the approved templates).
        channels: Delivery channels (``--channels``): every send gets a channel, or none
            (:mod:`pushrl.serve.channels`); None: push only, as before.
        channel_policy: A ``pushrl channels train`` artifact directory choosing the channel
            (None: uniform over the allowed channels).
        plans: Plan files served at ``GET /v1/users/{id}/plan`` (``--plan``,
            :mod:`pushrl.serve.served_plans`).
        shard: ``(k, n)``: this server is shard ``k`` of ``n`` behind ``pushrl serve
            --shards n`` (:mod:`pushrl.serve.shards`): its decision ids start with ``sk.`` and
            it refuses users hashed to another shard. None: a plain server.
    """

    registry: Path = Path("policies")
    state: Path = field(default_factory=state_dir)
    api_keys: Path | None = None
    guardrails: Guardrails | None = None
    attribution_hours: int = 72
    sync: str = "full"
    seed: int | None = None
    catalog: Path | None = None
    watch_seconds: float = 1.0
    max_batch: int = 1000
    max_horizon_hours: int = 168
    public_docs: bool = False
    public_metrics: bool = False
    time_window_days: tuple[int, int] = (3653, 731)
    accept_empty_state: bool = False
    late_bound_hours: int = 168
    holdout: Holdout | None = None
    trigger_holdouts: Mapping[TriggerKind, Holdout] = field(default_factory=dict)
    volume: VolumeTarget | None = None
    uplift: UpliftGate | None = None
    triggers: TriggerConfig | None = None
    trigger_delay_hours: int = 1
    trigger_delay_policy: str | None = None
    scheduled_priority: int = 0
    templates: Path | None = None
    template_policy: str | None = None
    shard: tuple[int, int] | None = None
    plans: tuple[Path, ...] = ()
    channels: ChannelSet | None = None
    channel_policy: str | None = None

    def __post_init__(self) -> None:
        if self.sync not in ("full", "normal"):
            raise ValueError(f"`sync` must be 'full' or 'normal', got {self.sync!r}")
        if self.attribution_hours <= 0:
            raise ValueError(f"`attribution_hours` must be > 0, got {self.attribution_hours}")
        if self.template_policy is not None and self.templates is None:
            raise ValueError("--template-policy needs --templates (the catalog whose approved "
                             "templates are its arms)")
        if self.channel_policy is not None and self.channels is None:
            raise ValueError("--channel-policy needs --channels (the channels it chooses "
                             "between: a [channels.NAME] TOML file or `default`)")
