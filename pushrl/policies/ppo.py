"""The PPO send-timing agent for serving: a numpy actor exported from SB3.

Training (:mod:`pushrl.policies.ppo_train`) produces an SB3 PPO model and VecNormalize
statistics. For serving and evaluation the actor network and the observation statistics are
exported to one ``actor.npz`` (:meth:`NumpyActor.from_sb3`): one decision is then a few
small matrix products in numpy (~µs) instead of a torch call through ``model.predict``,
and loading an artifact never unpickles anything (``np.load(allow_pickle=False)``).

:class:`PPOTimingPolicy` is the :class:`~pushrl.policies.base.TimingPolicy` used by the server
and by ``compare``: it builds the observation from the pipeline features with the
environment's own observation builder, so train and serve see identical inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import F
from pushrl.errors import ArtifactError
from pushrl.policies.base import TimingContext, TimingPolicy
from pushrl.policies.registry import register_loader
from pushrl.sim.engine import Guardrails

ACTOR_FILE = "actor.npz"
ACTOR_FORMAT = "pushrl/numpy-actor/v1"


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": _relu}


_BLAS: Any = None


def _one_blas_thread() -> Any:
    """Limit BLAS to one thread: the layers are tiny, and on a busy machine OpenBLAS's
    threads contend instead of helping (a (200, 64) x (64, 64) product measured 80x slower
    with them on a loaded 2-core box). ~10 µs, so only used for batches."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


#: Columns the agent sees after the environment's observation: where the current hour stands
#: in the user's day, from the pipeline's hour-of-week activity profile (the input of the
#: most-active-hour heuristic), which the environment's per-hour features cannot show.
#: ``at_day_peak`` and ``day_hour_rank`` (added with the v2 agents) state the heuristic's own
#: choice directly: a tanh network learns a 0/1 column far more easily than the spike
#: ``hours_to_day_peak == 0``.
PROFILE_OBS_NAMES: tuple[str, ...] = ("log_activity_vs_day_peak", "hours_to_day_peak",
                                      "at_day_peak", "day_hour_rank")
#: The columns of the v1 agents (their cards list their ``obs_names``).
PROFILE_OBS_NAMES_V1: tuple[str, ...] = PROFILE_OBS_NAMES[:2]


def profile_columns(state: Any, users: np.ndarray, raw: np.ndarray, allowed_hours: np.ndarray,
                    names: tuple[str, ...] = PROFILE_OBS_NAMES) -> np.ndarray:
    """Day-peak columns ``names`` (of :data:`PROFILE_OBS_NAMES`) for ``users``, ``(n, k)``.

    Today's profile is the user's shrunk hour-of-week activity share
    (:meth:`~pushrl.data.features.FeatureState.hour_of_week_profile`) averaged over weekdays
    or weekend days (as today is). ``log_activity_vs_day_peak``: log of the share now over the
    largest share among today's allowed hours (0 at the peak, clipped at -3);
    ``hours_to_day_peak``: hours from now to that peak / 24 (negative once it has passed);
    ``at_day_peak``: 1 at that peak hour (the most-active-hour heuristic's send hour);
    ``day_hour_rank``: allowed hours of today more active than now (ties: earlier first) / 24.

    Args:
        state: The feature state the raw features came from.
        users: ``(n,)`` user indices into ``state``.
        raw: ``(n, N_FEATURES)`` raw features (local hour and weekday are read).
        allowed_hours: ``(24,)`` bool, local hours outside quiet hours.
        names: Columns to return, in this order.
    """
    unknown = [c for c in names if c not in PROFILE_OBS_NAMES]
    if unknown:
        raise ValueError(f"unknown profile columns {unknown}; known: {list(PROFILE_OBS_NAMES)}")
    hour = raw[:, F["local_hour"]].astype(np.int64)
    day = state.day_profile(users, raw[:, F["local_dow"]], "weekpart")
    allowed = np.asarray(allowed_hours, bool)
    masked = np.where(allowed[None, :], day, 0.0)
    peak = masked.argmax(axis=1)
    now = day[np.arange(hour.size), hour]
    cols: dict[str, Any] = {}
    cols["log_activity_vs_day_peak"] = lambda: np.clip(
        np.log(np.maximum(now, 1e-9) / np.maximum(masked.max(axis=1), 1e-9)), -3.0, 0.0)
    cols["hours_to_day_peak"] = lambda: (peak - hour) / 24.0
    cols["at_day_peak"] = lambda: (peak == hour) & allowed[hour]
    cols["day_hour_rank"] = lambda: (
        allowed[None, :] & ((day > now[:, None]) | ((day == now[:, None])
                                                    & (np.arange(24)[None, :] < hour[:, None])))
    ).sum(axis=1) / 24.0
    out = np.empty((hour.size, len(names)), np.float32)
    for j, c in enumerate(names):
        out[:, j] = cols[c]()
    return out


