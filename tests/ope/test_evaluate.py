"""evaluate_policy: the gate passes better and blocks worse policies, estimates agree with the
ground truth and with on-policy logs, and the glue's pieces (cross-fitting, cluster bootstrap,
policy resolution, errors) behave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pushrl.data.features import F, FeatureSpec, replay
from pushrl.data.io import Dataset
from pushrl.data.synth import SynthConfig, TrueWorld, synthesize
from pushrl.data.validate import load_dataset
from pushrl.errors import ArtifactError, DataError, ScenarioError
from pushrl.ope._common import _select
from pushrl.rules.guardrails import Guardrails
from pushrl.ope.evaluate import (
    HELD_OUT_RULE,
    TimingSettings,
    crossfit_item_rewards,
    evaluate_policy,
    load_timing_settings,
    record_evaluation,
)
from pushrl.ope.evaluate_timing import _seq_replicates, _timing_slots
from pushrl.ope.sequential import PerDecisionIS
from pushrl.policies.base import ItemContext, ItemPolicy, TimingContext, TimingPolicy
from pushrl.policies.registry import save_artifact

ROOT = Path(__file__).resolve().parents[2]
OBD = ROOT / "simulator_data" / "obd"
FREE = TimingSettings(Guardrails(0, 0, 0, 0))  # no guardrails


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, TrueWorld]:
    """600 users x 14 days, 40 items (~4.4k sent pushes, ~200k decision slots)."""
    d = tmp_path_factory.mktemp("eval_synth")
    synthesize(d, SynthConfig(users=600, days=14, seed=3, items=40))
    return load_dataset(d)[0], TrueWorld.load(d)


@pytest.fixture(scope="module")
def obd_random() -> Dataset:
    return load_dataset(OBD / "random", quarantine=False)[0]


def _item_value(world: TrueWorld, users: np.ndarray, raw: np.ndarray,
                items: np.ndarray) -> np.ndarray:
    """True E[clicked + 0.01 revenue] of pushing ``items`` (n, m) at the logged slots."""
    u = users[:, None]
    we = (raw[:, F["local_dow"]] >= 5).astype(np.int64)[:, None]
    hour = raw[:, F["local_hour"]].astype(np.int64)[:, None]
    logit = world.open_logit(u, we, hour, items, raw[:, F["sends_24h"], None],
                             raw[:, F["sends_7d"], None])
    return 1 / (1 + np.exp(-logit)) * world.expected_value_per_open(u, items, 1.0, 0.01)


class TruthTopK(ItemPolicy):
    """Uniform over each user's k best (or worst) items by the true value."""

    name = "truth-top-k"

    def __init__(self, world: TrueWorld, k: int = 10, worst: bool = False) -> None:
        n_users, n_items = len(world.users), len(world.items)
        raw = np.zeros((n_users, len(F)))
        raw[:, F["local_hour"]] = 12
        users = np.arange(n_users)
        score = _item_value(world, users, raw, np.broadcast_to(np.arange(n_items),
                                                                (n_users, n_items)))
        order = np.argsort(score if worst else -score, axis=1)[:, :k]
        self.top = np.zeros(score.shape)
        np.put_along_axis(self.top, order, 1.0 / k, axis=1)

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        u = ctx.extra["user_index"]
        return self.top[u[:, None], np.asarray(ctx.candidates)] * ctx.mask


def _se(est: object) -> float:
    return (est.upper - est.lower) / (2 * 1.96)  # type: ignore[attr-defined]


# --------------------------------------------------------------------- item policies
def test_item_gate_passes_a_better_policy_with_a_truthful_estimate(synth) -> None:
    ds, world = synth
    pol = TruthTopK(world)
    res = evaluate_policy(ds, pol, estimators=["ipw", "dr"], n_bootstrap=500, seed=0)
    assert res.passed and res.exit_code == 0 and res.gate.failed_rules == ()
    assert res.gate.comparison.lower > 0
    # ground truth of the same policy on the logged contexts (point-in-time features)
    sent = ds.pushes["sent"].to_numpy(bool)
    raw = replay(ds, FeatureSpec.fit(ds), with_affinity=False).features[sent]
    from pushrl.data.features import user_index

    users = user_index(ds, ds.pushes["user_id"])[sent]
    values = _item_value(world, users, raw, np.broadcast_to(np.arange(len(world.items)),
                                                            (users.size, len(world.items))))
    truth = float((values * pol.top[users]).sum(axis=1).mean())
    dr = res.estimates["dr"]
    assert abs(dr.value - truth) <= 3 * _se(dr), (dr, truth)


