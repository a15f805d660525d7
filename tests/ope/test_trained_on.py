"""The gate's held-out rule: what counts as data a policy has seen (`trained_on`)."""

from __future__ import annotations

from typing import Any

from pushrl.ope._common import ResolvedPolicy
from pushrl.policies.timing_baselines import NeverSend


def _split(part: str, of: str = "LOG") -> dict[str, Any]:
    return {"by": "user", "part": part, "holdout_frac": 0.2, "seed": 0, "of": of,
            "n_users": 10}


def _resolved(card: dict[str, Any]) -> ResolvedPolicy:
    return ResolvedPolicy(NeverSend(), "agent", "artifact", card=card)


def test_a_timing_agent_has_seen_the_logs_its_simulator_was_fitted_on() -> None:
    """A PPO card records ``simulator_data`` (the fitted simulator's logs): evaluating on those
    logs, on the whole log they are a part of, or on the same part is not held out; the other
    part of the same split is."""
    train_part = _resolved({"simulator_data": {"fingerprint": "TRAIN", "split": _split("train")}})
    assert not train_part.trained_on({"fingerprint": "HELD", "split": _split("heldout")})
    assert train_part.trained_on({"fingerprint": "TRAIN2", "split": _split("train")})
    assert train_part.trained_on({"fingerprint": "LOG", "split": None})
    whole = _resolved({"simulator_data": {"fingerprint": "LOG", "split": None}})
    assert whole.trained_on({"fingerprint": "HELD", "split": _split("heldout")})
    assert whole.trained_on("LOG")
    assert not whole.trained_on("OTHER")  # logs without a common lineage count as held out


def test_cards_without_simulator_lineage_are_judged_by_their_data_only() -> None:
    """Older cards (no ``simulator_data``) or a simulator without a recorded fingerprint."""
    assert not _resolved({}).trained_on("LOG")
    assert not _resolved({"simulator_data": {"fingerprint": None, "split": None}}).trained_on("LOG")
    assert _resolved({"data": {"fingerprint": "LOG", "split": None}}).trained_on("LOG")
