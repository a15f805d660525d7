"""Fixtures of the comparison tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.compare.result import CompareResult
from pushrl.compare.stats import segment_table, summarize


@pytest.fixture
def synthetic_result() -> CompareResult:
    """A small synthetic :class:`CompareResult`: 200 users, 7 days, three policies."""
    n_users, days, seed = 200, 7, 0
    rng = np.random.default_rng(seed)
    rows = []
    for k, pol in enumerate(["never-send", "fixed-hour", "most-active-hour"]):
        rng_u = np.random.default_rng(seed)
        base = rng_u.normal(0, 1, n_users)
        sends = rng.poisson(k * days, n_users)
        opens = rng.binomial(sends, 0.05 + 0.03 * k)
        rows.append(pd.DataFrame({
            "policy": pol, "seed": 0, "user": np.arange(n_users), "objective": base + k + opens,
            "sends": sends, "opens": opens, "clicks": rng.binomial(opens, 0.4),
            "conversions": rng.binomial(opens, 0.1), "revenue": rng.gamma(1, 5, n_users) * k,
            "unsubscribed": rng.random(n_users) < 0.02 * k, "guardrail_blocks": 0,
            "timezone": rng_u.choice(["UTC", "Asia/Tokyo"], n_users),
            "engagement": rng_u.choice(["low", "mid", "high"], n_users)}))
    pu = pd.concat(rows, ignore_index=True)
    summary, paired = summarize(pu, reference="never-send", days=days)
    daily = pd.DataFrame([{"policy": p, "day": dd, "objective": (dd + 1) * i,
                           "subscribed": 1 - 0.002 * i * dd}
                          for i, p in enumerate(pu["policy"].unique()) for dd in range(days)])
    hourly = pd.DataFrame([{"policy": p, "local_hour": h, "sends": float(rng.random())}
                           for p in pu["policy"].unique() for h in range(24)])
    act = np.exp(-0.5 * ((np.arange(24) - 19) / 3) ** 2)
    return CompareResult(pu, summary, paired,
                         {"timezone": segment_table(pu, "timezone", days=days),
                          "engagement": segment_table(pu, "engagement", days=days)},
                         daily, hourly, (act / act.sum()).tolist(),
                         {"scenario": "test", "users": n_users, "days": days, "seeds": 1,
                          "reference": "never-send"})
