"""Scenario files (``envs/*.toml``): which simulator, clock, reward weights, guardrails, knobs.

A scenario is named (``"default"`` -> ``envs/default.toml``, looked up in ``./envs``, the
repository checkout, then the copy shipped in the wheel: :mod:`pushrl.resources`) or given by
path. Relative paths inside the file are relative to the file. Every key can be overridden by
keyword (``gymnasium.make(..., scenario="default", truth=True, fatigue_multiplier=2.0)``);
flat keyword names are looked up in every section.

Reward weights (``[reward]``) of the default scenario, per push outcome:
``open = 1`` (the unit: one opened push), ``click = 2``, ``revenue = 0.02`` per currency unit
(a 50-unit order is worth one open), ``send_cost = 0.05`` (the attention a push costs, so a
push must have a few percent of open probability to pay), ``unsubscribe_penalty = 10`` (the
value a subscriber would bring after the episode: about 0.1 per day for 100 days). Within the
episode an unsubscribe also ends the episode, so it loses all later rewards too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushrl import resources
from pushrl.data.split import UserSplit
from pushrl.errors import DataError, ScenarioError
from pushrl.rules.channels import ChannelSet
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout, parse_trigger_holdouts
from pushrl.rules.triggers import TriggerKind
from pushrl.rules.reward import RewardWeights
from pushrl.sim.engine import SimConfig
from pushrl.sim.items import ITEM_POLICIES
from pushrl.sim.population import WARM_STARTS
from pushrl.units import bucket_of

#: Directory of the shipped scenario files (the checkout's ``envs/``, else the wheel's copy).
SCENARIO_DIR = resources.shipped_root() / "envs"
_SECTIONS = ("reward", "guardrails", "whatif", "items", "split", "holdout")


@dataclass(frozen=True)
class Scenario:
    """A validated scenario.

    Attributes:
        name: Scenario name.
        path: File it was loaded from (None when built in code).
        data: Dataset directory (ground truth lives beside it for synthetic data).
        sim: Fitted simulator directory.
        truth: Simulate with the synthetic world's ground truth instead of the fitted model.
        start: UTC start of every episode (ISO 8601).
        horizon_days: Episode length in days.
        slots_per_day: Decision slots per day (divides 24).
        warm_start: ``week``, ``full`` or ``none`` (see :mod:`pushrl.sim.population`).
        reward: Reward weights.
        guardrails: Quiet hours (local), caps per local day and per 7 days
            (:class:`pushrl.rules.guardrails.Guardrails`; 0 = no cap).
        fatigue_multiplier: What-if: scales fatigue in opens and unsubscribes.
        activity_shift_hours: What-if: users' rhythms move later by this many hours.
        organic: What-if: users also buy without a push and a push can only move a purchase
            (:mod:`pushrl.sim.organic`; ``[whatif] organic_purchases = true``).
        item_policy: Default item policy: ``uniform`` or ``popular``.
        candidates: PushItem candidates per round (0 = whole catalog).
        rounds_per_episode: PushItem rounds per episode.
        description: Free text.
        split: The user split of ``data`` (``[split]``, written by ``pushrl init``): training
            stages read its ``train`` part, ``pushrl evaluate`` its ``heldout`` part
            (:meth:`data_split`); ``None`` = no split, every stage reads the whole log.
        holdout: A live holdout (``[holdout]`` with ``share``, ``salt``, ``campaign``;
            :class:`pushrl.rules.holdout.Holdout`): ``pushrl serve --scenario`` runs it
            (the batch rollout takes a holdout only explicitly); ``None`` = none.
        trigger_holdouts: Live holdouts per trigger kind (``[holdout.triggers]``, ``kind =
            share``; :func:`pushrl.rules.holdout.parse_trigger_holdouts`): ``pushrl serve
            --scenario --triggers`` runs them unless ``--trigger-holdout`` is given.
        channels: Delivery channels (``[channels.NAME]`` tables,
            :class:`pushrl.rules.channels.ChannelSet`: cost, quiet hours and caps per
            channel); ``None`` = push only under ``guardrails``.
    """

    name: str
    path: Path | None
    data: Path
    sim: Path
    truth: bool = False
    start: str = "2026-03-30T00:00:00Z"
    horizon_days: int = 28
    slots_per_day: int = 24
    warm_start: str = "week"
    reward: RewardWeights = field(default_factory=RewardWeights)
    guardrails: Guardrails = field(default_factory=Guardrails)
    fatigue_multiplier: float = 1.0
    activity_shift_hours: int = 0
    organic: bool = False
    item_policy: str = "uniform"
    candidates: int = 0
    rounds_per_episode: int = 100
    description: str = ""
    split: UserSplit | None = None
    holdout: Holdout | None = None
    channels: ChannelSet | None = None
    trigger_holdouts: dict[TriggerKind, Holdout] = field(default_factory=dict)

    def data_split(self, part: str) -> UserSplit | None:
        """The ``part`` (``"train"`` or ``"heldout"``) of :attr:`data` to load, or ``None``
        when the scenario has no split."""
        return None if self.split is None else self.split.with_part(part)

    @property
    def step_hours(self) -> int:
        """Hours between decision slots."""
        return 24 // self.slots_per_day

    @property
    def horizon(self) -> int:
        """Decision steps per episode."""
        return self.horizon_days * self.slots_per_day

    @property
    def start_bucket(self) -> int:
        """UTC hour bucket of the first decision."""
        ts = dt.datetime.fromisoformat(self.start.replace("Z", "+00:00"))
        return bucket_of(int(ts.timestamp()))

    def sim_config(self) -> SimConfig:
        """The engine configuration of this scenario."""
        return SimConfig(self.start_bucket, self.horizon, self.step_hours, self.guardrails,
                         self.activity_shift_hours, self.warm_start)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for reports and model cards)."""
        d = dataclasses.asdict(self)
        d.update(path=str(self.path) if self.path else None, data=str(self.data),
                 sim=str(self.sim))
        return d


