"""`pushrl compare --triggers` (issue #16 item 6): delay policies on the same triggers with
the one definition of the trigger metrics, paired CIs over users, by kind, the delay
distribution in the report; the fitted source reproduces the log's own totals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.compare.trigger_report import write_trigger_report
from pushrl.compare.stats import paired_difference
from pushrl.compare.triggers import compare_triggers, trigger_metric_defs
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.errors import PushrlError
from pushrl.policies.delay_data import delay_rounds
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_fit import TriggerSim
from pushrl.sim.trigger_metrics import ArmOutcomes, trigger_outcomes
from pushrl.sim.trigger_world import (
    TRUTH_FILE,
    WORLD_GUARDRAILS,
    WORLD_TRIGGERS,
    TriggerWorldParams,
    arm_probs,
    synthesize_triggers,
)
from tests.cli_runner import run_pushrl

POLICIES = ["delay-fixed-1h", "delay-fixed-24h", "delay-next-active-hour"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trigger_world")
    synthesize_triggers(d, world_config("triggers", users=150, days=10, seed=5))
    return d


def test_outcomes_of_a_distribution_are_its_expected_values() -> None:
    arms = (0, 1, None)
    truth = pd.DataFrame({"incr_0": [0.2, 0.1], "incr_1": [0.1, 0.3], "incr_drop": [0.0, 0.0],
                          "send_0": [1.0, 0.9], "send_1": [0.5, 0.6], "send_drop": [0.0, 0.0],
                          "p_organic": [0.5, 0.0], "unsub_hazard": [0.01, 0.02],
                          "price": [10.0, 20.0]})
    o = ArmOutcomes.from_truth(truth, arms)
    dist = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    v = trigger_outcomes(dist, o)
    np.testing.assert_allclose(v["incremental"], [0.15, 0.0])
    np.testing.assert_allclose(v["sends"], [0.75, 0.0])
    # push-attributed = incremental x P(no organic before the send) / P(none in the horizon)
    np.testing.assert_allclose(v["recovered"], [0.5 * (0.2 * 1.0 / 0.5 + 0.1 * 0.5 / 0.5), 0])
    np.testing.assert_allclose(v["unsubscribes"], [0.75 * 0.01, 0.0])
    np.testing.assert_allclose(v["incremental_revenue"], [1.5, 0.0])
    np.testing.assert_allclose(v["organic"], [0.5, 0.0])
    with pytest.raises(ValueError, match="same triggers and arms"):
        trigger_outcomes(dist[:, :2], o)


def test_compare_on_the_truth_sums_the_one_definition_per_user(world: Path) -> None:
    res = compare_triggers(POLICIES, world, source="auto")
    assert res.meta["mode"] == "triggers" and res.meta["source"] == "truth"
    ds, _ = load_dataset(world, quarantine=False)
    rounds = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS)
    truth = pd.read_parquet(world / TRUTH_FILE).set_index("trigger_id").loc[rounds.trigger_id]
    o = ArmOutcomes.from_truth(truth.reset_index(), rounds.arms)
    from pushrl.policies.baselines import make_baseline

    n_users = len(set(rounds.user_id))
    s = res.summary.set_index(["policy", "metric"])["value"]
    for name in POLICIES:
        v = trigger_outcomes(make_baseline(name).action_dist(rounds.context), o)
        for m in ("recovered", "incremental", "sends", "unsubscribes"):
            assert s[(name, f"trigger_{m}_per_user")] == pytest.approx(v[m].sum() / n_users)
            for kind in res.meta["kinds"]:
                assert s[(name, f"trigger_{m}_per_user:{kind}")] == pytest.approx(
                    v[m][rounds.kind == kind].sum() / n_users)
        assert s[(name, "trigger_sends_per_recovered")] == pytest.approx(
            v["sends"].sum() / v["recovered"].sum())
    # paired differences are the stats module's, over the same users in the same order
    pu = res.per_user
    a, b = (pu[pu["policy"] == p].reset_index(drop=True) for p in POLICIES[1::-1])
    defs = trigger_metric_defs(res.meta["kinds"])
    want = paired_difference(a, b, "trigger_incremental_per_user", days=res.meta["days"],
                             metrics=defs)
    got = res.paired.set_index(["policy", "metric"]).loc[
        ("delay-fixed-24h", "trigger_incremental_per_user")]
    assert (got["diff"], got["lower"], got["upper"]) == pytest.approx(
        (want.value, want.lower, want.upper))
    assert got["lower"] < got["diff"] < got["upper"]
    # the delay distribution: fixed delays put every trigger on their arm
    dl = res.delays
    assert dl is not None
    one = dl[(dl["policy"] == "delay-fixed-24h") & (dl["kind"] == "all")].set_index("arm")
    assert one.loc["24", "share"] == 1.0 and one["share"].sum() == pytest.approx(1.0)
    nah = dl[(dl["policy"] == "delay-next-active-hour") & (dl["kind"] == "all")]
    assert (nah["share"] > 0).sum() >= 2  # it spreads over arms


def test_the_fitted_source_reproduces_the_logs_own_totals(world: Path) -> None:
    """Under the logging policy's own arm distribution, the simulator fitted from the log
    predicts the log's push-attributed conversions and sends (IPW: unbiased), within 3 SE."""
    ds, _ = load_dataset(world, quarantine=False)
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), WORLD_GUARDRAILS)
    assert r.push_converted is not None
    sim = TriggerSim.fit(r.kind, r.action, r.pscore, r.converted, r.sent, r.arms,
                         recovered=r.push_converted, unsubscribed=r.unsubscribed)
    o = ArmOutcomes.from_sim(sim, r.kind)
    logp = np.tile(arm_probs(r.arms, TriggerWorldParams().log_1h_share), (r.n_rounds, 1))
    v = trigger_outcomes(logp, o)
    fitted = np.isin(r.kind, list(sim.p_convert))
    for m, obs in (("recovered", r.push_converted), ("sends", r.sent)):
        x = obs[fitted].astype(float)
        se = x.std(ddof=1) * np.sqrt(x.size)
        assert abs(v[m][fitted].sum() - x.sum()) < 3 * se + 1e-9, (m, v[m].sum(), x.sum())
    res = compare_triggers(POLICIES[:2], world, source="fitted")
    assert res.meta["source"] == "fitted"
    part = compare_triggers(POLICIES[:2], world, holdout_frac=0.3, split_seed=1)
    assert 0.15 * res.meta["users"] < part.meta["users"] < 0.45 * res.meta["users"]
    assert part.meta["split"] == {"part": "heldout", "frac": 0.3, "seed": 1}
    s = res.summary.set_index(["policy", "metric"])["value"]
    assert s[("delay-fixed-1h", "trigger_recovered_per_user")] > 0
    assert "trigger_incremental_revenue_per_user" not in set(res.summary["metric"])


