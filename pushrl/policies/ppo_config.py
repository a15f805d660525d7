"""Hyperparameters of the PPO send-timing agent, tuned for a small CPU.

Why these values (measured on a 2-core machine, SB3 2.9, torch CPU):

* SB3's defaults (``n_steps=2048, batch_size=64, n_epochs=10``) spend ~80 % of the wall time
  in gradient steps: thousands of tiny minibatches, each paying torch's per-call overhead.
  A rollout of ``n_envs * n_steps`` samples cut into a few large minibatches
  (``batch_size=4096``) and ``n_epochs=4`` passes trains 3-4x faster for the same
  sample budget and the same final return here.
* Many parallel users (``n_envs=64``) from the native vector env: one policy forward pass
  decides for all of them, so rollout collection is cheap per sample.
* ``gamma=0.995`` (horizon ~200 h): a push's cost (fatigue over 24 h, unsubscribe hazard over
  7 days) lands days after the decision; ``gamma=0.99`` (~100 h) under-counts it.
* ``torch_threads=1``: the networks are tiny; more threads only contend with the env.

Everything is a field of :class:`PPOConfig`, recorded in the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self


@dataclass
class PPOConfig:
    """PPO hyperparameters (SB3 names) and training budget.

    Attributes:
        total_timesteps: Environment steps (user-hours) to train for.
        n_envs: Parallel users in the vector env.
        n_steps: Steps per env per rollout; a rollout has ``n_envs * n_steps`` samples.
        batch_size: Minibatch size; must divide ``n_envs * n_steps``.
        n_epochs: Passes over each rollout.
        learning_rate: Adam step size (linearly annealed to ``lr_final_fraction`` of it).
        lr_final_fraction: Learning rate at the end as a fraction of ``learning_rate``.
        gamma: Discount per hour.
        gae_lambda: GAE lambda.
        clip_range: PPO clip range.
        ent_coef: Entropy bonus.
        vf_coef: Value loss weight.
        max_grad_norm: Gradient clipping.
        net_arch: Hidden layer sizes of both actor and critic (separate networks).
        activation: ``"tanh"`` or ``"relu"``.
        norm_reward: Also normalise rewards with VecNormalize (observations always are).
        clip_obs: VecNormalize observation clip.
        torch_threads: ``torch.set_num_threads`` during training.
        checkpoint_every: Save a resumable checkpoint every this many timesteps.
        eval_users: Held-out users in the evaluation written to the model card.
    """

    total_timesteps: int = 2_000_000
    n_envs: int = 64
    n_steps: int = 256
    batch_size: int = 4096
    n_epochs: int = 4
    learning_rate: float = 3e-4
    lr_final_fraction: float = 0.1
    gamma: float = 0.995
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.003
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    norm_reward: bool = True
    clip_obs: float = 10.0
    torch_threads: int = 1
    checkpoint_every: int = 250_000
    eval_users: int = 2000

    def __post_init__(self) -> None:
        for name in ("total_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs",
                     "torch_threads", "checkpoint_every", "eval_users"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        rollout = self.n_envs * self.n_steps
        if rollout % self.batch_size:
            raise ValueError(f"`batch_size`={self.batch_size} must divide n_envs * n_steps = "
                             f"{rollout}; pick a divisor such as {rollout // 4}")
        for name, lo, hi in (("gamma", 0.0, 1.0), ("gae_lambda", 0.0, 1.0),
                             ("lr_final_fraction", 0.0, 1.0)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"`{name}` must be in [{lo}, {hi}], got {v}")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}")
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"`activation` must be 'tanh' or 'relu', got {self.activation!r}")
        if not self.net_arch or any(int(h) <= 0 for h in self.net_arch):
            raise ValueError(f"`net_arch` must list positive layer sizes, got {self.net_arch}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the model card)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from a dict, refusing unknown keys with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PPO config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def learning_rate_schedule(self) -> Any:
        """SB3 schedule: linear from ``learning_rate`` to ``lr_final_fraction`` of it."""
        lr, frac = self.learning_rate, self.lr_final_fraction

        def schedule(progress_remaining: float) -> float:
            return lr * (frac + (1.0 - frac) * progress_remaining)

        return schedule