def _resolve(ref: str | Path) -> Path:
    p = Path(ref)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ScenarioError(f"scenario file {str(p)!r} does not exist; pass a name from "
                                f"{SCENARIO_DIR} or a path to a .toml file")
        return p
    cand = resources.find(Path("envs") / f"{ref}.toml")
    if cand is None:
        known = ", ".join(sorted({q.stem for d in resources.candidates("envs") if d.is_dir()
                                  for q in d.glob("*.toml")}))
        raise ScenarioError(f"unknown scenario {str(ref)!r}; known: {known} (or pass a path "
                            "to a .toml file)")
    return cand


def _flatten(doc: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in doc.items() if k not in _SECTIONS}
    for sec in _SECTIONS:
        for k, v in doc.get(sec, {}).items():
            flat[f"{sec}.{k}"] = v
    return flat


def _apply_overrides(flat: dict[str, Any], overrides: dict[str, Any]) -> None:
    for k, v in overrides.items():
        if v is None:
            continue
        if k in flat or k in _TOP:
            flat[k] = v
            continue
        hits = [f"{s}.{k}" for s in _SECTIONS if f"{s}.{k}" in _KNOWN]
        if not hits:
            raise ScenarioError(f"unknown scenario override {k!r}; known: "
                                f"{', '.join(sorted(_TOP | {x.split('.')[-1] for x in _KNOWN}))}")
        flat[hits[0]] = v


_TOP = {"name", "description", "data", "sim", "truth", "start", "horizon_days",
        "slots_per_day", "warm_start"}
_KNOWN = {*(f"reward.{f.name}" for f in dataclasses.fields(RewardWeights)),
          "guardrails.quiet_hours", "guardrails.max_sends_per_day",
          "guardrails.max_sends_per_week", "whatif.fatigue_multiplier",
          "whatif.activity_shift_hours", "whatif.organic_purchases", "items.policy",
          "items.candidates",
          "items.rounds_per_episode", "split.by", "split.holdout_frac", "split.holdout_seed",
          "holdout.share", "holdout.salt", "holdout.campaign", "holdout.incumbent",
          "holdout.triggers"}


def _check(cond: bool, path: Any, msg: str) -> None:
    if not cond:
        raise ScenarioError(f"scenario {path}: {msg}")


