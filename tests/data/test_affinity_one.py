"""``FeatureState.affinity_one`` (the server's one-user path) equals ``affinity`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, FeatureState


@pytest.mark.parametrize("shrink", [10.0, 3.7, 0.0])
def test_affinity_one_equals_affinity(shrink: float) -> None:
    """Integer counts (ties among equal counts and equal priors), fractional history counts,
    large counts and a user with none: the same float32 values and the same first argmax."""
    rng = np.random.default_rng(3)
    ncat = 8
    prior = rng.dirichlet(np.ones(ncat))
    prior[5] = prior[2]  # equal priors: equal counts tie exactly
    spec = FeatureSpec(tuple(f"c{j}" for j in range(ncat)), {}, tuple([1 / 168] * 168),
                       tuple(prior.tolist()), shrink_cat=shrink)
    n = 600
    fs = FeatureState(spec, ["UTC"] * n, 480_000)
    cat = np.zeros((ncat, n), np.float32)
    cat[:, :200] = rng.integers(0, 6, (ncat, 200))
    cat[:, 200:400] = rng.gamma(0.7, 3.0, (ncat, 200)).astype(np.float32)
    cat[:, 400:550] = rng.integers(0, 1_000_000, (ncat, 150))
    fs.a.cat[:, :n] = cat
    assert fs.a.cat[:, :n].sum() > 0
    users = np.arange(n)
    if shrink == 0.0:
        users = users[cat.sum(axis=0) > 0]  # 0 / 0: no affinity without counts or prior
    ties = 0
    for k in (ncat, 5):
        full = fs.affinity(users, np.arange(k)[None, :].repeat(users.size, 0))
        for i, u in enumerate(users.tolist()):
            one = fs.affinity_one(u, k)
            assert one == full[i].tolist(), (u, k)
            assert one.index(max(one)) == int(np.argmax(full[i]))
            ties += len(set(one)) < k
    assert ties > 50  # the first-highest rule is exercised
