"""The trigger simulator fitted from logs (:mod:`pushrl.sim.trigger_fit`): organic rate from
dropped triggers, IPW response per arm, incremental = arm - organic, intent decay."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.errors import DataError
from pushrl.sim.trigger_fit import TriggerSim

ARMS = (0, 1, 2, 4, 8, 24, None)


def _log(n: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    probs = np.array([0.1, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1])
    a = rng.choice(len(ARMS), n, p=probs)
    organic = 0.3
    incr = np.array([0.2 * np.exp(-d / 6) if d is not None else 0.0 for d in ARMS])
    conv = rng.random(n) < organic + incr[a]
    sent = (a != 6) & (rng.random(n) < 0.9)
    return np.full(n, "cart"), a, probs[a], conv, sent, incr


def test_fit_recovers_organic_response_and_decay() -> None:
    kind, a, ps, conv, sent, incr = _log(60_000)
    sim = TriggerSim.fit(kind, a, ps, conv, sent, ARMS)
    n_drop = (a == 6).sum()
    se = np.sqrt(0.3 * 0.7 / n_drop)
    assert abs(sim.p_organic["cart"] - 0.3) < 4 * se
    se_arm = np.sqrt(0.25 / sim.n["cart"][:-1]) + se
    assert (np.abs(sim.incremental("cart")[:-1] - incr[:-1]) < 4 * se_arm).all()
    assert sim.incremental("cart")[-1] == 0
    assert 3 < sim.decay["cart"]["tau_h"] < 12  # true 6 h
    # a policy that always sends at 0 h vs always 24 h, over 1000 cart contexts
    d0 = np.zeros((1000, 7))
    d0[:, 0] = 1
    d24 = np.zeros((1000, 7))
    d24[:, 5] = 1
    kinds = np.full(1000, "cart")
    assert sim.evaluate(d0, kinds)["incremental"] > sim.evaluate(d24, kinds)["incremental"]
    assert sim.to_dict()["n"]["cart"][1] == int((a == 1).sum())


def test_fit_needs_dropped_triggers() -> None:
    kind, a, ps, conv, sent, _ = _log(500)
    keep = a != 6
    with pytest.raises(DataError, match="no dropped triggers"):
        TriggerSim.fit(kind[keep], a[keep], ps[keep], conv[keep], sent[keep], ARMS)
    # a kind without dropped rounds stays out; the others are fitted
    kind2 = np.where(keep, "cart", "browse").astype(object)
    kind2[:3] = "winback"
    kind2[a == 6] = "cart"
    sim = TriggerSim.fit(kind2, a, ps, conv, sent, ARMS)
    assert "winback" in sim.unfitted and "cart" in sim.p_organic