def load_scenario(ref: str | Path | Scenario = "default", **overrides: Any) -> Scenario:
    """Load, override and validate a scenario.

    Args:
        ref: A name in ``envs/``, a path to a ``.toml`` file, or a :class:`Scenario`.
        **overrides: Keys to replace (``truth=True``, ``max_sends_per_day=1``,
            ``quiet_hours=[21, 9]``, ``fatigue_multiplier=2.0``, ...).

    Raises:
        ScenarioError: unknown name or key, a bad value (the message names it and the fix).
    """
    if isinstance(ref, Scenario):
        if not overrides:
            return ref
        raise ScenarioError("overrides need a scenario name or path, not a Scenario object; "
                            "use dataclasses.replace")
    path = _resolve(ref)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {path}: invalid TOML ({exc})") from None
    channels = _channels(doc.pop("channels", None), path)
    flat = _flatten(doc)
    unknown = set(flat) - _TOP - _KNOWN
    _check(not unknown, path, f"unknown keys {sorted(unknown)}; known: {sorted(_TOP | _KNOWN)}")
    _apply_overrides(flat, overrides)
    for key in ("data", "sim"):
        _check(key in flat, path, f"missing `{key}` (a directory, relative to the file)")
    base = path.parent
    rel = lambda p: (base / p).resolve() if not Path(p).is_absolute() else Path(p)  # noqa: E731
    spd = int(flat.get("slots_per_day", 24))
    _check(spd >= 1 and 24 % spd == 0, path, f"slots_per_day must divide 24, got {spd}")
    horizon = int(flat.get("horizon_days", 28))
    _check(horizon >= 1, path, f"horizon_days must be >= 1, got {horizon}")
    warm = str(flat.get("warm_start", "week"))
    _check(warm in WARM_STARTS, path, f"warm_start must be one of {WARM_STARTS}, got {warm!r}")
    try:
        rw = RewardWeights(**{f.name: float(flat.get(f"reward.{f.name}", f.default))
                              for f in dataclasses.fields(RewardWeights)})
    except ValueError as exc:
        raise ScenarioError(f"scenario {path}: [reward] {exc}") from None
    quiet = flat.get("guardrails.quiet_hours", [Guardrails.quiet_start, Guardrails.quiet_end])
    _check(isinstance(quiet, list) and len(quiet) == 2 and all(
        isinstance(h, int) and 0 <= h <= 23 for h in quiet), path,
        f"guardrails.quiet_hours must be [start, end] local hours 0-23, got {quiet!r}")
    caps = [flat.get(f"guardrails.{k}", getattr(Guardrails, k))
            for k in ("max_sends_per_day", "max_sends_per_week")]
    _check(all(isinstance(c, numbers.Real) and not isinstance(c, bool) and float(c).is_integer()
               for c in caps), path, f"send caps must be whole numbers, got {caps}")
    caps = [int(c) for c in caps]
    _check(min(caps) >= 0, path, f"send caps must be >= 0 (0 = no cap), got {caps}")
    guardrails = Guardrails(quiet[0], quiet[1], caps[0], caps[1])
    fm = float(flat.get("whatif.fatigue_multiplier", 1.0))
    _check(fm >= 0, path, f"whatif.fatigue_multiplier must be >= 0, got {fm}")
    shift = int(flat.get("whatif.activity_shift_hours", 0))
    _check(-23 <= shift <= 23, path, f"whatif.activity_shift_hours must be in -23..23, got {shift}")
    pol = str(flat.get("items.policy", "uniform"))
    _check(pol in ITEM_POLICIES, path, f"items.policy must be one of {ITEM_POLICIES}, got {pol!r}")
    split = _split(flat, path)
    start = str(flat.get("start", Scenario.start))
    try:
        dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError(f"scenario {path}: start {start!r} is not ISO 8601 "
                            "(e.g. 2026-03-30T00:00:00Z)") from None
    return Scenario(
        name=str(flat.get("name", path.stem)), path=path, data=rel(flat["data"]),
        sim=rel(flat["sim"]), truth=bool(flat.get("truth", False)), start=start,
        horizon_days=horizon, slots_per_day=spd, warm_start=warm, reward=rw,
        guardrails=guardrails, fatigue_multiplier=fm,
        activity_shift_hours=shift, item_policy=pol,
        organic=bool(flat.get("whatif.organic_purchases", False)),
        candidates=int(flat.get("items.candidates", 0)),
        rounds_per_episode=int(flat.get("items.rounds_per_episode", 100)),
        description=str(flat.get("description", "")), split=split,
        holdout=_holdout(flat, path), channels=channels,
        trigger_holdouts=_trigger_holdouts(flat, path))


def _channels(doc: Any, path: Path) -> ChannelSet | None:
    """The ``[channels.NAME]`` tables as a :class:`ChannelSet` (the one channel schema), or
    None."""
    if doc is None:
        return None
    try:
        return ChannelSet.from_dict(doc)
    except ValueError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None


def _holdout(flat: dict[str, Any], path: Path) -> Holdout | None:
    """The ``[holdout]`` section as a :class:`Holdout`, or None."""
    d = {k.split(".", 1)[1]: v for k, v in flat.items()
         if k.startswith("holdout.") and k != "holdout.triggers"}
    if not d:
        return None
    try:
        return Holdout.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"scenario {path}: [holdout] {exc}") from None


def _trigger_holdouts(flat: dict[str, Any], path: Path) -> dict[TriggerKind, Holdout]:
    """The ``[holdout.triggers]`` table (``kind = share``) as one holdout per trigger kind
    (:func:`pushrl.rules.holdout.parse_trigger_holdouts`, salted with ``[holdout] salt``)."""
    table = flat.get("holdout.triggers")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ScenarioError(f"scenario {path}: [holdout] triggers must be a table of trigger "
                            "kind = share, e.g. [holdout.triggers] cart = 0.05")
    try:
        return parse_trigger_holdouts(table, str(flat.get("holdout.salt", "0")))
    except ValueError as exc:
        raise ScenarioError(f"scenario {path}: [holdout.triggers] {exc}") from None