@dataclass(frozen=True)
class NumpyActor:
    """An SB3 ``MlpPolicy`` actor (Discrete actions) with its VecNormalize stats, in numpy.

    Attributes:
        obs_mean: ``(d,)`` running mean of observations.
        obs_var: ``(d,)`` running variance of observations.
        clip_obs: Clip of normalised observations.
        epsilon: VecNormalize epsilon.
        weights: Per layer ``(in, out)`` float32 matrices; the last maps to action logits.
        biases: Per layer ``(out,)`` float32 vectors.
        activation: Hidden activation name (``"tanh"`` or ``"relu"``).
    """

    obs_mean: np.ndarray
    obs_var: np.ndarray
    clip_obs: float
    epsilon: float
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str = "tanh"

    def __post_init__(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError(f"need one bias per weight matrix, got {len(self.weights)} weights "
                             f"and {len(self.biases)} biases")
        if self.weights[0].shape[0] != self.obs_mean.shape[0]:
            raise ValueError(f"first layer takes {self.weights[0].shape[0]} inputs but the "
                             f"observation statistics have {self.obs_mean.shape[0]}")
        # precomputed once: a single decision is a few µs, so per-call work matters
        object.__setattr__(self, "_inv_std", 1.0 / np.sqrt(np.asarray(self.obs_var, np.float64)
                                                           + self.epsilon))

    @property
    def obs_dim(self) -> int:
        """Observation size ``d``."""
        return int(self.obs_mean.shape[0])

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """VecNormalize's transform, ``(n, d) -> (n, d)`` float32."""
        z = (np.asarray(obs, np.float64) - self.obs_mean) * self._inv_std  # type: ignore[attr-defined]
        return np.minimum(np.maximum(z, -self.clip_obs), self.clip_obs).astype(np.float32)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Action logits for raw (unnormalised) observations, ``(n, d) -> (n, n_actions)``."""
        obs = np.asarray(obs)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"`obs` must have shape (n, {self.obs_dim}), got {obs.shape}")
        act = _ACTIVATIONS[self.activation]
        h = self.normalize(obs)
        last = len(self.weights) - 1
        with _one_blas_thread() if h.shape[0] > 32 else contextlib.nullcontext():
            for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
                h = h @ w + b
                if i < last:
                    h = act(h)
        return np.asarray(h, np.float64)

    def probs(self, obs: np.ndarray) -> np.ndarray:
        """Action probabilities (softmax of :meth:`logits`), shape ``(n, n_actions)``."""
        z = self.logits(obs)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(z / z.sum(axis=1, keepdims=True))

    # ------------------------------------------------------------------ io
    @classmethod
    def from_sb3(cls, model: Any, vec_normalize: Any) -> NumpyActor:
        """Export the actor of an SB3 ``PPO("MlpPolicy")`` and its ``VecNormalize`` stats.

        Raises:
            ValueError: the policy is not a plain MLP actor (custom extractor, shared
                layers or an activation other than tanh/ReLU).
        """
        import torch  # training-side only: serving never imports torch

        pol = model.policy
        layers = [*pol.mlp_extractor.policy_net, pol.action_net]
        linear = [m for m in layers if isinstance(m, torch.nn.Linear)]
        acts = {type(m).__name__ for m in layers if not isinstance(m, torch.nn.Linear)}
        name = {"Tanh": "tanh", "ReLU": "relu"}.get(next(iter(acts), "Tanh"))
        if name is None or len(acts) > 1:
            raise ValueError(f"cannot export activations {sorted(acts)}; use tanh or relu")
        if type(pol.features_extractor).__name__ != "FlattenExtractor":
            raise ValueError("only the default FlattenExtractor can be exported, got "
                             f"{type(pol.features_extractor).__name__}")
        rms = vec_normalize.obs_rms
        return cls(
            obs_mean=np.asarray(rms.mean, np.float64).copy(),
            obs_var=np.asarray(rms.var, np.float64).copy(),
            clip_obs=float(vec_normalize.clip_obs), epsilon=float(vec_normalize.epsilon),
            weights=tuple(m.weight.detach().cpu().numpy().T.astype(np.float32).copy()
                          for m in linear),
            biases=tuple(m.bias.detach().cpu().numpy().astype(np.float32).copy()
                         for m in linear),
            activation=name)

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (no pickles); returns the path."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(ACTOR_FORMAT), "activation": np.array(self.activation),
            "obs_mean": self.obs_mean, "obs_var": self.obs_var,
            "clip_obs": np.array(self.clip_obs), "epsilon": np.array(self.epsilon),
            "n_layers": np.array(len(self.weights))}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        path = Path(path)
        with open(path, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> NumpyActor:
        """Read an ``.npz`` written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"]) if "format" in z else "?"
            if fmt != ACTOR_FORMAT:
                raise ArtifactError(f"{path}: actor format {fmt!r}, expected {ACTOR_FORMAT!r}; "
                                    "re-export the model")
            n = int(z["n_layers"])
            return cls(obs_mean=z["obs_mean"], obs_var=z["obs_var"],
                       clip_obs=float(z["clip_obs"]), epsilon=float(z["epsilon"]),
                       weights=tuple(z[f"w{i}"] for i in range(n)),
                       biases=tuple(z[f"b{i}"] for i in range(n)),
                       activation=str(z["activation"]))


class PPOTimingPolicy(TimingPolicy):
    """The trained timing agent as a :class:`TimingPolicy` (numpy actor, no torch).

    Args:
        actor: Exported actor network and observation statistics.
        guardrails: The guardrails the agent was trained under (they shape its observation:
            quiet hour, share of the caps left); a :class:`~pushrl.sim.engine.Guardrails` or
            its fields as a dict.
        deterministic: Choose the most probable action (``pscore`` 1) instead of sampling
            from the actor's distribution.
        profile_features: Append :func:`profile_columns` to the environment's observation
            (as the agent was trained).
        profile_names: Which :func:`profile_columns` (the agent's card lists them in
            ``obs_names``; v1 agents have :data:`PROFILE_OBS_NAMES_V1`).
        name: Registry name.
        version: Artifact version.
    """

    name = "ppo"

    def __init__(self, actor: NumpyActor, guardrails: Guardrails | dict[str, Any] | None = None,
                 *, deterministic: bool = False, profile_features: bool = True,
                 profile_names: tuple[str, ...] = PROFILE_OBS_NAMES,
                 name: str = "ppo", version: str = "0") -> None:
        self.actor = actor
        if isinstance(guardrails, dict):
            guardrails = Guardrails(**guardrails)
        self.guardrails = guardrails if guardrails is not None else Guardrails()
        self.allowed_hours = ~self.guardrails.quiet(np.arange(24))
        self.deterministic = bool(deterministic)
        self.profile_features = bool(profile_features)
        self.profile_names = tuple(profile_names)
        self.name, self.version = name, version

    def observation(self, ctx: TimingContext) -> np.ndarray:
        """The environment's observation for ``ctx``, shape ``(n, actor.obs_dim)``.

        Built by the environment's own builder
        (:func:`pushrl.envs.world.timing_obs_from_context`) with the guardrails the agent was
        trained under, then the :func:`profile_columns` (the training wrapper calls the same
        function), so training, evaluation and serving see identical inputs.
        """
        from pushrl.envs.world import timing_obs_from_context

        obs = timing_obs_from_context(ctx, self.guardrails)
        if self.profile_features:
            if ctx.state is None or ctx.user_index is None:
                raise ValueError("`ctx.state` and `ctx.user_index` are required: the agent "
                                 "reads the user's hour-of-week activity profile")
            obs = np.concatenate([obs, profile_columns(ctx.state, ctx.user_index, ctx.features,
                                                       self.allowed_hours, self.profile_names)],
                                 axis=1)
        if obs.shape[1] != self.actor.obs_dim:
            raise ArtifactError(f"the environment builds {obs.shape[1]} observation columns but "
                                f"the actor takes {self.actor.obs_dim}; retrain the agent for "
                                "this environment version")
        return obs

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        p = self.actor.probs(self.observation(ctx))
        if self.deterministic:
            return np.eye(p.shape[1])[np.argmax(p, axis=1)]
        return p

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "deterministic": self.deterministic,
                "obs_dim": self.actor.obs_dim, "profile_features": self.profile_features,
                "profile_names": list(self.profile_names),
                "guardrails": dataclasses.asdict(self.guardrails)}


