"""The PPO send-timing agent for serving: a numpy actor exported from SB3.

Training (:mod:`pushrl.train.ppo`) produces an SB3 PPO model and VecNormalize
statistics. For serving and evaluation the actor network and the observation statistics are
exported to one ``actor.npz`` (:meth:`NumpyActor.from_sb3`): one decision is then a few
small matrix products in numpy (~µs) instead of a torch call through ``model.predict``,
and loading an artifact never unpickles anything (``np.load(allow_pickle=False)``).

:class:`PPOTimingPolicy` is the :class:`~pushrl.policies.base.TimingPolicy` used by the server
and by ``compare``: it builds the observation with the environment's own builder
(:class:`~pushrl.envs.observation.TimingObservation`), so train and serve see identical
inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.envs.observation import (
    PROFILE_OBS_NAMES_V1,
    TIMING_OBS_NAMES,
    V0_OBS_NAMES,
    TimingObservation,
)
from pushrl.errors import ArtifactError
from pushrl.policies.base import TimingContext, TimingPolicy
from pushrl.policies.registry import register_loader
from pushrl.rules.guardrails import Guardrails

ACTOR_FILE = "actor.npz"
ACTOR_FORMAT = "pushrl/numpy-actor/v1"


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": _relu}


_BLAS: Any = None


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class Exploration:
    """How the served agent explores: the stochastic export of a trained actor.

    The served distribution is ``(1 - epsilon) * agent + epsilon * [1 - send, send]``, where
    ``agent`` is the softmax of the actor's logits divided by ``temperature``, or with
    ``temperature=None`` the agent as trained (the argmax one-hot of a deterministic agent).
    Off-policy evaluation of a near-deterministic agent on randomised logs has few matched user-days and a wide interval; a mix toward the logger's
    send rate trades a little of the agent's value for many more matched rounds. The served
    decision's ``pscore`` is the probability of this mixed distribution (guardrails masked
    by the base class), so logs of the served agent support OPE of the next candidate.
    :func:`pushrl.ope.exploration.select_exploration` picks the values on the training logs
    by the gate's own criteria.

    Attributes:
        temperature: Softmax temperature over the actor's logits (> 0), or None for the
            agent as trained (its ``deterministic`` flag decides argmax vs softmax).
        epsilon: Share of the constant send probability in the mix, in [0, 1].
        send: The mix's send probability per slot, in [0, 1] (the logger's mean ``pscore_send``
            on allowed slots when selected from logs).
    """

    temperature: float | None = None
    epsilon: float = 0.0
    send: float = 0.0

    def __post_init__(self) -> None:
        for name, lo, hi in (("epsilon", 0.0, 1.0), ("send", 0.0, 1.0)):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and lo <= v <= hi):
                raise ValueError(f"exploration `{name}` must be in [{lo}, {hi}], got {v!r}")
        t = self.temperature
        if t is not None and not (isinstance(t, int | float) and t > 0):
            raise ValueError(f"exploration `temperature` must be > 0 or None, got {t!r}")

    def mix(self, dist: np.ndarray) -> np.ndarray:
        """``(n, 2)`` WAIT/SEND distribution mixed with the constant send probability."""
        if self.epsilon == 0.0:
            return dist
        return (1.0 - self.epsilon) * dist + self.epsilon * np.array([1.0 - self.send,
                                                                      self.send])

    def to_dict(self) -> dict[str, float | None]:
        """JSON form (the card's ``exploration``)."""
        return {"temperature": self.temperature, "epsilon": self.epsilon, "send": self.send}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Exploration:
        """From a card's ``exploration`` (extra keys, e.g. the selection evidence, ignored)."""
        t = d.get("temperature")
        return cls(None if t is None else float(t), float(d.get("epsilon", 0.0)),
                   float(d.get("send", 0.0)))


def _one_blas_thread() -> Any:
    """Limit BLAS to one thread: the layers are tiny, and on a busy machine OpenBLAS's
    threads contend instead of helping (a (200, 64) x (64, 64) product measured 80x slower
    with them on a loaded 2-core box). ~10 µs, so only used for batches."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


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
        return _softmax(self.logits(obs))

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
            quiet hour, share of the caps left, allowed hours of the day profile); a
            :class:`~pushrl.sim.engine.Guardrails` or its fields as a dict.
        deterministic: Choose the most probable action (``pscore`` 1) instead of sampling
            from the actor's distribution.
        exploration: The stochastic export (:class:`Exploration`): a softmax temperature and
            a mix with a constant send probability, so that off-policy evaluation of the
            agent on randomised logs has matched rounds; default none.
        obs_names: The observation columns the agent was trained on (its card's
            ``obs_names``; default all of ``pushrl/PushTiming-v1``).
        name: Registry name.
        version: Artifact version.

    Raises:
        ArtifactError: ``obs_names`` has a different length than the actor's input.
    """

    name = "ppo"

    def __init__(self, actor: NumpyActor, guardrails: Guardrails | dict[str, Any] | None = None,
                 *, deterministic: bool = False, obs_names: Sequence[str] = TIMING_OBS_NAMES,
                 name: str = "ppo", version: str = "0",
                 exploration: Exploration | dict[str, Any] | None = None) -> None:
        self.actor = actor
        if isinstance(guardrails, dict):
            guardrails = Guardrails(**guardrails)
        self.guardrails = guardrails if guardrails is not None else Guardrails()
        self.obs = TimingObservation(self.guardrails, tuple(obs_names))
        if self.obs.dim != actor.obs_dim:
            raise ArtifactError(f"the observation {list(self.obs.names)} has {self.obs.dim} "
                                f"columns but the actor takes {actor.obs_dim}; pass the "
                                "`obs_names` the agent was trained on")
        self.deterministic = bool(deterministic)
        self.name, self.version = name, version
        if isinstance(exploration, dict):
            exploration = Exploration.from_dict(exploration)
        self.exploration = exploration if exploration is not None else Exploration()

    def observation(self, ctx: TimingContext) -> np.ndarray:
        """The environment's observation for ``ctx``, shape ``(n, actor.obs_dim)``, built by
        the environment's own builder with the guardrails the agent was trained under."""
        return self.obs.from_context(ctx)

    def agent_dist(self, ctx: TimingContext) -> np.ndarray:
        """The trained agent's own distribution (argmax one-hot if :attr:`deterministic`,
        else the softmax of its logits), before :attr:`exploration`; ``(n, 2)``, unmasked."""
        p = self.actor.probs(self.observation(ctx))
        if self.deterministic:
            return np.eye(p.shape[1])[np.argmax(p, axis=1)]
        return p

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        ex = self.exploration
        if ex.temperature is None:
            base = self.agent_dist(ctx)
        else:
            base = _softmax(self.actor.logits(self.observation(ctx)) / ex.temperature)
        return ex.mix(base)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "deterministic": self.deterministic,
                "exploration": self.exploration.to_dict(),
                "obs_dim": self.actor.obs_dim, "obs_names": list(self.obs.names),
                "guardrails": dataclasses.asdict(self.guardrails)}


