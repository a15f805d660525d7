"""Online learning and evaluation of item policies by interaction.

:func:`run_online` plays ``n_interactions`` rounds against a *round source*: the source
shows an :class:`~pushrl.policies.base.ItemContext`, the policy decides with the caller's
generator (``decide_batch`` -> action and ``pscore``), the source draws the reward and a
learning policy (:meth:`VWItemPolicy.learn`) updates on ``(context, action, reward, pscore)``.

Sources:

* :class:`GymItemSource` wraps an item environment (``pushrl/PushItem-v1``): its context is
  taken from ``info["context"]`` (or an observation that is an ``ItemContext``), its reward
  from ``step``.
* :class:`TrueWorldSource`: semi-synthetic rounds of the synthetic world. Contexts are logged
  decision points of the synthetic data (point-in-time pipeline features, all catalog items as
  candidates), drawn uniformly with replacement; rewards are drawn fresh from the ground
  truth (:class:`~pushrl.data.synth.TrueWorld`: open, click, convert) for the chosen item. It
  has no carry-over (a push does not change later contexts, unlike the environment), and it
  knows every candidate's expected reward (``ctx.extra["expected_reward"]``), so values are
  reported both as realised means and as expected means (lower variance), with 95% CIs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pushrl.data.synth import TrueWorld
from pushrl.data.validate import load_dataset
from pushrl.policies.base import ItemContext, Policy
from pushrl.policies.item_data import SYNTH_REWARD, build_rounds, take_context
from pushrl.rules import reward
from pushrl.rules.reward import RewardWeights, item_reward

_Z95 = 1.959964


class RoundSource(Protocol):
    """Where online rounds come from."""

    def context(self, rng: np.random.Generator) -> ItemContext:
        """The next round's context (one round)."""

    def feedback(self, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Reward ``(1,)`` of ``action`` in the last context."""


def _mean_ci(x: np.ndarray) -> dict[str, float]:
    m = float(np.mean(x))
    se = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return {"mean": m, "ci95_low": m - _Z95 * se, "ci95_high": m + _Z95 * se, "se": se}


@dataclass
class OnlineStats:
    """Result of :func:`run_online`.

    Attributes:
        name: Policy label.
        reward: ``(n,)`` realised rewards.
        expected: ``(n,)`` true expected reward of the chosen item (NaN when unknown).
        best: ``(n,)`` best expected reward among the candidates (NaN when unknown).
        pscore: ``(n,)`` probability of each chosen action.
        seconds: Wall time.
    """

    name: str
    reward: np.ndarray
    expected: np.ndarray
    best: np.ndarray
    pscore: np.ndarray
    seconds: float

    def summary(self) -> dict[str, Any]:
        """Means with 95% normal CIs (``sim/...`` metrics)."""
        out: dict[str, Any] = {"policy": self.name, "sim/interactions": int(self.reward.size),
                               "sim/reward": _mean_ci(self.reward),
                               "sim/seconds": round(self.seconds, 2)}
        if np.isfinite(self.expected).all():
            out["sim/expected_reward"] = _mean_ci(self.expected)
            out["sim/regret_vs_oracle"] = _mean_ci(self.best - self.expected)
            last = self.expected[-max(1, self.expected.size // 10):]
            out["sim/expected_reward_last_10pct"] = _mean_ci(last)
        return out


def run_online(source: RoundSource, policy: Policy, n_interactions: int, *, seed: int = 0,
               learn: bool = True, name: str | None = None) -> OnlineStats:
    """Play at least ``n_interactions`` rounds; a policy with ``learn`` updates as it goes.

    A source may show several rounds at once (a vector environment); they are decided with
    one model and learned from together, then the next batch is shown.

    Args:
        source: The round source (environment adapter or :class:`TrueWorldSource`).
        policy: Any item policy (``decide_batch``); ``learn(ctx, action, reward, pscore)``
            is called when it has one and ``learn`` is True.
        n_interactions: Rounds to play.
        seed: Seeds the decision generator (the source's draws use a separate stream).
        learn: Update the policy online.
        name: Label in the summary.
    """
    dec_rng, src_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    rewards, expected, best, pscores = [], [], [], []
    learner = getattr(policy, "learn", None) if learn else None
    t0, done = time.perf_counter(), 0
    while done < n_interactions:
        ctx = source.context(src_rng)
        d = policy.decide_batch(ctx, dec_rng)
        rows = np.arange(len(ctx))
        er = ctx.extra.get("expected_reward")
        if er is not None:
            er = np.where(np.asarray(ctx.mask, bool), np.asarray(er, np.float64), -np.inf)
            expected.append(er[rows, d.action])
            best.append(er.max(axis=1))
        r = np.asarray(source.feedback(d.action, src_rng), np.float64).reshape(-1)
        rewards.append(r)
        pscores.append(d.pscore)
        if learner is not None:
            learner(ctx, d.action, r, d.pscore)
        done += rows.size
    nan = np.full(done, np.nan)
    return OnlineStats(str(name or getattr(policy, "name", type(policy).__name__)),
                       np.concatenate(rewards), np.concatenate(expected) if expected else nan,
                       np.concatenate(best) if best else nan, np.concatenate(pscores),
                       time.perf_counter() - t0)


class GymItemSource:
    """Adapter of ``pushrl/PushItem-v1`` (single or vector) to a round source.

    The context is the environment's ``item_context()`` (copied: the environment reuses its
    buffers); episodes are restarted transparently (vector: the ``next_step`` autoreset).
    """

    def __init__(self, env: Any, seed: int = 0) -> None:
        self.env = env
        self.vector = hasattr(env, "num_envs")
        self._seed: int | None = seed
        self._ctx: ItemContext | None = None

    def reward_weights(self) -> RewardWeights:
        """The environment's item-round reward (its scenario's weights, send given)."""
        env = self.env
        sc = getattr(env, "scenario", None) or env.unwrapped.scenario
        return sc.reward.item_round()

    def _snapshot(self) -> ItemContext:
        ctx = self.env.unwrapped.item_context() if hasattr(self.env, "unwrapped") else \
            self.env.item_context()
        snap = take_context(ctx, np.arange(len(ctx)))  # type: ignore[arg-type]
        snap.extra = {"expected_reward": np.array(ctx.extra["expected_reward"], np.float64)}
        return snap

    def context(self, rng: np.random.Generator) -> ItemContext:
        if self._ctx is None:
            self.env.reset(seed=self._seed)
            self._seed = None
            self._ctx = self._snapshot()
        return self._ctx

    def feedback(self, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = np.asarray(action, np.int64).reshape(-1)
        _, r, term, trunc, _ = self.env.step(a if self.vector else int(a[0]))
        if np.any(term) or np.any(trunc):
            if self.vector:  # autoreset next_step: this step only starts new episodes
                self.env.step(np.zeros_like(a))
            else:
                self.env.reset()
        self._ctx = self._snapshot()
        return np.atleast_1d(np.asarray(r, np.float64))


class TrueWorldSource:
    """Semi-synthetic rounds of the synthetic world (see module docstring).

    Args:
        data: Synthetic dataset directory (with ``ground_truth.json``).
        reward: Item-round reward: weights or a formula over ``opened``, ``clicked``,
            ``converted``, ``revenue``.
    """

    def __init__(self, data: str | Path, reward: RewardWeights | str = SYNTH_REWARD) -> None:
        try:
            self.w = item_reward(reward)
        except ValueError as exc:
            raise ValueError(f"TrueWorldSource: {exc}") from None
        ds, _ = load_dataset(data, quarantine=False)
        rounds = build_rounds(ds, reward=self.w)
        users = ds.pushes["user_id"].astype(str).to_numpy()[rounds.row]
        self.rounds, self.world = rounds, TrueWorld.load(data)
        pos = {u: i for i, u in enumerate(self.world.users["user_id"].astype(str))}
        self.user = np.array([pos[u] for u in users], np.int64)
        self.items = np.array([int(np.flatnonzero(self.world.items["item_id"].astype(str) == i)[0])
                               for i in rounds.catalog.ids], np.int64)
        self._ctx: ItemContext | None = None
        self._row = 0

    def reward_weights(self) -> RewardWeights:
        """The item-round reward of the rounds."""
        return self.w

    def expected_reward(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(p_open, p_click, p_convert, expected reward)`` of every candidate, ``(n, k)``."""
        wd = self.world
        shared = self.rounds.context.shared[rows]
        names = self.rounds.context.shared_names
        ang = np.arctan2(shared[:, names.index("hour_sin")], shared[:, names.index("hour_cos")])
        hour = np.rint(ang * 24 / (2 * np.pi)).astype(np.int64) % 24
        weekend = shared[:, names.index("weekend")].astype(np.int64)
        s24 = shared[:, names.index("sends_24h")]
        s7 = shared[:, names.index("sends_7d")] * 7.0
        u = self.user[rows][:, None]
        it = self.items[np.asarray(self.rounds.context.candidates)[rows]]
        p_open = 1.0 / (1.0 + np.exp(-wd.open_logit(u, weekend[:, None], hour[:, None], it,
                                                     s24[:, None], s7[:, None])))
        p_click = wd.p_click(u, it)
        p_conv = wd.p_convert(it)
        value = p_open * reward.value_per_open(self.w, p_click, p_conv, wd.price[it])
        return p_open, p_click, p_conv, value

    def context(self, rng: np.random.Generator) -> ItemContext:
        self._row = int(rng.integers(self.rounds.n_rounds))
        rows = np.array([self._row])
        ctx = take_context(self.rounds.context, rows)
        self._probs = self.expected_reward(rows)
        ctx.extra = {"expected_reward": self._probs[3]}
        self._ctx = ctx
        return ctx

    def feedback(self, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = int(np.asarray(action).reshape(-1)[0])
        p_open, p_click, p_conv, _ = (p[0, a] for p in self._probs)
        u = rng.random(3)
        opened = u[0] < p_open
        clicked = opened and u[1] < p_click
        conv = clicked and u[2] < p_conv
        if self._ctx is None:
            raise RuntimeError("feedback() before context()")
        item = self.items[int(np.asarray(self._ctx.candidates)[0, a])]
        revenue = float(self.world.price[item]) if conv else 0.0
        return reward.realised(self.w, delivered=0, opened=opened, clicked=clicked,
                               revenue=revenue, unsubscribed=0, converted=conv).reshape(1)


def compare_online(n_interactions: int = 100_000, seed: int = 0, *,
                   data: str | Path = "simulator_data/synth", source: str = "auto",
                   exploration: str = "squarecb") -> dict[str, Any]:
    """VW learning online vs uniform random, most popular (from the logs) and the oracle.

    Two VW learners: ``-online`` starts from scratch, ``-warm`` is first trained on the logs
    (with the source's reward) and keeps learning online.

    Args:
        n_interactions: Rounds per policy.
        seed: Seed of every policy's run (all policies see the same context sequence).
        data: The synthetic dataset.
        source: ``env`` (``pushrl/PushItem-v1``), ``trueworld`` or ``auto`` (the
            environment when it is registered, else the ground-truth rounds).
        exploration: VW exploration of the online learner.
    """
    from pushrl.policies.item_baselines import ItemOracle, UniformRandom, most_popular
    from pushrl.policies.vw import VWConfig, VWItemPolicy
    from pushrl.train.vw_train import layout_for, train_rounds

    src_name, make_source = _source(source, data, seed)
    probe = make_source()
    reward = probe.reward_weights()
    out: dict[str, Any] = {"source": src_name, "n_interactions": n_interactions, "seed": seed,
                           "reward": reward.item_formula()}
    # the environment's catalog is the dataset's: the logged rounds give the layout and the
    # warm start (VW trained on the logs with the environment's reward, then online)
    ds_rounds = build_rounds(load_dataset(data, quarantine=False)[0], reward=reward)
    warm = train_rounds([ds_rounds], VWConfig(exploration=exploration, seed=seed)).policy
    policies: list[tuple[str, Any]] = [
        ("uniform-random", UniformRandom()),
        ("most-popular", most_popular(data, reward=reward.item_formula())),
        ("item-oracle", ItemOracle()),
    ]
    policies.append((f"vw-{exploration}-online",
                     VWItemPolicy(layout_for(ds_rounds),
                                  VWConfig(exploration=exploration, seed=seed).args(),
                                  encoder=ds_rounds.encoder)))
    policies.append((f"vw-{exploration}-warm", warm))
    results = []
    for name, pol in policies:
        stats = run_online(make_source(), pol, n_interactions, seed=seed, name=name)
        results.append(stats.summary())
    out["results"] = results
    return out


def _source(kind: str, data: str | Path, seed: int) -> tuple[str, Any]:
    if kind in ("env", "auto"):
        try:
            import gymnasium as gym

            import pushrl.envs  # noqa: F401  (registers the environments)

            gym.spec("pushrl/PushItem-v1")
            return ("pushrl/PushItem-v1 (truth=True, 16 vector envs)",
                    lambda: GymItemSource(gym.make_vec("pushrl/PushItem-v1", num_envs=16,
                                                       vectorization_mode="vector_entry_point",
                                                       truth=True), seed))
        except Exception:
            if kind == "env":
                raise
    cache: dict[str, TrueWorldSource] = {}

    def make() -> TrueWorldSource:
        if "src" not in cache:
            cache["src"] = TrueWorldSource(data)
        src = TrueWorldSource.__new__(TrueWorldSource)
        src.__dict__.update(cache["src"].__dict__)  # shares the rounds, fresh cursor
        return src

    return "trueworld (logged synthetic contexts, ground-truth rewards)", make
