"""``pushrl/PushItem-v0``: which item to push, a contextual bandit over candidate items."""

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


def _spaces(r: ItemRounds) -> spaces.Dict:
    ctx = r.new_round(np.zeros(r.n, np.uint64), np.zeros(r.n, np.int64))
    d_s, d_c = ctx.shared.shape[1], ctx.candidate_features.shape[2]
    # standardised, one-hot and log features: |x| stays far below the bound
    return spaces.Dict({
        "shared": spaces.Box(-_BOUND, _BOUND, (d_s,), np.float32),
        "candidates": spaces.Box(-_BOUND, _BOUND, (r.k, d_c), np.float32)})


def _obs(ctx: ItemContext, i: int | slice) -> dict[str, np.ndarray]:
    return {"shared": np.clip(np.asarray(ctx.shared[i], np.float32), -_BOUND, _BOUND),
            "candidates": np.clip(np.asarray(ctx.candidate_features[i], np.float32),
                                  -_BOUND, _BOUND)}


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
    user (``encode(features)``; OBD adds the logged user features one-hot), ``candidates``
    the catalog features of each candidate and the user's affinity to it (OBD: then the
    logged ``cand_affinity``); names in ``item_context()``, the same a policy trained on the
    logs sees. The OBD display position is in ``item_context().position``.

    ## Rewards
    Push world: ``open * opened + click * clicked + revenue * revenue`` (scenario weights;
    no send cost: a push is sent in every round). OBD: ``click * clicked``.

    ## Starting State
    The first round of an episode; ``info["expected_reward"]`` of the chosen item,
    ``info["regret"]`` against the best candidate.

    ## Episode End
    Never terminated; truncated after ``items.rounds_per_episode`` rounds.

    ## Arguments
    ``gymnasium.make("pushrl/PushItem-v0", scenario="default" | "obd" | path, **overrides)``.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (Gymnasium declares it per instance)

    def __init__(self, scenario: str | Scenario = "default", render_mode: str | None = None,
                 **overrides: Any) -> None:
        self.scenario = load_scenario(scenario, **overrides)
        self.rounds = _rounds(self.scenario, 1)
        self.observation_space = _spaces(self.rounds)  # type: ignore[assignment]
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
        return _obs(ctx, 0), {"round": 0}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                         dict[str, Any]]:
        out = self.rounds.outcome(np.array([int(action)]))
        info = {k: out[k][0].item() for k in _INFO_KEYS}
        self._t += 1
        truncated = self._t >= self.scenario.rounds_per_episode
        ctx = self.rounds.new_round(self._key, np.array([self._t]))
        return _obs(ctx, 0), float(out["reward"][0]), False, truncated, info

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
    """``num_envs`` bandit rounds at once (native vector version of ``PushItem-v0``).

    Sub-environment ``i`` reset with ``seed=s`` equals ``PushItemEnv`` reset with ``s + i``.
    Episodes of all sub-environments have the same length, so they end together; autoreset is
    ``next_step`` (the step after the end resets, ignoring the actions, reward 0).
    """

    def __init__(self, num_envs: int, scenario: str | Scenario = "default",
                 render_mode: str | None = None, **overrides: Any) -> None:
        overrides.pop("max_episode_steps", None)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.scenario = load_scenario(scenario, **overrides)
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
        self.render_mode = render_mode
        self.rounds = _rounds(self.scenario, self.num_envs)
        self.single_observation_space = _spaces(self.rounds)
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
        return _obs(ctx, slice(None)), {"round": self._t.copy()}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray,
                                          np.ndarray, dict[str, Any]]:
        n = self.num_envs
        if self._done:
            self._start()
            ctx = self.rounds.new_round(self._keys, self._t)
            z = np.zeros(n, bool)
            return _obs(ctx, slice(None)), np.zeros(n), z, z.copy(), {}
        out = self.rounds.outcome(np.asarray(actions, np.int64).reshape(n))
        self._t += 1
        trunc = self._t >= self.scenario.rounds_per_episode
        self._done = bool(trunc.all())
        ctx = self.rounds.new_round(self._keys, self._t)
        info = {k: out[k] for k in _INFO_KEYS}
        return _obs(ctx, slice(None)), out["reward"], np.zeros(n, bool), trunc, info

    def item_context(self) -> ItemContext:
        """The current round of all sub-environments, ``num_envs`` rows."""
        assert self.rounds.ctx is not None, "call reset() first"
        return self.rounds.ctx

    def expected_rewards(self) -> np.ndarray:
        """``(num_envs, k)`` expected reward of every candidate."""
        assert self.rounds.expected is not None, "call reset() first"
        return self.rounds.expected.copy()

