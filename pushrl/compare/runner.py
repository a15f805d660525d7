"""`pushrl compare`: run policies on the same simulated users and compare them, paired.

Users are drawn from the seed and split into a fixed *shard plan* (``shard_size`` users per
shard). Each shard runs every policy on the same users with counter-based random numbers
(:mod:`pushrl.sim.rng`), so differences between policies are paired (common random
numbers). Local mode runs the shards one after another; Ray mode runs the same shards as Ray
tasks, each loading its policies from their files inside the worker (VW workspaces do not
pickle). Because the shard plan, not the number of workers, defines every random stream,
local and Ray results are identical for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.compare.raytasks import run_tasks, shard_plan
from pushrl.compare.result import CompareResult
from pushrl.compare.stats import CHANNEL_SENDS, segment_table, summarize
from pushrl.errors import PushrlError
from pushrl.sim.population import Population

DEFAULT_SHARD = 25_000


@dataclass(frozen=True)
class PolicySpec:
    """A policy to compare: a baseline name (``NAME`` or ``NAME:k=v,k=v``) or an artifact path.

    Attributes:
        source: What the user wrote.
        label: Name in tables and plots.
    """

    source: str
    label: str

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        """Parse ``--policy`` text; ``label=SOURCE`` sets the label explicitly."""
        label, _, src = text.partition("=") if "=" in text.split(":")[0] else ("", "", text)
        src = src or text
        if Path(src).exists():  # absolute, so Ray workers in other directories find it
            src = str(Path(src).resolve())
        if not label:
            p = Path(src)
            label = f"{p.parent.name}@{p.name}" if p.name.startswith("v") and p.parent.name \
                else (p.name if p.exists() else src)
        return cls(src, label)

    def load(self) -> Any:
        """Build the policy (verifying artifact checksums before loading)."""
        from pushrl.policies.baselines import make_baseline
        from pushrl.policies.registry import load_policy

        if Path(self.source).exists():
            return load_policy(self.source)
        name, _, params = self.source.partition(":")
        kwargs: dict[str, Any] = {}
        for kv in filter(None, params.split(",")):
            k, sep, v = kv.partition("=")
            if not sep:
                raise PushrlError(f"policy parameter {kv!r} must be key=value "
                                  f"(e.g. fixed-hour:hour=19)")
            kwargs[k.strip().replace("-", "_")] = _scalar(v.strip())
        return make_baseline(name, **kwargs)


def _scalar(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


@dataclass
class ShardOutput:
    """What one shard returns (small, picklable)."""

    per_user: pd.DataFrame
    daily: pd.DataFrame
    hourly: pd.DataFrame
    activity: np.ndarray
    seconds: float


def run_shard(scenario: str, sources: Sequence[str], labels: Sequence[str],
              rows: np.ndarray, keys: np.ndarray, first_user: int, seed: int, days: int | None,
              item_source: str | None = None,
              overrides: dict[str, Any] | None = None,
              channels: dict[str, Any] | None = None,
              channel_sources: Sequence[str | None] | None = None,
              progress: Callable[[int], None] | None = None) -> ShardOutput:
    """Run every policy on one shard of users (the unit of local and Ray work).

    Args:
        scenario: Scenario name or path.
        sources: Policy specs (baseline names or artifact paths), loaded here.
        labels: Display names, aligned with ``sources``.
        rows: ``(n,)`` population rows of the shard's users.
        keys: ``(n,)`` episode keys of the shard's users.
        first_user: Global index of the shard's first user (for pairing).
        seed: Comparison seed.
        days: Days to simulate (None = scenario horizon).
        item_source: Item policy spec for every timing policy (None = scenario default).
        overrides: Scenario overrides (what-if knobs).
        channels: ``ChannelSet.to_dict()`` of the channels (with ``channel_sources``).
        channel_sources: Channel policy of each policy (aligned with ``sources``;
            :func:`~pushrl.policies.channel_policy.channel_policy_from_spec`), None = push
            only as before.
        progress: ``progress(user_days_done)`` within this shard, over all its policies.
    """
    from pushrl.envs.rollout import rollout
    from pushrl.envs.scenario import load_scenario
    from pushrl.envs.world import make_world

    t0 = time.perf_counter()
    sc = load_scenario(scenario, **(overrides or {}))
    if days is not None:
        sc = load_scenario(scenario, **(overrides or {}), horizon_days=int(days))
    world = make_world(sc)
    pop = world.model.population
    if pop is None:
        raise PushrlError(f"scenario {sc.name!r} has no user population (item-only simulator)")
    item = PolicySpec.parse(item_source).load() if item_source else None
    n = rows.size
    steps_per_day = sc.slots_per_day
    seg = _segments(pop, rows)
    frames, daily, hourly = [], [], []
    # the counterfactual: the same users under no push (common random numbers); without
    # organic purchases it has no conversions at all, so it is not simulated
    org0 = rev0 = np.zeros(n)
    if sc.organic:
        none = rollout(PolicySpec("never-send", "never-send").load(), sc, n_users=n, seed=seed,
                       item_policy=item, users=(rows, keys))
        org0, rev0 = none.extra["organic_conversions"], none.extra["organic_revenue"]
    for j, (src, label) in enumerate(zip(sources, labels, strict=True)):
        pol = PolicySpec(src, label).load()
        if getattr(pol, "kind", "timing") != "timing":
            raise PushrlError(f"policy {label!r} is an item policy; compare runs timing policies "
                              "(pass item policies with --item-policy)")
        step_cb = None if progress is None else (
            lambda step, _total, j=j: progress(n * (j * sc.horizon + step) // steps_per_day))
        res = rollout(pol, sc, n_users=n, seed=seed, item_policy=item, policy_name=label,
                      users=(rows, keys), progress=step_cb,
                      **_channel_kwargs(channels, channel_sources, j))
        f = res.to_frame()
        _channel_columns(f, res.extra)
        f.insert(0, "policy", label)
        f.insert(1, "seed", seed)
        f["user"] = first_user + np.arange(n)
        f["unsubscribed"] = f["unsubscribed"].astype(bool)
        f["sends_per_week"] = f["sends"] / res.days * 7
        f["incremental_conversions"] = f["conversions"] + f["organic_conversions"] - org0
        f["incremental_revenue"] = f["revenue"] + f["organic_revenue"] - rev0
        f["timezone"] = seg["timezone"]
        f["engagement"] = seg["engagement"]
        frames.append(f)
        by_day = res.extra.get("objective_by_day")
        n_days = res.days
        alive_end = np.array([((res.unsubscribe_step < 0) |
                               (res.unsubscribe_step >= (d + 1) * steps_per_day)).sum()
                              for d in range(n_days)])
        cum = np.cumsum(by_day.sum(axis=0)) if by_day is not None else np.full(n_days, np.nan)
        daily.append(pd.DataFrame({"policy": label, "day": np.arange(n_days),
                                   "objective_sum": cum, "subscribed_count": alive_end,
                                   "units": n}))
        hourly.append(pd.DataFrame({"policy": label, "local_hour": np.arange(24),
                                    "sends_sum": res.sends_by_local_hour.sum(axis=0),
                                    "units": n}))
    shift = int(sc.activity_shift_hours)
    act = np.roll(pop.rate_how[rows].reshape(n, 7, 24).sum(axis=(0, 1)), shift)
    return ShardOutput(pd.concat(frames, ignore_index=True), pd.concat(daily, ignore_index=True),
                       pd.concat(hourly, ignore_index=True), act, time.perf_counter() - t0)


def _channel_kwargs(channels: dict[str, Any] | None,
                    sources: Sequence[str | None] | None, j: int) -> dict[str, Any]:
    """``rollout``'s channel arguments for policy ``j`` (none: push only)."""
    if channels is None or sources is None or sources[j] is None:
        return {}
    from pushrl.policies.channel_policy import channel_policy_from_spec
    from pushrl.rules.channels import ChannelSet

    cs = ChannelSet.from_dict(channels)
    return {"channels": cs, "channel_policy": channel_policy_from_spec(str(sources[j]), cs)}


