"""``pushrl/PushItem-v1``: which item to push, a contextual bandit over candidate items.

``pushrl/PushItem-v0`` (the OBD world's first observation) stays registered: the same classes
with ``obs_version=0`` (see the Version History of :class:`PushItemEnv`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.world import load_model
from pushrl.sim.bandit import ItemRounds
from pushrl.sim.contexts import ItemContext
from pushrl.sim.response import FittedResponse, ResponseModel, TruthResponse
from pushrl.sim.rng import new_key

_BOUND = 100.0
#: Observation versions: 1 = the one item context; 0 = the first OBD observation.
OBS_VERSIONS = (0, 1)
_INFO_KEYS = ("opened", "clicked", "converted", "revenue", "item", "expected_reward", "regret",
              "optimal_action")


def _rounds(sc: Scenario, n: int) -> ItemRounds:
    model = load_model(sc.sim)
    resp: ResponseModel | None = None
    if model.kind == "push":
        resp = (TruthResponse(model, sc.data, sc.fatigue_multiplier, sc.activity_shift_hours)
                if sc.truth else FittedResponse(model, sc.fatigue_multiplier,
                                                sc.activity_shift_hours))
    elif sc.truth:
        from pushrl.errors import ScenarioError

        raise ScenarioError(f"scenario {sc.name!r}: truth=true needs a synthetic world; the "
                            f"{model.kind!r} simulator has no ground truth")
    return ItemRounds(model, resp, n, sc.reward, sc.start_bucket, sc.candidates, sc.warm_start)


def _check_version(obs_version: int) -> int:
    if obs_version not in OBS_VERSIONS:
        raise ValueError(f"obs_version must be one of {OBS_VERSIONS}, got {obs_version!r}")
    return int(obs_version)


def _spaces(r: ItemRounds, obs_version: int) -> spaces.Dict:
    ctx = r.new_round(np.zeros(r.n, np.uint64), np.zeros(r.n, np.int64))
    ob = _obs(r, ctx, 0, obs_version)
    # standardised, one-hot and log features: |x| stays far below the bound
    return spaces.Dict({
        "shared": spaces.Box(-_BOUND, _BOUND, ob["shared"].shape, np.float32),
        "candidates": spaces.Box(-_BOUND, _BOUND, ob["candidates"].shape, np.float32)})


def _features_v0(r: ItemRounds, ctx: ItemContext) -> tuple[np.ndarray, np.ndarray]:
    """The v0 ``(shared, candidates)`` of every row of ``ctx``: the push world's are the item
    context's; the OBD world's are the click model's shared design (encoded features,
    logged-context one-hots, position one-hot) and per candidate the catalog features and
    ``log1p(cand_affinity)``."""
    if r.obd is None:
        return np.asarray(ctx.shared), np.asarray(ctx.candidate_features)
    rows = np.asarray(ctx.extra["context_row"], np.int64)
    cand = np.asarray(ctx.candidates, np.int64)
    aff = np.log1p(r.obd.affinity[rows[:, None], cand])[:, :, None]
    return (r.obd.design_shared(rows),
            np.concatenate([r.obd.model.item_features[cand], aff], axis=2))


def _obs(r: ItemRounds, ctx: ItemContext, i: int | slice,
         obs_version: int = 1) -> dict[str, np.ndarray]:
    shared, cf = ((ctx.shared, ctx.candidate_features) if obs_version == 1
                  else _features_v0(r, ctx))
    return {"shared": np.clip(np.asarray(shared[i], np.float32), -_BOUND, _BOUND),
            "candidates": np.clip(np.asarray(cf[i], np.float32), -_BOUND, _BOUND)}


class PushItemEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Choose the item of a push: a contextual bandit over candidate items.

    ## Description
    Each step is one round: a context (push world: a population user at a random local hour
    of the scenario's first week, pipeline state warm-started from its history; OBD: a logged
    user context and display position) and ``k`` candidate items. The agent picks one and
    receives its reward, drawn from the simulator (fitted, or the synthetic ground truth with
    ``truth=True``). :meth:`item_context` returns the round as an ``ItemContext`` (the input
    of ``decide_batch`` of every item policy, e.g. a VW bandit trained online);
    :meth:`expected_rewards` gives every candidate's expected reward (oracle, regret).

    ## Action Space
    ``Discrete(k)``: index of the chosen candidate (``k`` = ``items.candidates`` or the
    whole catalog).

    ## Observation Space
    ``Dict(shared=Box(d_shared,), candidates=Box(k, d_item))`` float32: the one item
    context (:mod:`pushrl.data.item_context`): ``shared`` is the pipeline encoding of the
    user (``encode(features)``; OBD adds the logged user features one-hot,
    ``ctx_<name>=<value>``), ``candidates`` the catalog features of each candidate and the
    user's ``affinity`` to it (OBD: 1.0, then the logged ``cand_affinity``); names in
    ``item_context()``, the same a policy trained on the logs sees. The OBD display position
    is in ``item_context().position``.

    ## Rewards
    The scenario's item-round reward
    (:meth:`~pushrl.rules.reward.RewardWeights.item_round`): ``open * opened + click *
    clicked + convert * converted + revenue * revenue``, no send cost and no unsubscribe (a
    push is sent in every round). OBD: ``click * clicked``.

    ## Starting State
    The first round of an episode; ``info["expected_reward"]`` of the chosen item,
    ``info["regret"]`` against the best candidate.

    ## Episode End
    Never terminated; truncated after ``items.rounds_per_episode`` rounds.

    ## Arguments
    ``gymnasium.make("pushrl/PushItem-v1", scenario="default" | "obd" | path, **overrides)``;
    ``obs_version=0`` gives the v0 observation (what ``pushrl/PushItem-v0`` makes).

    ## Version History
    * v1: the OBD world observes the one item context (:mod:`pushrl.data.item_context`),
      the columns a policy trained on the OBD log sees: ``shared`` no longer holds the
      display position one-hot (it is ``item_context().position``) and names the logged
      one-hots ``ctx_<name>=<value>``; ``candidates`` are the catalog features, ``affinity``
      (1.0) and the raw ``cand_affinity`` (v0: ``log1p(cand_affinity)``), one column more.
      The push world's observation is unchanged.
    * v0: initial version; still registered (``obs_version=0``): OBD ``shared`` = encoded
      features, logged-context one-hots, position one-hot; ``candidates`` = catalog features,
      ``log1p(cand_affinity)``. ``item_context()`` is the v1 context in both versions.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (Gymnasium declares it per instance)

    def __init__(self, scenario: str | Scenario = "default", render_mode: str | None = None,
                 obs_version: int = 1, **overrides: Any) -> None:
        self.obs_version = _check_version(obs_version)
        self.scenario = load_scenario(scenario, **overrides)
        self.rounds = _rounds(self.scenario, 1)
        self.observation_space = _spaces(self.rounds, self.obs_version)  # type: ignore[assignment]
        self.action_space = spaces.Discrete(self.rounds.k)
        self.render_mode = render_mode
        self._key = np.zeros(1, np.uint64)
        self._t = 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray],
                                                               dict[str, Any]]:
        super().reset(seed=seed)
        self._key[0] = new_key(self.np_random)
        self._t = 0
        ctx = self.rounds.new_round(self._key, np.zeros(1, np.int64))
        return _obs(self.rounds, ctx, 0, self.obs_version), {"round": 0}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                         dict[str, Any]]:
        out = self.rounds.outcome(np.array([int(action)]))
        info = {k: out[k][0].item() for k in _INFO_KEYS}
        self._t += 1
        truncated = self._t >= self.scenario.rounds_per_episode
        ctx = self.rounds.new_round(self._key, np.array([self._t]))
        return (_obs(self.rounds, ctx, 0, self.obs_version), float(out["reward"][0]), False,
                truncated, info)

    def item_context(self) -> ItemContext:
        """The current round as an ``ItemContext`` with 1 row (``extra["expected_reward"]``
        holds the candidates' expected rewards)."""
        assert self.rounds.ctx is not None, "call reset() first"
        return self.rounds.ctx

    def expected_rewards(self) -> np.ndarray:
        """Expected reward of every candidate of the current round, shape ``(k,)``."""
        assert self.rounds.expected is not None, "call reset() first"
        return self.rounds.expected[0].copy()


class PushItemVectorEnv(VectorEnv):
    """``num_envs`` bandit rounds at once (native vector version of ``PushItem-v1``;
    ``obs_version=0``: of ``PushItem-v0``).

    Sub-environment ``i`` reset with ``seed=s`` equals ``PushItemEnv`` reset with ``s + i``.
    Episodes of all sub-environments have the same length, so they end together; autoreset is
    ``next_step`` (the step after the end resets, ignoring the actions, reward 0).
    """

    def __init__(self, num_envs: int, scenario: str | Scenario = "default",
                 render_mode: str | None = None, obs_version: int = 1,
                 **overrides: Any) -> None:
        overrides.pop("max_episode_steps", None)
        self.obs_version = _check_version(obs_version)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.scenario = load_scenario(scenario, **overrides)
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
        self.render_mode = render_mode
        self.rounds = _rounds(self.scenario, self.num_envs)
        self.single_observation_space = _spaces(self.rounds, self.obs_version)
        self.single_action_space = spaces.Discrete(self.rounds.k)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator] = []
        self._keys = np.zeros(self.num_envs, np.uint64)
        self._t = np.zeros(self.num_envs, np.int64)
        self._done = False

    def _start(self) -> None:
        self._keys = np.array([new_key(g) for g in self._rngs], np.uint64)
        self._t[:] = 0
        self._done = False

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray],
                                                               dict[str, Any]]:
        seeds = ([None if seed is None else int(seed) + i for i in range(self.num_envs)]
                 if seed is None or isinstance(seed, int | np.integer) else list(seed))
        self._rngs = [seeding.np_random(s)[0] for s in seeds]
        self._start()
        ctx = self.rounds.new_round(self._keys, self._t)
        return _obs(self.rounds, ctx, slice(None), self.obs_version), {"round": self._t.copy()}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray,
                                          np.ndarray, dict[str, Any]]:
        n = self.num_envs
        if self._done:
            self._start()
            ctx = self.rounds.new_round(self._keys, self._t)
            z = np.zeros(n, bool)
            return (_obs(self.rounds, ctx, slice(None), self.obs_version), np.zeros(n), z,
                    z.copy(), {})
        out = self.rounds.outcome(np.asarray(actions, np.int64).reshape(n))
        self._t += 1
        trunc = self._t >= self.scenario.rounds_per_episode
        self._done = bool(trunc.all())
        ctx = self.rounds.new_round(self._keys, self._t)
        info = {k: out[k] for k in _INFO_KEYS}
        return (_obs(self.rounds, ctx, slice(None), self.obs_version), out["reward"],
                np.zeros(n, bool), trunc, info)

    def item_context(self) -> ItemContext:
        """The current round of all sub-environments, ``num_envs`` rows."""
        assert self.rounds.ctx is not None, "call reset() first"
        return self.rounds.ctx

    def expected_rewards(self) -> np.ndarray:
        """``(num_envs, k)`` expected reward of every candidate."""
        assert self.rounds.expected is not None, "call reset() first"
        return self.rounds.expected.copy()



def make_v0(**kwargs: Any) -> PushItemEnv:
    """``pushrl/PushItem-v0``: :class:`PushItemEnv` with the v0 observation."""
    return PushItemEnv(obs_version=0, **kwargs)


def make_vec_v0(**kwargs: Any) -> PushItemVectorEnv:
    """Vector entry point of ``pushrl/PushItem-v0``."""
    return PushItemVectorEnv(obs_version=0, **kwargs)