@register_loader("ppo")
def _load(path: Path, card: dict[str, Any]) -> PPOTimingPolicy:
    """Loader for ``loader="ppo"`` artifacts (already verified by ``load_policy``)."""
    if ACTOR_FILE not in card.get("files", {}):
        raise ArtifactError(f"{path}: no {ACTOR_FILE} in the artifact; re-export it with "
                            "`pushrl train timing`")
    actor = NumpyActor.load(path / ACTOR_FILE)
    guardrails = card.get("scenario", {}).get("guardrails")
    names = tuple(c for c in card.get("obs_names", ()) if c in PROFILE_OBS_NAMES)
    return PPOTimingPolicy(actor, guardrails, deterministic=bool(card.get("deterministic", False)),
                           profile_features=bool(card.get("profile_features", False)),
                           profile_names=names or PROFILE_OBS_NAMES_V1,
                           name=str(card.get("name", "ppo")), version=str(card.get("version", "0")))



# ---------------------------------------------------------------------- training
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
        timesteps: Environment steps trained in total (including a resumed run's).
    """

    artifact: Path
    policy: PPOTimingPolicy
    card: dict[str, Any]
    seconds: float
    timesteps: int


def _callbacks(cfg: Any, venv: Any, total: int, run_dir: Path, meta: dict[str, Any],
               progress: Callable[[int, int], None] | None) -> Any:
    """SB3 callback: progress, ``sim/*`` rollout metrics, periodic checkpoints."""
    from stable_baselines3.common.callbacks import BaseCallback

    from pushrl.policies.ppo_config import save_checkpoint

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
    from pushrl.envs import rollout

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
    """Train the PPO timing agent on ``pushrl/PushTiming-v0`` and write an artifact.

    Args:
        scenario: Scenario name or path (``envs/<name>.toml``).
        out: Registry target ``policies/NAME`` (a new version ``vN`` is written).
        timesteps: Environment steps to train (default ``config.total_timesteps``); with
            ``resume``, steps *added* to the checkpoint's.
        seed: Seed of the training environments and the network initialisation.
        config: A :class:`~pushrl.policies.ppo_config.PPOConfig` (default: the tuned one).
        resume: A checkpoint directory (``RUN/checkpoints/step_N``) or a previous artifact
            to continue from (verified by sha256 before anything is loaded).
        run_dir: Where CSV/TensorBoard logs and checkpoints go (default ``runs/<NAME>``).
        progress: ``progress(done_steps, total_steps)`` callback.
        evaluate: Roll out the exported policy on held-out users and put the results in the
            model card (validation picks sampling vs argmax on a separate seed).
        **overrides: Scenario keys to replace (``fatigue_multiplier=2.0``, ...).
    """
    import time

    import torch
    from stable_baselines3.common.logger import configure

    from pushrl.envs.scenario import load_scenario
    from pushrl.policies.ppo_config import (PPOConfig, load_weights, make_model, make_vec_env,
                                            save_vecnormalize)
    from pushrl.policies.registry import save_artifact

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
    executed = int(model.num_timesteps) - done
    actor = NumpyActor.from_sb3(model, venv)
    tmp = run / "export"
    tmp.mkdir(exist_ok=True)
    model.save(tmp / "model.zip")
    files: dict[str, str | Path | bytes] = {
        ACTOR_FILE: actor.save(tmp / ACTOR_FILE), "model.zip": tmp / "model.zip",
             "vecnormalize.npz": save_vecnormalize(venv, tmp / "vecnormalize.npz")}
    policy = PPOTimingPolicy(actor, sc.guardrails, profile_features=cfg.profile_features,
                             name=out.name)
    card: dict[str, Any] = {
        "env_id": "pushrl/PushTiming-v0", "scenario": sc.to_dict(), "seed": seed,
        "simulator_sha256": venv.unwrapped.venv.world.model.meta.get("sha256"),
        "timesteps": int(model.num_timesteps), "timesteps_this_run": add,
        "resumed_from": str(resume) if resume else None, "config": cfg.to_dict(),
        "train/seconds": round(seconds, 1),
        "train/steps_per_second": round(executed / max(seconds, 1e-9)),
        "torch_threads": cfg.torch_threads, "obs_names": list(_obs_names(cfg)),
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


def _obs_names(cfg: Any) -> tuple[str, ...]:
    from pushrl.envs.world import TIMING_OBS_NAMES

    return tuple(TIMING_OBS_NAMES) + (PROFILE_OBS_NAMES if cfg.profile_features else ())