def test_item_gate_blocks_a_worse_policy(synth) -> None:
    ds, world = synth
    res = evaluate_policy(ds, TruthTopK(world, worst=True), estimators=["ipw", "dr"],
                          n_bootstrap=500)
    assert not res.passed and res.exit_code == 1
    assert res.gate.failed_rules == ("improvement_lower_bound",)
    assert res.gate.comparison.upper < 0
    d = json.loads(json.dumps(res.to_dict()))  # JSON-serialisable as is
    assert d["gate"]["failed_rules"] == ["improvement_lower_bound"]
    assert d["gate"]["messages"][0].startswith("95% lower bound of the improvement")


def test_obd_uniform_random_on_random_logs_is_the_logged_ctr(obd_random) -> None:
    res = evaluate_policy(obd_random, "uniform-random", n_bootstrap=500, out=None)
    ctr = float(obd_random.pushes["clicked"].astype(float).mean())
    ipw = res.estimates["ipw"]
    assert abs(ipw.value - ctr) <= 2 * _se(ipw)
    assert res.data["len_list"] == 3 and res.data["n_actions"] == 80
    assert res.diagnostics.ess == pytest.approx(res.diagnostics.n_rounds)  # weights are all 1
    assert set(res.estimates) == {"dm", "ipw", "snipw", "dr", "sndr", "switch-dr", "dr-os",
                                  "dr-cf"}


def test_obd_uniform_random_off_policy_on_bts_logs_matches_random_logs(obd_random) -> None:
    """IPW of uniform-random on Thompson-sampling logs vs its on-policy CTR (other sample)."""
    bts = load_dataset(OBD / "bts", quarantine=False)[0]
    res = evaluate_policy(bts, "uniform-random", estimators=["ipw"], n_bootstrap=500)
    clicks = obd_random.pushes["clicked"].astype(float)
    ctr, se_ctr = float(clicks.mean()), float(clicks.std() / np.sqrt(len(clicks)))
    ipw = res.estimates["ipw"]
    assert abs(ipw.value - ctr) <= 2 * np.hypot(_se(ipw), se_ctr)


def test_a_candidate_fitted_on_the_evaluated_logs_is_blocked(synth) -> None:
    ds, _ = synth
    res = evaluate_policy(ds, "most-popular", estimators=["ipw"], n_bootstrap=50)
    assert not res.passed and res.gate.failed_rules[-1] == HELD_OUT_RULE
    assert "trained on the evaluated logs" in res.gate.messages[-1]
    waived = evaluate_policy(ds, "most-popular", estimators=["ipw"], n_bootstrap=50,
                             allow_in_sample=True)
    assert HELD_OUT_RULE not in waived.gate.failed_rules
    assert any("in-sample" in n for n in waived.notes)


def test_item_and_timing_policies_cannot_be_compared(obd_random) -> None:
    with pytest.raises(DataError, match="compare policies of one kind"):
        evaluate_policy(obd_random, "uniform-random", "never-send", n_bootstrap=10)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"estimators": ["dr", "magic"]}, ValueError, "unknown magic"),
    ({"estimators": ["pdis", "wdr"]}, DataError, "none of pdis, wdr applies"),
    ({"policy": "no-such-baseline"}, ArtifactError, "neither a policy artifact"),
    ({"policy": "policies/does-not-exist"}, ArtifactError, "no policy artifact"),
    ({"gate_estimator": "wdr"}, ValueError, "not usable for item policies"),
])
def test_bad_requests_raise(obd_random, kwargs: dict, error: type, match: str) -> None:
    kw = {"policy": "uniform-random", "n_bootstrap": 10, **kwargs}
    with pytest.raises(error, match=match):
        evaluate_policy(obd_random, kw.pop("policy"), **kw)


def test_inapplicable_estimators_are_skipped_with_a_reason() -> None:
    applicable = {"ipw": None, "dr-cf": "needs the same candidate set"}
    run, skipped = _select(["ipw", "pdis", "dr-cf"], "item", applicable)
    assert run == ["ipw"]
    assert skipped == {"pdis": "not an estimator for item policies",
                       "dr-cf": "needs the same candidate set"}
    assert _select(None, "item", applicable) == (["ipw"], {"dr-cf": "needs the same candidate set"})


