"""Policies: one interface (:class:`~pushrl.policies.base.Policy`) for item choice, send
timing and baselines; every decision carries the probability of the chosen action."""

from pushrl.policies.base import (
    SEND,
    WAIT,
    BatchDecision,
    Decision,
    ItemContext,
    ItemPolicy,
    Policy,
    TimingContext,
    TimingPolicy,
)

__all__ = ["SEND", "WAIT", "BatchDecision", "Decision", "ItemContext", "ItemPolicy", "Policy",
           "TimingContext", "TimingPolicy"]
