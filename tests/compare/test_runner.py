"""Paired comparison in the simulator: common random numbers, Ray parity, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.compare.runner import PolicySpec, compare
from pushrl.errors import PushrlError
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ["never-send", "most-active-hour", "fixed-hour:hour=12"]


def test_same_users_for_every_policy() -> None:
    r = compare(POLICIES, users=120, days=3, seeds=2, shard_size=50)
    pu = r.per_user
    assert set(pu["policy"]) == {"never-send", "most-active-hour", "fixed-hour:hour=12"}
    keys = [g[["seed", "user", "timezone"]].reset_index(drop=True)
            for _, g in pu.groupby("policy", sort=False)]
    for k in keys[1:]:
        pd.testing.assert_frame_equal(k, keys[0])
    never = pu[pu["policy"] == "never-send"]
    assert (never["sends"] == 0).all() and (never["objective"] == 0).all()
    assert len(r.paired) == 2 * 12 and r.meta["shards"] == 2 * 3
    # without organic purchases the incremental conversions are the attributed ones
    np.testing.assert_array_equal(pu["incremental_conversions"], pu["conversions"])
    np.testing.assert_allclose(pu["sends_per_week"], pu["sends"] / 3 * 7)


def test_incremental_metrics_against_no_push_with_organic_purchases() -> None:
    r = compare(["never-send", "most-active-hour"], users=150, days=4, shard_size=80,
                overrides={"truth": True, "organic_purchases": True})
    pu = r.per_user
    never = pu[pu["policy"] == "never-send"]
    assert never["organic_conversions"].sum() > 0  # users buy without a push
    np.testing.assert_array_equal(never["incremental_conversions"], 0.0)
    np.testing.assert_array_equal(never["incremental_revenue"], 0.0)
    mah = pu[pu["policy"] == "most-active-hour"].reset_index(drop=True)
    # incremental = attributed + organic - organic under no push (the same users)
    np.testing.assert_allclose(
        mah["incremental_conversions"],
        mah["conversions"] + mah["organic_conversions"]
        - never["organic_conversions"].to_numpy())
    metrics = set(r.summary["metric"])
    assert {"incremental_conversions_per_user", "incremental_revenue_per_user",
            "sends_per_user_week"} <= metrics


def test_shard_plan_defines_results_not_batching() -> None:
    """Same seed and shard size -> identical numbers, run twice."""
    a = compare(POLICIES[:2], users=90, days=2, shard_size=40)
    b = compare(POLICIES[:2], users=90, days=2, shard_size=40)
    pd.testing.assert_frame_equal(a.per_user, b.per_user)


def test_ray_results_identical_to_local() -> None:
    local = compare(POLICIES, users=80, days=2, shard_size=40)
    remote = compare(POLICIES, users=80, days=2, shard_size=40, ray=True, workers=2)
    pd.testing.assert_frame_equal(local.per_user, remote.per_user)
    pd.testing.assert_frame_equal(local.summary, remote.summary)
    assert remote.meta["mode"] == "ray"


@pytest.mark.parametrize(("policies", "kw", "pattern"), [
    ([], {}, "at least one --policy"),
    (["never-send"], {"users": 1}, "--users must be >= 2"),
    (["never-send", "never-send"], {}, "labels must be unique"),
    (["never-send"], {"reference": "nope"}, "--reference 'nope'"),
    (["no-such-baseline"], {}, "unknown baseline"),
    (["fixed-hour:hour"], {}, "must be key=value"),
])
def test_bad_input(policies: list[str], kw: dict[str, object], pattern: str) -> None:
    with pytest.raises(PushrlError, match=pattern):
        compare(policies, **{"users": 10, "days": 1, **kw})  # type: ignore[arg-type]


def test_policy_spec_labels() -> None:
    assert PolicySpec.parse("fixed-hour:hour=19").label == "fixed-hour:hour=19"
    assert PolicySpec.parse("evening=fixed-hour:hour=19").label == "evening"


def test_cli_json_and_report(tmp_path: Path) -> None:
    r = run_pushrl("compare", "-p", "never-send", "-p", "most-active-hour", "--users", "60",
                   "--days", "2", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert Path(d["report_html"]).exists() and Path(d["report_md"]).exists()
    assert {row["policy"] for row in d["paired"]} == {"most-active-hour"}
    assert (tmp_path / "per_user.parquet").exists()


def test_cli_organic_flag_reports_incremental_metrics(tmp_path: Path) -> None:
    from tests.cli_runner import run_pushrl

    r = run_pushrl("compare", "--policy", "never-send", "--policy", "most-active-hour",
                   "--users", "60", "--days", "2", "--organic", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "c" / "report.md").read_text()
    assert "Incremental conversions per user (vs no push)" in md
    assert "Sends per user per week" in md