def test_crossfit_item_rewards_is_out_of_fold_and_matches_the_linear_model() -> None:
    rng = np.random.default_rng(0)
    n, k, ds_, dc = 300, 5, 3, 2
    ctx = ItemContext(rng.normal(size=(n, ds_)), np.tile(np.arange(k), (n, 1)),
                      np.ones((n, k), bool), rng.normal(size=(n, k, dc)))
    action = rng.integers(0, k, n)
    reward = (rng.random(n) < 0.3).astype(float)
    q = crossfit_item_rewards(ctx, action, reward, None, 1, n_folds=3, seed=0)
    assert q.shape == (n, k, 1) and ((q > 0) & (q < 1)).all()
    flipped = reward.copy()
    flipped[0] = 1 - flipped[0]
    q2 = crossfit_item_rewards(ctx, action, flipped, None, 1, n_folds=3, seed=0)
    np.testing.assert_array_equal(q2[0], q[0])  # a round never trains its own prediction
    assert not np.allclose(q2, q)
    # one fold = in-sample: the assembled scores equal sklearn's on explicit feature rows
    q1 = crossfit_item_rewards(ctx, action, reward, None, 1, n_folds=1, seed=0)
    x = np.column_stack([ctx.shared[:, None].repeat(k, 1).reshape(n * k, ds_),
                         ctx.candidate_features.reshape(n * k, dc), np.tile(np.eye(k), (n, 1)),
                         np.ones(n * k)])
    logged = x.reshape(n, k, -1)[np.arange(n), action]
    mu, sd = logged.mean(0), np.where(logged.std(0) > 0, logged.std(0), 1.0)
    m = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit((logged - mu) / sd, reward)
    np.testing.assert_allclose(q1[:, :, 0].ravel(), m.predict_proba((x - mu) / sd)[:, 1],
                               rtol=1e-6, atol=1e-9)


def test_record_evaluation_is_what_promotion_reads(tmp_path: Path, obd_random) -> None:
    art = save_artifact(tmp_path / "policies" / "unif", kind="item", loader="baseline",
                        files={"params.json": b"{}"}, card={"baseline": "uniform-random"})
    res = evaluate_policy(obd_random, str(tmp_path / "policies" / "unif"),
                          estimators=["ipw"], n_bootstrap=20)
    assert res.policy["source"] == "artifact" and res.policy["artifact"] == str(art)
    record_evaluation(art, res)
    card = json.loads((art / "card.json").read_text())
    from pushrl.serve.registry_ops import run_gate

    assert run_gate(card) == {"passed": False, "failed_rules": ["improvement_lower_bound"],
                              "messages": list(res.gate.messages)}
    (art / "params.json").write_bytes(b'{"tampered": 1}')
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        evaluate_policy(obd_random, str(art), n_bootstrap=10)


# --------------------------------------------------------------------- timing policies
class LoggingClone(TimingPolicy):
    """Sends with the logged send probability: its importance weights are exactly 1."""

    name = "logging-clone"

    def __init__(self, ds: Dataset) -> None:
        self.p = ds.pushes["pscore_send"].to_numpy(float)

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        p = self.p[ctx.extra["row"]]
        return np.stack([1 - p, p], axis=1)


class ActiveHours(TimingPolicy):
    """Shifts the logger's sends toward (``toward=True``) or away from the user's true
    active hours (relative activity > 1.5): twice / half the logged send probability."""

    name = "active-hours"

    def __init__(self, world: TrueWorld, toward: bool = True) -> None:
        self.world, self.toward = world, toward

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        u = ctx.extra["user_index"]
        hour = ctx.features[:, F["local_hour"]].astype(np.int64)
        we = (ctx.features[:, F["local_dow"]] >= 5).astype(np.int64)
        active = self.world.rel_activity[u, we, hour] > 1.5
        p0 = self.world.p_send[u]
        p = np.where(active == self.toward, np.minimum(1.0, 2 * p0), 0.5 * p0)
        return np.stack([1 - p, p], axis=1)


def test_timing_logging_clone_reproduces_the_on_policy_value(synth) -> None:
    ds, _ = synth
    res = evaluate_policy(ds, LoggingClone(ds), scenario=FREE, estimators=["pdis", "wpdis"],
                          n_bootstrap=200)
    on_policy = res.baseline_estimates["on-policy"].value
    assert res.estimates["pdis"].value == pytest.approx(on_policy, rel=1e-12)
    assert res.estimates["wpdis"].value == pytest.approx(on_policy, rel=1e-12)
    assert res.diagnostics.ess == pytest.approx(res.data["n_traj"])
    assert not res.passed and res.gate.failed_rules == ("improvement_lower_bound",)
    assert res.gate_estimator == "wpdis"


def test_timing_gate_passes_active_hours_and_blocks_inactive_hours(synth) -> None:
    ds, world = synth
    better = evaluate_policy(ds, ActiveHours(world), scenario=FREE, n_bootstrap=500)
    worse = evaluate_policy(ds, ActiveHours(world, toward=False), scenario=FREE,
                            n_bootstrap=500)
    assert better.gate_estimator == "wdr" and set(better.estimates) == {"pdis", "wpdis", "wdr",
                                                                        "fqe"}
    assert better.passed, better.gate.messages
    assert not worse.passed and "improvement_lower_bound" in worse.gate.failed_rules
    assert better.segment == "day" and better.data["horizon"] <= 25
    # a day's weights are tame; the whole 14-day horizon's are not, and the notes say so
    assert better.sequential["segment"].reliable
    assert not better.sequential["full_horizon"].reliable
    assert any(n.startswith("full horizon (336 slots") for n in better.notes)
    assert any("per-day segmentation" in n for n in better.notes)