def test_report_has_the_trigger_tables_and_the_delay_plot(world: Path, tmp_path: Path) -> None:
    res = compare_triggers(POLICIES, world)
    html, md = write_trigger_report(res, tmp_path / "rep")
    text = md.read_text()
    for want in ("Delay distribution", "sends / recovered", "Paired differences vs",
                 "**cart**", "delay-next-active-hour"):
        assert want in text, want
    page = html.read_text()
    assert page.count("<img") == 3 and "data:image/png;base64," in page
    assert (tmp_path / "rep" / "delay_distribution.png").stat().st_size > 1000
    res.save(tmp_path / "rep")
    saved = json.loads((tmp_path / "rep" / "result.json").read_text())
    assert saved["meta"]["mode"] == "triggers" and saved["delays"]


def test_cli_compares_delay_policies_and_refuses_bad_input(world: Path, tmp_path: Path) -> None:
    r = run_pushrl("compare", "--triggers", str(world), "--policy", "delay-fixed-1h",
                   "--policy", "delay-fixed-24h", "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["meta"]["source"] == "truth" and Path(got["report_html"]).exists()
    r = run_pushrl("compare", "--triggers", str(world), "--policy", "delay-fixed-1h",
                   "--policy", "delay-fixed-0h", "--out", str(tmp_path / "o2"))
    assert r.returncode == 0 and "s/rec" in r.stdout and "delay-fixed-0h" in r.stdout, r.stderr
    for args, match in (
            (["--policy", "most-active-hour"], "not a delay policy"),
            (["--policy", "delay-fixed-1h", "--trigger-source", "oracle"], "--trigger-source"),
    ):
        r = run_pushrl("compare", "--triggers", str(world), *args, "--out",
                       str(tmp_path / "bad"))
        assert r.returncode != 0 and match in r.stderr and "Traceback" not in r.stderr, \
            r.stderr
    with pytest.raises(PushrlError, match="use --trigger-source fitted"):
        compare_triggers(POLICIES, tmp_path / "o", source="truth")  # a dir without truth
