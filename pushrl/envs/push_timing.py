"""``pushrl/PushTiming-v1``: when (and how often) to push one simulated user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.observation import TIMING_OBS_NAMES, V0_OBS_NAMES, TimingObservation
from pushrl.envs.world import make_world
from pushrl.sim.contexts import ItemDecider
from pushrl.sim.engine import Outcome, PushSim
from pushrl.sim.rng import new_key


def step_info(out: Outcome, sim: PushSim, i: int | slice) -> dict[str, Any]:
    """Per-step info of slot(s) ``i`` (shared by the single and vector environments)."""
    return {"sent": out.delivered[i], "guardrail_blocked": out.blocked[i],
            "opened": out.opened[i], "clicked": out.clicked[i], "converted": out.converted[i],
            "revenue": out.revenue[i], "unsubscribed": out.unsubscribed[i], "item": out.item[i],
            "item_pscore": out.item_pscore[i], "p_open": out.p_open[i], "user": sim.pop[i]}


class PushTimingEnv(gym.Env[np.ndarray, np.int64]):
    """Decide, slot by slot, whether to push a simulated user now.

    ## Description
    One episode follows one user of the fitted population (a logged user drawn with
    replacement: time zone, rhythm, category mix; its feature state warm-started from its
    logged history, see :mod:`pushrl.sim.population`) for the scenario horizon (28 days of
    hourly slots by default). At each slot the agent waits or sends; a delivered push gets an
    item from the item policy (the scenario's sampler, or ``item_policy=`` e.g. a VW bandit),
    and the user opens, clicks, converts or unsubscribes according to the simulator (fitted
    models, or the synthetic ground truth with ``truth=True``). Organic activity keeps flowing
    from the user's rhythm, so the pipeline features evolve. Features come from the one
    feature pipeline (:class:`~pushrl.data.features.FeatureState`).

    ## Action Space
    ``Discrete(2)``: 0 = wait, 1 = send. A send in a quiet hour (local time), over the daily
    cap or over the 7-day cap is not delivered (a no-op with ``info["guardrail_blocked"]``);
    :meth:`action_masks` gives the allowed actions for maskable algorithms.

    ## Observation Space
    ``Box(21,)`` float32, built by :class:`~pushrl.envs.observation.TimingObservation` (the
    one builder, shared with training and the served PPO actor; the table of columns is in
    :mod:`pushrl.envs.observation`): the 10 encoded pipeline features (local hour, weekend,
    hours since the last push, pushes and opens in the last 24 h / 7 days, activity at this
    hour, engagement, 7-day activity), the local weekday, pushes sent today, the share of the
    daily and 7-day caps left, quiet hour, send allowed (the 17 columns of v0), then where
    this hour stands in the user's day: ``log_activity_vs_day_peak``,
    ``hours_to_day_peak``, ``at_day_peak``, ``day_hour_rank``. ``obs_names`` (the
    environment's attribute) lists them.

    ## Rewards
    ``open * opened + click * clicked + revenue * revenue - send_cost * delivered
    - unsubscribe_penalty * unsubscribed`` with the scenario's ``[reward]`` weights
    (defaults 1, 2, 0.02, 0.05, 10; see :mod:`pushrl.envs.scenario`).

    ## Starting State
    A population user drawn uniformly from ``np_random``, its state warm-started at the
    scenario's ``start``; recent push windows empty. ``options={"user": i}`` picks user ``i``.

    ## Episode End
    ``terminated``: the user unsubscribed. ``truncated``: the horizon was reached.

    ## Arguments
    ``gymnasium.make("pushrl/PushTiming-v1", scenario="default", item_policy=None,
    obs_names=None, **overrides)``: ``scenario`` is a name in ``envs/`` or a path to a
    ``.toml`` file; overrides replace scenario keys (``truth=True``,
    ``fatigue_multiplier=2.0``, ``max_sends_per_day=1``, ``horizon_days=7``, ...).
    ``item_policy`` is any object with ``decide_batch(ItemContext, rng)``. ``obs_names``
    selects the columns (default all 21; an older agent's card lists its own).

    ## Version History
    * v1: the observation has 21 columns: the 4 day-profile columns
      (:data:`~pushrl.envs.observation.PROFILE_OBS_NAMES`) moved from a training wrapper
      into the environment, and the observation of a finished episode (a truncated
      episode's bootstrap value) now has them too (the wrapper wrote zeros).
    * v0: initial version, ``Box(17,)``
      (:data:`~pushrl.envs.observation.V0_OBS_NAMES`); still registered, same class with
      ``obs_names=V0_OBS_NAMES``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012  (as Gymnasium)

    def __init__(self, scenario: str | Scenario = "default",
                 item_policy: ItemDecider | None = None,
                 render_mode: str | None = None, obs_names: Sequence[str] | None = None,
                 **overrides: Any) -> None:
        self.scenario = load_scenario(scenario, **overrides)
        self.observation = TimingObservation(self.scenario.guardrails,
                                             tuple(obs_names or TIMING_OBS_NAMES))
        world = make_world(self.scenario)
        self.world = world
        self.sim = PushSim(world.model, world.response, self.scenario.sim_config(), 1,
                           item_policy if item_policy is not None else world.sampler)
        low, high = self.observation.bounds()
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.obs_names = self.observation.names
        self.render_mode = render_mode
        self._last: dict[str, Any] = {}

    def _obs(self) -> np.ndarray:
        return self.observation.from_engine(self.sim.observe(), self.sim.state, self.sim.slots)[0]

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        n_pop = len(self.world.model.population)  # type: ignore[arg-type]
        user = int(self.np_random.integers(n_pop))
        if options and "user" in options:
            user = int(options["user"])
            if not 0 <= user < n_pop:
                raise ValueError(f"options['user'] must be in [0, {n_pop}), got {user}")
        self.sim.reset(np.array([0]), np.array([user]), np.array([new_key(self.np_random)]))
        obs = self._obs()
        self._last = {"user": user, "bucket": int(self.sim.bucket()[0])}
        return obs, dict(self._last)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if a not in (0, 1):
            raise ValueError(f"action must be 0 (wait) or 1 (send), got {action!r}")
        out = self.sim.step(np.array([a == 1]))
        reward = float(out.reward(self.scenario.reward)[0])
        terminated = bool(out.unsubscribed[0])
        truncated = bool(self.sim.t[0] >= self.scenario.horizon) and not terminated
        info = {k: (v.item() if isinstance(v, np.generic) else v)
                for k, v in step_info(out, self.sim, 0).items()}
        self._last = info
        return self._obs(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """``(2,)`` bool: wait is always allowed; send where no guardrail blocks it."""
        return np.array([True, bool(self.sim.observe().allowed[0])])

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        o = self.sim.observe()
        return (f"t={int(self.sim.t[0])} local_hour={int(o.raw[0, 0])} "
                f"sends_today={int(o.sends_today[0])} allowed={bool(o.allowed[0])} "
                f"last={self._last}")


def make_v0(**kwargs: Any) -> PushTimingEnv:
    """``pushrl/PushTiming-v0``: :class:`PushTimingEnv` with the 17-column observation of the
    first agents (:data:`~pushrl.envs.observation.V0_OBS_NAMES`)."""
    return PushTimingEnv(obs_names=V0_OBS_NAMES, **kwargs)
