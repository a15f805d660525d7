"""The rules every layer shares: guardrails (:mod:`pushrl.rules.guardrails`) and the reward
(:mod:`pushrl.rules.reward`). The simulator, OPE, compare and the server call these; none
writes its own copy."""

from pushrl.rules.guardrails import REASONS, DayCount, Guardrails, in_week_window
from pushrl.rules.reward import RewardWeights

__all__ = ["REASONS", "DayCount", "Guardrails", "RewardWeights", "in_week_window"]