def _split(flat: dict[str, Any], path: Path) -> UserSplit | None:
    """The ``[split]`` section as a :class:`UserSplit` (its ``train`` part), or None."""
    if not any(k.startswith("split.") for k in flat):
        return None
    by = flat.get("split.by", "user")
    _check(by == "user", path, f"split.by must be \"user\", got {by!r}")
    seed = flat.get("split.holdout_seed", 0)
    _check(isinstance(seed, int) and not isinstance(seed, bool), path,
           f"split.holdout_seed must be an integer, got {seed!r}")
    try:
        return UserSplit(float(flat.get("split.holdout_frac", 0.2)), int(seed))
    except (DataError, TypeError, ValueError) as exc:
        raise ScenarioError(f"scenario {path}: [split] {exc}") from None


# --- writing a scenario (pushrl init) and finding the one that belongs to a dataset ---------

def write_scenario(path: str | Path, sc: Scenario, *, comment: str = "") -> Scenario:
    """Write ``sc`` as a scenario TOML file and load it back (validated).

    ``data`` and ``sim`` are written relative to the file when they lie under its directory,
    else absolute. Returns the scenario as loaded from ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    base = p.parent.resolve()

    def where(d: Path) -> str:
        d = Path(d).resolve()
        return str(d.relative_to(base)) if d.is_relative_to(base) else str(d)

    g, r = sc.guardrails, sc.reward
    lines = [f"# {ln}" for ln in comment.splitlines()] + [
        f"name = {_q(sc.name)}", f"description = {_q(sc.description)}",
        f"data = {_q(where(sc.data))}", f"sim = {_q(where(sc.sim))}",
        f"truth = {str(sc.truth).lower()}", f"start = {_q(sc.start)}",
        f"horizon_days = {sc.horizon_days}", f"slots_per_day = {sc.slots_per_day}",
        f"warm_start = {_q(sc.warm_start)}", "", "[reward]",
        *(f"{f.name} = {float(getattr(r, f.name))!r}" for f in dataclasses.fields(r)), "",
        "[guardrails]", f"quiet_hours = [{g.quiet_start}, {g.quiet_end}]",
        f"max_sends_per_day = {g.max_sends_per_day}",
        f"max_sends_per_week = {g.max_sends_per_week}", "", "[whatif]",
        f"fatigue_multiplier = {sc.fatigue_multiplier!r}",
        f"activity_shift_hours = {sc.activity_shift_hours}",
        *(["organic_purchases = true"] if sc.organic else []), "", "[items]",
        f"policy = {_q(sc.item_policy)}", f"candidates = {sc.candidates}",
        f"rounds_per_episode = {sc.rounds_per_episode}"]
    if sc.split is not None:
        lines += ["", "# Training stages (train bandit, sim fit) read the users of `data` outside",
                  "# the held-out part; `pushrl evaluate` (the gate, promotion) reads only the",
                  "# held-out users, so the gate accepts it as data the policy never saw. By",
                  "# user, not by time: same weeks, logger and catalog on both sides, and no",
                  "# user's own history on both (pushrl/data/split.py).",
                  "[split]", 'by = "user"', f"holdout_frac = {sc.split.holdout_frac!r}",
                  f"holdout_seed = {sc.split.seed}"]
    for name, table in (sc.channels.to_dict() if sc.channels else {}).items():
        lines += ["", f"[channels.{name}]",
                  *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    p.write_text("\n".join(lines) + "\n")
    return load_scenario(p)


def _toml_value(v: Any) -> str:
    """A bool, number or list of ints as TOML."""
    return str(v).lower() if isinstance(v, bool) else repr(v)


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


#: File name ``pushrl init`` gives the scenario it writes.
INIT_SCENARIO = "scenario.toml"


def scenario_for_data(data: str | Path) -> Scenario | None:
    """The scenario whose ``data`` is ``data``: a ``scenario.toml`` written by ``pushrl init``
    in the dataset's directory or its parent, or ``default`` for the default's dataset.
    None when there is none (callers must then ask for ``--scenario``)."""
    d = Path(data).resolve()
    for cand in (d / INIT_SCENARIO, d.parent / INIT_SCENARIO,
                 *sorted(d.parent.glob(f"*/{INIT_SCENARIO}"))):
        if cand.is_file():
            try:
                sc = load_scenario(cand)
            except ScenarioError:
                continue
            if sc.data.resolve() == d:
                return sc
    default = load_scenario("default")
    return default if default.data.resolve() == d else None
