"""The fitted simulator reads the log's ``channel`` column (issue 17): per-channel open and
unsubscribe terms, recovered in sign and order from a synthetic world with channel effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import F, N_FEATURES
from pushrl.data.io import write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.sim import design
from pushrl.sim.fit import fit_sim
from pushrl.sim.response import FittedResponse


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> FittedResponse:
    d: Path = tmp_path_factory.mktemp("chfit") / "d"
    ds, _, _ = generate(world_config("default", users=2500, days=14, seed=8, channels=True))
    write_dataset(ds, d)
    loaded, report = load_dataset(d, quarantine=False)
    return FittedResponse(fit_sim(loaded, report))


def test_channel_levels_put_push_first() -> None:
    assert design.channel_levels(np.array(["email", None, "push", "in_app", ""],
                                          dtype=object)) == ("push", "email", "in_app")
    assert design.channel_levels(np.array(["push", "push", None], dtype=object)) == ()
    x = design.channel_design(np.array(["email", "push", None], dtype=object),
                              ("channel=email", "channel=in_app"), 3)
    np.testing.assert_array_equal(x, [[1, 0], [0, 0], [0, 0]])


def test_fit_recovers_per_channel_open_and_unsubscribe(fitted: FittedResponse) -> None:
    assert fitted.channels == ("push", "email", "in_app")
    op, un = fitted.model.glm("open"), fitted.model.glm("unsubscribe")
    coef = lambda g, n: float(g.coef[g.names.index(n)])  # noqa: E731
    # truth: email opens less (-0.9/-1.3 on the logit); in-app is unseen outside a
    # session, so its average open is lower than push's too
    assert coef(op, "channel=email") < -0.3
    assert coef(op, "channel=in_app") < -0.3
    # truth: unsubscribe logit shifts email -1.5, in-app -3 (both below push)
    assert coef(un, "channel=email") < 0 and coef(un, "channel=in_app") < 0
    # the simulator's response uses them; None = the reference channel (push)
    rng = np.random.default_rng(0)
    raw = np.abs(rng.normal(1, 1, (50, N_FEATURES)))
    raw[:, F["local_hour"]] = rng.integers(0, 24, 50)
    raw[:, F["local_dow"]] = rng.integers(0, 7, 50)
    pop = rng.integers(0, len(fitted.pop), 50)
    items = rng.integers(0, fitted.n_items, 50)
    aff = np.full(50, 1 / 8)
    push = fitted.p_open(pop, raw, aff, items)
    np.testing.assert_allclose(fitted.p_open(pop, raw, aff, items,
                                             np.full(50, "push", dtype=object)), push)
    assert (fitted.p_open(pop, raw, aff, items, np.full(50, "email", dtype=object))
            < push).all()
    assert (fitted.unsub_hazard(pop, raw, np.full(50, "in_app", dtype=object))
            < fitted.unsub_hazard(pop, raw)).all()