def _channel_columns(f: pd.DataFrame, extra: dict[str, Any]) -> None:
    """Per-channel sends (``sends_ch_<name>``) and the send cost of a channel rollout."""
    if "channel_sends" not in extra:
        return
    for k, name in enumerate(extra["channel_names"]):
        f[f"{CHANNEL_SENDS}{name}"] = extra["channel_sends"][:, k]
    f["channel_cost"] = extra["channel_cost"]


def reference_label(labels: Sequence[str], reference: str | None) -> str:
    """The reference policy's label (``reference``, default the first of ``labels``) once
    the labels are checked to be unique.

    Raises:
        PushrlError: a repeated label, or ``reference`` not among ``labels``.
    """
    if len(set(labels)) != len(labels):
        raise PushrlError(f"policy labels must be unique, got {labels}; name them label=SPEC")
    ref = reference or labels[0]
    if ref not in labels:
        raise PushrlError(f"--reference {ref!r} is not among the policies {labels}")
    return ref


def _segments(pop: Population, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Time zone and engagement tercile (logged open rate, smoothed) of each user."""
    rate = (pop.hist_opens + 1.0) / (pop.hist_sends + 10.0)
    q = np.quantile(rate, [1 / 3, 2 / 3])
    eng = np.array(["low", "mid", "high"])[np.searchsorted(q, rate[rows], side="right")]
    return {"timezone": np.asarray(pop.timezone)[rows], "engagement": eng}


def _combine(outs: list[ShardOutput]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                               np.ndarray]:
    per_user = pd.concat([o.per_user for o in outs], ignore_index=True)
    d = pd.concat([o.daily for o in outs]).groupby(["policy", "day"], sort=False).sum()
    d = d.reset_index()
    daily = pd.DataFrame({"policy": d["policy"], "day": d["day"] + 1,
                          "objective": d["objective_sum"] / d["units"],
                          "subscribed": d["subscribed_count"] / d["units"]})
    h = pd.concat([o.hourly for o in outs]).groupby(["policy", "local_hour"], sort=False).sum()
    h = h.reset_index()
    hourly = pd.DataFrame({"policy": h["policy"], "local_hour": h["local_hour"],
                           "sends": h["sends_sum"] / h["units"]})
    act = np.sum([o.activity for o in outs], axis=0)
    return per_user, daily, hourly, act / act.sum()


def compare(policies: Sequence[str], *, scenario: str = "default", users: int = 10_000,
            days: int | None = None, seeds: int = 1, reference: str | None = None,
            item_policy: str | None = None, shard_size: int = DEFAULT_SHARD,
            ray: bool = False, ray_address: str | None = None, workers: int | None = None,
            overrides: dict[str, Any] | None = None,
            channel_policies: Sequence[str] | None = None, channels: Any = None,
            progress: Callable[[int, int], None] | None = None) -> CompareResult:
    """Compare timing policies in a scenario's simulator (the Python API of `pushrl compare`).

    Args:
        policies: Policy specs (baseline names, ``NAME:k=v``, artifact paths, or
            ``label=SPEC``).
        scenario: Scenario name or path.
        users: Simulated users per seed.
        days: Days (None = the scenario's horizon).
        seeds: Independent replications; seed ``s`` draws its own users.
        reference: Label every other policy is compared with (default: the first).
        item_policy: Item policy for all (None = scenario default).
        shard_size: Users per shard (defines the random streams; keep it fixed to reproduce).
        ray: Run shards as Ray tasks on a local Ray (or ``ray_address``).
        ray_address: Join an existing Ray cluster.
        workers: CPUs of the local Ray (default: all).
        overrides: Scenario overrides (``fatigue_multiplier=2`` ...).
        channel_policies: Channel policies (``push-only``, ``uniform``, ``fixed:NAME``, an
            artifact directory): every timing policy runs once under each, labelled
            ``TIMING|CHANNEL``, with per-channel response, cost and unsubscribes
            (:mod:`pushrl.sim.channels`; needs a simulator fitted on a log with channels).
            None: push only.
        channels: A :class:`~pushrl.rules.channels.ChannelSet` (default: the scenario's
            ``[channels.NAME]`` tables).
        progress: ``progress(done, total)`` in user-days (users x days x policies) when local,
            in shards with Ray.

    Returns:
        A :class:`CompareResult` whose frames are ready for a notebook.
    """
    from pushrl.envs.rollout import draw_users
    from pushrl.envs.scenario import load_scenario
    from pushrl.envs.world import make_world

    if not policies:
        raise PushrlError("give at least one --policy (e.g. --policy most-active-hour)")
    if users < 2:
        raise PushrlError(f"--users must be >= 2 for confidence intervals, got {users}")
    specs = [PolicySpec.parse(p) for p in policies]
    labels = [s.label for s in specs]
    ch_doc, ch_src = _channel_plan(channel_policies, channels, scenario, overrides)
    if ch_src is not None:  # every timing policy under every channel policy
        specs = [s for s in specs for _ in channel_policies or ()]
        labels = [f"{lab}|{c}" for lab in labels for c in channel_policies or ()]
        ch_src = [c for _ in policies for c in ch_src]
    ref = reference_label(labels, reference)
    for s in specs:  # fail fast, before any simulation or Ray start-up
        s.load()
    sc = load_scenario(scenario, **(overrides or {}))
    pop = make_world(sc).model.population
    if pop is None:
        raise PushrlError(f"scenario {sc.name!r} simulates items only; compare needs a timing "
                          "scenario such as default")
    n_pop = len(pop)
    tasks = []
    for seed in range(seeds):
        rows, keys = draw_users(seed, users, n_pop)
        for a, b in shard_plan(users, shard_size):
            tasks.append((str(scenario), [s.source for s in specs], labels, rows[a:b],
                          keys[a:b], a, seed, days, item_policy, overrides or {}, ch_doc,
                          ch_src))
    t0 = time.perf_counter()
    user_days = len(specs) * (days if days is not None else sc.horizon_days)
    outs = run_tasks(run_shard, tasks, ray_address, workers, progress) \
        if (ray or ray_address) else \
        _run_local(tasks, progress, user_days)
    wall = time.perf_counter() - t0
    per_user, daily, hourly, act = _combine(outs)
    n_days = int(daily["day"].max())
    summary, paired = summarize(per_user, reference=ref, days=n_days)
    segments = {by: segment_table(per_user, by, days=n_days) for by in ("timezone", "engagement")}
    meta = {"scenario": sc.name, "scenario_ref": str(scenario), "users": users, "days": n_days,
            "seeds": seeds, "reference": ref, "policies": labels,
            "sources": [s.source for s in specs], "item_policy": item_policy or sc.item_policy,
            "shard_size": shard_size, "shards": len(tasks), "mode": "ray" if ray or ray_address
            else "local", "seconds": round(wall, 2), "overrides": overrides or {},
            "channels": ch_doc, "channel_policies": list(channel_policies or [])}
    return CompareResult(per_user, summary, paired, segments, daily, hourly, act.tolist(), meta)


def _channel_plan(channel_policies: Sequence[str] | None, channels: Any, scenario: str,
                  overrides: dict[str, Any] | None
                  ) -> tuple[dict[str, Any] | None, list[str | None] | None]:
    """The channels (as a dict, for the shards) and the channel policy specs of a channel
    comparison, each checked before any simulation; ``(None, None)`` without one."""
    if not channel_policies:
        if channels is not None:
            raise PushrlError("--channels needs --channel-policy (e.g. --channel-policy "
                              "push-only --channel-policy uniform)")
        return None, None
    from pushrl.envs.rollout import sim_channels
    from pushrl.envs.scenario import load_scenario
    from pushrl.envs.world import make_world
    from pushrl.policies.channel_policy import channel_policy_from_spec

    sc = load_scenario(scenario, **(overrides or {}))
    cs = channels if channels is not None else sc.channels
    if cs is None:
        raise PushrlError(f"scenario {sc.name!r} has no [channels.NAME] tables; add them or "
                          "pass --channels CONFIG")
    try:
        for c in channel_policies:
            sim_channels(make_world(sc).response, cs, channel_policy_from_spec(c, cs), 1)
    except ValueError as exc:
        raise PushrlError(str(exc)) from None
    paths = [str(Path(c).resolve()) if Path(c).exists() else c for c in channel_policies]
    return cs.to_dict(), list(paths)


def _run_local(tasks: list[tuple[Any, ...]], progress: Callable[[int, int], None] | None,
               user_days_per_user: int) -> list[ShardOutput]:
    """Shards one after another; progress in user-days, updated every simulated step."""
    total = sum(len(t[3]) for t in tasks) * user_days_per_user
    outs, done = [], 0
    for t in tasks:
        cb = None if progress is None else (lambda d, base=done: progress(base + d, total))
        kw: dict[str, Any] = {"progress": cb}
        outs.append(run_shard(*t, **kw))
        done += len(t[3]) * user_days_per_user
        if progress:
            progress(done, total)
    return outs
