"""Train the PPO send-timing agent on ``pushrl/PushTiming-v1`` and export it for serving.

:func:`train_timing` trains SB3 PPO (:mod:`pushrl.train.ppo_config`: hyperparameters, the
training env, checkpoints), exports the actor to a numpy
:class:`~pushrl.policies.ppo.NumpyActor` and writes a ``loader="ppo"`` artifact whose card
records the observation columns (``obs_names``). Serving never imports this module (nor
torch / SB3): it loads the artifact with :mod:`pushrl.policies.ppo`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from pushrl.envs import rollout
from pushrl.envs.observation import TIMING_OBS_NAMES
from pushrl.envs.scenario import load_scenario
from pushrl.policies.ppo import ACTOR_FILE, NumpyActor, PPOTimingPolicy
from pushrl.policies.registry import save_artifact
from pushrl.train.ppo_config import (
    PPOConfig,
    load_weights,
    make_model,
    make_vec_env,
    obs_names,
    save_checkpoint,
    save_vecnormalize,
)

#: Seed offsets of the rollouts after training, disjoint from the training env's seeds
#: (``seed + i`` through Gymnasium's seeding) and from the benchmark's test seeds.
VALIDATION_SEED, EVALUATION_SEED = 7_000_000, 8_000_000


@dataclass
class TrainResult:
    """What :func:`train_timing` produced.

    Attributes:
        artifact: The artifact directory ``policies/NAME/vN``.
        policy: The exported serving policy.
        card: The model card written.
        seconds: Wall time of training (rollouts and updates; excludes the evaluation).
        timesteps: Environment steps trained in total (including a resumed run's); whole
            rollouts, so possibly more than requested. The card's ``train/steps_per_second``
            is the steps executed in this run over ``seconds``.
    """

    artifact: Path
    policy: PPOTimingPolicy
    card: dict[str, Any]
    seconds: float
    timesteps: int


def _callbacks(cfg: Any, venv: Any, total: int, run_dir: Path, meta: dict[str, Any],
               progress: Callable[[int, int], None] | None) -> Any:
    """SB3 callback: progress, ``sim/*`` rollout metrics, periodic checkpoints."""
    class _Callback(BaseCallback):  # type: ignore[misc]
        def _on_training_start(self) -> None:
            self.acc = np.zeros(4)  # sends, opens, clicks, unsubscribes in this rollout
            self.steps = 0
            self.next_ckpt = (self.num_timesteps // cfg.checkpoint_every + 1) * cfg.checkpoint_every

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                self.acc += (info["sent"], info["opened"], info["clicked"], info["unsubscribed"])
            self.steps += len(self.locals["infos"])
            if progress is not None:
                # SB3 runs whole rollouts (n_envs x n_steps), so it may pass `total`: report
                # the executed steps against a total that grows with them.
                progress(self.num_timesteps, max(total, self.num_timesteps))
            if self.num_timesteps >= self.next_ckpt:
                save_checkpoint(self.model, venv, run_dir / "checkpoints" /
                                f"step_{self.num_timesteps}", meta)
                self.next_ckpt += cfg.checkpoint_every
            return True

        def _on_rollout_end(self) -> None:
            sends, opens, clicks, unsubs = self.acc
            self.logger.record("sim/sends_per_user_day", sends / max(self.steps, 1) * 24)
            self.logger.record("sim/open_rate", opens / sends if sends else 0.0)
            self.logger.record("sim/click_rate", clicks / sends if sends else 0.0)
            self.logger.record("sim/unsubscribes_per_1k_sends",
                               1000 * unsubs / sends if sends else 0.0)
            self.acc[:] = 0
            self.steps = 0

    return _Callback()


def _evaluate(policy: PPOTimingPolicy, scenario: Any, n_users: int, seed: int) -> dict[str, Any]:
    return rollout(policy, scenario, n_users=n_users, seed=seed).summary()


@functools.cache
def _log_formats() -> tuple[str, ...]:
    """SB3 logger outputs: CSV always, TensorBoard only when it is installed (said once)."""
    import importlib.util
    import logging

    if importlib.util.find_spec("tensorboard") is not None:
        return ("csv", "tensorboard")
    logging.getLogger(__name__).warning(
        "tensorboard is not installed: training logs go to progress.csv only "
        "(`pip install tensorboard` for TensorBoard event files)")
    return ("csv",)


def _has_truth(sc: Any) -> bool:
    return (Path(sc.data) / "ground_truth.json").is_file()


def train_timing(scenario: str = "default", *, out: str | Path, timesteps: int | None = None,
                 seed: int = 0, config: Any = None, resume: str | Path | None = None,
                 run_dir: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 evaluate: bool = True, **overrides: Any) -> TrainResult:
    """Train the PPO timing agent on ``pushrl/PushTiming-v1`` and write an artifact.

    Args:
        scenario: Scenario name or path (``envs/<name>.toml``).
        out: Registry target ``policies/NAME`` (a new version ``vN`` is written).
        timesteps: Environment steps to train (default ``config.total_timesteps``); with
            ``resume``, steps *added* to the checkpoint's.
        seed: Seed of the training environments and the network initialisation.
        config: A :class:`~pushrl.train.ppo_config.PPOConfig` (default: the tuned one).
        resume: A checkpoint directory (``RUN/checkpoints/step_N``) or a previous artifact
            to continue from (verified by sha256 before anything is loaded).
        run_dir: Where CSV/TensorBoard logs and checkpoints go (default ``runs/<NAME>``).
        progress: ``progress(done_steps, total_steps)`` callback.
        evaluate: Roll out the exported policy on held-out users and put the results in the
            model card (validation picks sampling vs argmax on a separate seed).
        **overrides: Scenario keys to replace (``fatigue_multiplier=2.0``, ...).
    """
    cfg = config or PPOConfig()
    sc = load_scenario(scenario, **overrides)
    out = Path(out)
    run = Path(run_dir) if run_dir is not None else Path("runs") / out.name
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    venv = make_vec_env(cfg, sc, seed)
    model = make_model(cfg, venv, seed)
    done = load_weights(model, venv, resume) if resume is not None else 0
    add = int(timesteps if timesteps is not None else cfg.total_timesteps)
    if add <= 0:
        raise ValueError(f"`timesteps` must be > 0, got {add}")
    model.set_logger(configure(str(run), list(_log_formats())))
    meta = {"scenario": sc.name, "seed": seed, "config": cfg.to_dict()}
    t0 = time.perf_counter()
    model.learn(add, callback=_callbacks(cfg, venv, done + add, run, meta, progress),
                reset_num_timesteps=resume is None, progress_bar=False)
    seconds = time.perf_counter() - t0
    # SB3 runs whole rollouts (n_envs x n_steps): it may execute more steps than requested,
    # and steps/s must divide what ran
    executed = int(model.num_timesteps) - done
    actor = NumpyActor.from_sb3(model, venv)
    tmp = run / "export"
    tmp.mkdir(exist_ok=True)
    model.save(tmp / "model.zip")
    files: dict[str, str | Path | bytes] = {
        ACTOR_FILE: actor.save(tmp / ACTOR_FILE), "model.zip": tmp / "model.zip",
             "vecnormalize.npz": save_vecnormalize(venv, tmp / "vecnormalize.npz")}
    names = obs_names(cfg)
    policy = PPOTimingPolicy(actor, sc.guardrails, obs_names=names, name=out.name)
    card: dict[str, Any] = {
        "env_id": "pushrl/PushTiming-v1" if names == TIMING_OBS_NAMES else "pushrl/PushTiming-v0",
        "scenario": sc.to_dict(), "seed": seed,
        "simulator_sha256": venv.unwrapped.venv.world.model.meta.get("sha256"),
        # lineage of the logs the simulator was fitted on (a user split's part, if any):
        # the gate's held_out_data rule treats them as the agent's training data
        "simulator_data": {k: venv.unwrapped.venv.world.model.meta.get(k)
                           for k in ("fingerprint", "split")},
        "timesteps": int(model.num_timesteps), "timesteps_this_run": add,
        "timesteps_executed_this_run": executed,
        "resumed_from": str(resume) if resume else None, "config": cfg.to_dict(),
        "train/seconds": round(seconds, 1),
        "train/steps_per_second": round(executed / max(seconds, 1e-9)),
        "torch_threads": cfg.torch_threads, "obs_names": list(names),
        "profile_features": cfg.profile_features,
        "deterministic": False, "run_dir": str(run)}
    if evaluate:
        card.update(_card_evaluation(policy, sc, cfg.eval_users, seed))
        policy.deterministic = bool(card["deterministic"])
    path = save_artifact(out, kind="timing", loader="ppo", files=files, card=card)
    policy.version = path.name
    return TrainResult(path, policy, json.loads((path / "card.json").read_text()), seconds,
                       int(model.num_timesteps))


def _card_evaluation(policy: PPOTimingPolicy, sc: Any, n_users: int,
                     seed: int) -> dict[str, Any]:
    """Pick sampling vs argmax on a validation seed, then evaluate on held-out users."""
    val = {}
    for det in (False, True):
        policy.deterministic = det
        val[det] = _evaluate(policy, sc, max(n_users // 2, 1), VALIDATION_SEED + seed)
    best = max(val, key=lambda d: val[d]["sim/objective_per_user"])
    policy.deterministic = best
    ev = {"scenario": _evaluate(policy, sc, n_users, EVALUATION_SEED + seed)}
    if _has_truth(sc) and not sc.truth:
        ev["truth"] = _evaluate(policy, dataclasses.replace(sc, truth=True), n_users,
                                EVALUATION_SEED + seed)
    return {"deterministic": best,
            "validation": {("argmax" if d else "sample"): v["sim/objective_per_user"]
                           for d, v in val.items()},
            "evaluation": ev}
