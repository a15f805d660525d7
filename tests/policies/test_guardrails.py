"""Every timing policy respects the scenario's guardrails: 0 violations over many user-days.

The check is independent of the engine's own mask: each delivered push is re-checked against
the scenario from the decision's local clock (quiet hours, pushes per local day, pushes in any
7 x 24 h window), and no policy may even *propose* a send a guardrail forbids (the base class
masks it, so the engine never has to block one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.envs import rollout
from pushrl.policies.base import TimingPolicy
from pushrl.policies.baselines import make_baseline
from pushrl.envs.observation import TIMING_OBS_NAMES
from pushrl.policies.registry import load_policy, resolve
from pushrl.policies.ppo import NumpyActor, PPOTimingPolicy
from pushrl.policies.timing_baselines import BASELINES
from pushrl.rules.guardrails import Guardrails

ROOT = Path(__file__).resolve().parents[2]
# a strict scenario, so that caps bind often: 1/day, 3 per 7 days, quiet 21:00-09:00
STRICT = {"quiet_hours": [21, 9], "max_sends_per_day": 1, "max_sends_per_week": 3}
GUARD = Guardrails(21, 9, 1, 3)
USERS, DAYS = 300, 21
# the ground-truth planners cost ~1 s per user-week; 10 days still roll the 7-day window
ORACLE_USERS, ORACLE_DAYS = 120, 10


class AlwaysSend(TimingPolicy):
    """An adversary that wants to push at every slot."""

    name = "always-send"

    def _action_dist(self, ctx: Any) -> np.ndarray:
        return np.tile([0.0, 1.0], (len(ctx), 1))


def _eager_ppo() -> PPOTimingPolicy:
    """A PPO actor (random weights) whose SEND logit is strongly positive."""
    rng = np.random.default_rng(0)
    d = len(TIMING_OBS_NAMES)
    w = (rng.normal(0, 0.3, (d, 16)).astype(np.float32), rng.normal(0, 0.3, (16, 2)).astype(
        np.float32))
    b = (np.zeros(16, np.float32), np.array([-2.0, 2.0], np.float32))
    actor = NumpyActor(np.zeros(d), np.ones(d), 10.0, 1e-8, w, b)
    return PPOTimingPolicy(actor, GUARD)


class Recorder:
    """Wraps a policy; records every decision's user, clock and action."""

    def __init__(self, policy: TimingPolicy) -> None:
        self.policy, self.name = policy, policy.name
        self.rows: list[np.ndarray] = []
        self.proposed_forbidden = 0

    def decide_batch(self, ctx: Any, rng: np.random.Generator) -> Any:
        dec = self.policy.decide_batch(ctx, rng)
        send = np.asarray(dec.action) == 1
        self.proposed_forbidden += int((send & ~np.asarray(ctx.allowed)).sum())
        u = np.flatnonzero(send & np.asarray(ctx.allowed))
        hour, _, day = ctx.state.local_time(ctx.user_index[u], ctx.bucket[u])
        self.rows.append(np.stack([u, np.asarray(ctx.bucket)[u], hour, day], axis=1))
        return dec


def _policies() -> list[tuple[str, dict[str, Any]]]:
    oracles = ("timing-oracle", "timing-oracle-info")  # ground truth only
    out = [(name, {}) for name in BASELINES if name not in oracles]
    out += [(name, {"truth": True}) for name in oracles]
    return out


def _check(rec: Recorder) -> None:
    assert rec.proposed_forbidden == 0
    sends = np.concatenate(rec.rows)
    if not len(sends):
        return
    u, bucket, hour, day = sends.T
    assert not GUARD.quiet(hour).any(), "a push was delivered in quiet hours"
    _, per_day = np.unique(u * 10_000 + day, return_counts=True)
    assert per_day.max() <= GUARD.max_sends_per_day
    order = np.lexsort((bucket, u))
    u, bucket = u[order], bucket[order]
    k = GUARD.max_sends_per_week  # the (k+1)-th push after one must be >= 168 h later
    same = u[k:] == u[:-k]
    assert ((bucket[k:] - bucket[:-k])[same] >= 168).all(), "7-day cap exceeded"


@pytest.mark.parametrize(("name", "overrides"), _policies(), ids=lambda x: str(x))
def test_registered_policies_never_violate_guardrails(name: str, overrides: dict[str, Any],
                                                      ) -> None:
    kwargs = {"sweeps": 0} if name.startswith("timing-oracle") else {}
    if name == "random-volume":
        kwargs = {"sends_per_day": 3.0}  # push hard against the caps
    rec = Recorder(make_baseline(name, **kwargs))  # type: ignore[arg-type]
    users, days = (ORACLE_USERS, ORACLE_DAYS) if overrides.get("truth") else (USERS, DAYS)
    res = rollout(rec, "default", n_users=users, days=days, seed=11, **STRICT, **overrides)
    assert res.guardrail_blocks.sum() == 0
    if overrides.get("truth"):  # the smaller run still pushes against the caps
        assert res.sends.sum() >= users * days / 7
    _check(rec)


def _artifacts() -> list[Path]:
    """Shipped PPO timing artifacts (newest version of each)."""
    return sorted(resolve(p) for p in (ROOT / "policies").glob("ppo-timing*") if p.is_dir())


@pytest.mark.parametrize("artifact", _artifacts(), ids=lambda p: p.parent.name)
def test_shipped_ppo_agents_never_violate_guardrails(artifact: Path) -> None:
    rec = Recorder(load_policy(artifact))
    res = rollout(rec, "default", n_users=USERS, days=DAYS, seed=13, **STRICT)
    assert res.guardrail_blocks.sum() == 0
    _check(rec)


@pytest.mark.parametrize("policy", [AlwaysSend(), _eager_ppo()], ids=["always-send", "ppo"])
def test_eager_policies_are_masked(policy: TimingPolicy) -> None:
    rec = Recorder(policy)
    res = rollout(rec, "default", n_users=USERS, days=DAYS, seed=12, **STRICT)
    assert res.guardrail_blocks.sum() == 0
    assert res.sends.mean() > 0.5 * DAYS / 7 * GUARD.max_sends_per_week  # caps did bind
    _check(rec)