def test_timing_estimate_of_fixed_hour_agrees_with_the_ground_truth(synth) -> None:
    """fixed-hour pushes once a day at 19:00 local; its true value per user-day follows from
    the world's open/click/conversion/unsubscribe model at the logged 19:00 slots, with the
    day's earlier logged sends removed (each day starts from the logger's state)."""
    ds, world = synth
    res = evaluate_policy(ds, "fixed-hour", estimators=["pdis", "wdr"], n_bootstrap=500)
    s = load_timing_settings("default")
    slots = _timing_slots(ds, [], s, FeatureSpec.fit(ds), None)
    raw = replay(ds, FeatureSpec.fit(ds), with_affinity=False).features
    rows = np.flatnonzero(raw[:, F["local_hour"]] == 19)
    today = slots.state[rows, 11]
    s24, s7 = raw[rows, F["sends_24h"]] - today, raw[rows, F["sends_7d"]] - today
    u, items = slots.user[rows][:, None], np.arange(len(world.items))[None, :]
    we = (raw[rows, F["local_dow"]] >= 5).astype(np.int64)[:, None]
    p_open = 1 / (1 + np.exp(-world.open_logit(u, we, 19, items, s24[:, None], s7[:, None])))
    pc, pv = world.p_click(u, items), world.p_convert(items)
    value = (p_open * (s.reward.open + s.reward.click * pc
                        + s.reward.revenue * pc * pv * world.price[items])).mean(1)
    value -= s.reward.send_cost + s.reward.unsubscribe_penalty * world.unsub_hazard(
        slots.user[rows], s7)
    cap = s.guardrails.max_sends_per_week
    allowed = s7 < cap if cap else np.ones(rows.size, bool)
    truth = float((value * allowed).sum() / res.data["n_traj"])
    for name in ("pdis", "wdr"):
        est = res.estimates[name]
        assert abs(est.value - truth) <= 3 * _se(est), (name, est, truth)


def test_timing_whole_user_trajectories_are_flagged_unreliable(synth, tmp_path: Path) -> None:
    ds, world = synth
    res = evaluate_policy(ds, ActiveHours(world), scenario=FREE, segment="none",
                          estimators=["pdis", "wpdis"], n_bootstrap=200, out=tmp_path)
    assert res.data["n_traj"] == 600 and res.data["horizon"] == 336
    assert not res.sequential["segment"].reliable
    assert any("unreliable" in n for n in res.notes)
    assert "unreliable" in Path(res.report["markdown"]).read_text()


def test_timing_baseline_policy_and_guardrails(synth) -> None:
    ds, _ = synth
    res = evaluate_policy(ds, "never_send", "random-volume", estimators=["pdis"],
                          n_bootstrap=100)
    assert res.estimates["pdis"].value == 0.0  # never sends: no reward, no cost
    assert res.baseline_estimates["pdis"].value > 0
    assert not res.passed and res.baseline_diagnostics is not None


def test_cluster_bootstrap_with_one_trajectory_per_user_is_the_trajectory_bootstrap() -> None:
    rng = np.random.default_rng(1)
    reward, ps = rng.random((50, 6)), rng.uniform(0.2, 0.9, (50, 6))
    pe = rng.uniform(0.1, 1.0, (50, 6))
    terms = PerDecisionIS().terms(reward, ps, pe)
    reps = _seq_replicates({"pdis": terms}, np.arange(50), 300, 7)["pdis"]
    np.testing.assert_allclose(reps, terms.replicates(300, 7))
    # two trajectories per user: resampling users, the point estimate is unchanged
    clustered = _seq_replicates({"pdis": terms}, np.arange(50) // 2, 2000, 7)["pdis"]
    assert abs(clustered.mean() - terms.value()) < 4 * clustered.std() / np.sqrt(2000)


@pytest.mark.parametrize(("hour", "today", "week", "expected"), [
    (21, 0, 0, True), (22, 0, 0, False), (3, 0, 0, False), (8, 0, 0, True), (12, 2, 0, False),
    (12, 1, 0, True),
])
def test_default_guardrails(hour: int, today: int, week: int, expected: bool) -> None:
    s = load_timing_settings("default")
    got = s.allowed(np.array([hour]), np.array([today]), np.array([week]))
    assert bool(got[0]) is expected


def test_unknown_scenario_is_a_user_error() -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'mars'"):
        load_timing_settings("mars")
