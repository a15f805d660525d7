"""PPO training speed: pushrl's training stack vs raw SB3 PPO on the same env and hyperparameters.

* ``pushrl``: :func:`pushrl.train.ppo.train_timing` (``evaluate=False``): the native vector env
  behind the SB3 adapter, VecMonitor, the ``ExpectedReward`` wrapper (the engine's expected
  send value of every send, averaged over the item policy), VecNormalize, the training
  callback (``sim/*`` metrics, checkpoints) and the CSV logger. Timed: ``model.learn`` (the
  card's ``train/seconds``), and its ``train/steps_per_second`` is printed beside it.
* ``sb3``: ``PPO("MlpPolicy", VecNormalize(VecMonitor(PushTimingSB3VecEnv(...))))`` with the
  same :class:`~pushrl.train.ppo_config.PPOConfig` hyperparameters (including the initial
  SEND logit bias, so both send at the same rate), no wrapper, no callback.

Both learn the same number of steps (whole rollouts); runs alternate (sb3, pushrl, sb3, ...)
so they see the same machine load, and the ratio is taken per pair. Figures: steps per second
of wall time and of process CPU time (user + system of this process: torch runs with one
thread, so on a shared machine the CPU figure is what the code costs).

    python benchmarks/ppo_stack.py [--rollouts 4] [--repeats 3] [--json] [--write]

Target (issue 20): pushrl >= 0.8x raw SB3. ``--write`` stores
``benchmarks/results/ppo_stack.json`` with the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from pushrl.envs.scenario import load_scenario
from pushrl.envs.sb3 import PushTimingSB3VecEnv
from pushrl.train.ppo import train_timing
from pushrl.train.ppo_config import PPOConfig, obs_names

from _output import emit_json  # benchmarks/ is sys.path[0]

TARGET = 0.8
RESULT = Path(__file__).resolve().parent / "results" / "ppo_stack.json"


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def raw_sb3(cfg: PPOConfig, sc: Any, steps: int, seed: int) -> dict[str, float]:
    """Raw SB3 PPO on the adapter env with ``cfg``'s hyperparameters."""
    env = VecNormalize(VecMonitor(PushTimingSB3VecEnv(cfg.n_envs, sc, seed=seed,
                                                      obs_names=obs_names(cfg))),
                       norm_obs=True, norm_reward=cfg.norm_reward, clip_obs=cfg.clip_obs,
                       gamma=cfg.gamma)
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[cfg.activation]
    model = PPO("MlpPolicy", env, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
                batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma,
                gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range, ent_coef=cfg.ent_coef,
                vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm,
                policy_kwargs={"net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)},
                               "activation_fn": act},
                seed=seed, device="cpu", verbose=0)
    with torch.no_grad():  # the same initial send rate (~5 %): sends cost env time
        model.policy.action_net.bias.copy_(torch.tensor([0.0, cfg.send_logit_bias]))
    w, c = time.perf_counter(), cpu()
    model.learn(steps, progress_bar=False)
    w, c = time.perf_counter() - w, cpu() - c
    n = int(model.num_timesteps)
    return {"steps": n, "wall_s": w, "cpu_s": c, "steps_per_s_wall": n / w,
            "steps_per_s_cpu": n / c}


def pushrl_stack(cfg: PPOConfig, scenario: str, steps: int, seed: int) -> dict[str, float]:
    """``train_timing`` without the held-out evaluation; times ``model.learn`` only."""
    with tempfile.TemporaryDirectory() as tmp:
        c = cpu()
        res = train_timing(scenario, out=Path(tmp) / "policies" / "bench", timesteps=steps,
                           seed=seed, config=cfg, run_dir=Path(tmp) / "run", evaluate=False)
        c = cpu() - c  # includes artifact export (small): an upper bound of learn's CPU
    n = res.timesteps
    return {"steps": n, "wall_s": res.seconds, "cpu_s": c, "steps_per_s_wall": n / res.seconds,
            "steps_per_s_cpu": n / c,
            "card_train_steps_per_second": res.card["train/steps_per_second"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="default")
    p.add_argument("--rollouts", type=int, default=4, help="rollouts (n_envs x n_steps) per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--write", action="store_true", help=f"write {RESULT.name}")
    a = p.parse_args()
    cfg = PPOConfig()
    torch.set_num_threads(cfg.torch_threads)
    steps = a.rollouts * cfg.n_envs * cfg.n_steps
    sc = load_scenario(a.scenario)
    runs: list[dict[str, Any]] = []
    for r in range(a.repeats):
        raw = raw_sb3(cfg, sc, steps, seed=r)
        ours = pushrl_stack(cfg, a.scenario, steps, seed=r)
        runs.append({"sb3": raw, "pushrl": ours,
                     "ratio_wall": ours["steps_per_s_wall"] / raw["steps_per_s_wall"],
                     "ratio_cpu": ours["steps_per_s_cpu"] / raw["steps_per_s_cpu"],
                     "load_avg": os.getloadavg()})
        if not a.json:
            print(f"run {r + 1}: sb3 {raw['steps_per_s_wall']:,.0f} steps/s wall "
                  f"({raw['steps_per_s_cpu']:,.0f}/CPU-s), pushrl "
                  f"{ours['steps_per_s_wall']:,.0f} ({ours['steps_per_s_cpu']:,.0f}/CPU-s, card "
                  f"train/steps_per_second {ours['card_train_steps_per_second']:,}): ratio "
                  f"{runs[-1]['ratio_wall']:.2f}x wall, {runs[-1]['ratio_cpu']:.2f}x CPU "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    out = {"benchmark": "ppo_stack", "scenario": a.scenario, "steps_per_run": steps,
           "config": cfg.to_dict(), "runs": runs,
           "median_ratio_wall": median(r["ratio_wall"] for r in runs),
           "median_ratio_cpu": median(r["ratio_cpu"] for r in runs),
           "target_ratio": TARGET, "load_avg": os.getloadavg(), "cpu_count": os.cpu_count()}
    emit_json(out, RESULT if a.write else None, echo=a.json)
    if not a.json:
        print(f"pushrl / raw SB3 PPO: median {out['median_ratio_wall']:.2f}x wall, "
              f"{out['median_ratio_cpu']:.2f}x CPU (target >= {TARGET}x); load average "
              f"{' '.join(f'{x:.1f}' for x in out['load_avg'])}")


if __name__ == "__main__":
    main()