def card_obs_names(card: dict[str, Any]) -> tuple[str, ...]:
    """The observation columns of an artifact: its card's ``obs_names``; cards without them
    predate the profile columns (17) or had the two v1 ones with ``profile_features``."""
    if card.get("obs_names"):
        return tuple(card["obs_names"])
    return V0_OBS_NAMES + (PROFILE_OBS_NAMES_V1 if card.get("profile_features") else ())


def save_with_exploration(artifact: str | Path, exploration: dict[str, Any],
                          out: str | Path | None = None) -> Path:
    """Write a new version of a PPO artifact that serves ``exploration``.

    The actor files are copied unchanged (new sha256 entries); the card is the source's with
    ``exploration`` (an :class:`Exploration` dict, optionally with its ``selection``
    evidence), ``exported_from`` and without the source's gate records (``ope``), which do
    not describe the new behaviour.

    Args:
        artifact: A verified ``loader="ppo"`` artifact directory.
        exploration: The card's ``exploration`` (validated by :class:`Exploration`).
        out: ``policies/NAME`` to version into (default: the source's ``policies/NAME``).

    Returns:
        The new artifact directory.
    """
    from pushrl.policies.registry import resolve, save_artifact, verify_artifact

    src = resolve(artifact)
    card = verify_artifact(src)
    if card.get("loader") != "ppo":
        raise ArtifactError(f"{src} is a {card.get('loader')!r} artifact; exploration exports "
                            "apply to PPO timing agents (loader 'ppo')")
    Exploration.from_dict(exploration)  # validate before writing anything
    keep = {k: v for k, v in card.items() if k not in (
        "files", "format", "name", "version", "kind", "loader", "created_at", "ope")}
    keep.update(exploration=exploration, exported_from=f"{card.get('name')}@{card.get('version')}")
    return save_artifact(Path(out) if out is not None else src.parent, kind="timing",
                         loader="ppo", files={f: src / f for f in card.get("files", {})},
                         card=keep)


@register_loader("ppo")
def _load(path: Path, card: dict[str, Any]) -> PPOTimingPolicy:
    """Loader for ``loader="ppo"`` artifacts (already verified by ``load_policy``)."""
    if ACTOR_FILE not in card.get("files", {}):
        raise ArtifactError(f"{path}: no {ACTOR_FILE} in the artifact; re-export it with "
                            "`pushrl train timing`")
    actor = NumpyActor.load(path / ACTOR_FILE)
    guardrails = card.get("scenario", {}).get("guardrails")
    return PPOTimingPolicy(actor, guardrails, deterministic=bool(card.get("deterministic", False)),
                           obs_names=card_obs_names(card), name=str(card.get("name", "ppo")),
                           version=str(card.get("version", "0")),
                           exploration=card.get("exploration"))
