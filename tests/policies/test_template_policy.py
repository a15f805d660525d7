"""The template slot: recency feature (point-in-time), synthetic template truth, rounds from
logs, the VW template policy (learning, new-arm exploration, registry round trip) and its OPE
and gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.features import TemplateRecency, template_recency_replay
from pushrl.data.io import write_dataset
from pushrl.data.synth import TrueWorld, generate, world_spec
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import TEMPLATE_KNOBS, world_config
from pushrl.errors import DataError
from pushrl.policies.registry import load_policy
from pushrl.policies.template_policy import (
    TEMPLATE_TRAIN_REWARD,
    FixedTemplate,
    TemplatePolicy,
    UniformTemplate,
    template_rounds,
    train_template_policy,
)
from pushrl.policies.vw import VWConfig
from pushrl.rules.reward import RewardWeights

IDS = TEMPLATE_KNOBS["template_ids"]


def test_recency_is_point_in_time_and_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    n, users, arms = 400, 7, 3
    u = rng.integers(0, users, n)
    b = np.sort(rng.integers(0, 200, n))
    t = rng.integers(-1, arms, n)
    got = template_recency_replay(u, b, t, users, arms)
    for i in range(n):
        for a in range(arms):
            prev = b[(u == u[i]) & (t == a) & (b < b[i])]
            want = min(b[i] - prev.max(), 336) if prev.size else 336
            assert got[i, a] == want
    # online: a show in the current bucket is invisible until the next one
    r = TemplateRecency(2, 2)
    r.record(np.array([0]), 10, np.array([1]))
    assert r.hours(np.array([0]), 10).tolist() == [[336, 336]]
    assert r.hours(np.array([0, 1]), 13).tolist() == [[336, 3], [336, 336]]
    r.record(np.array([0, 0]), 13, np.array([1, 1]))  # a repeat in one call applies in order
    assert r.hours(np.array([0]), 13).tolist() == [[336, 3]]


def test_default_world_has_no_template_columns() -> None:
    ds, gt, _ = generate(world_config("default", users=30, days=2, seed=0))
    assert "template_id" not in ds.pushes and "name" not in ds.items
    assert not any(k.startswith("template") for k in gt["params"])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tmpl") / "w"
    ds, gt, gtu = generate(world_config("default", users=1500, days=21, seed=5, templates=True))
    write_dataset(ds, d)
    gtu.to_parquet(d / "ground_truth_users.parquet")
    return d


def test_templated_world_logs_uniform_templates_with_their_effects(logs: Path) -> None:
    ds, rep = load_dataset(logs, quarantine=False)
    p = ds.pushes[ds.pushes["sent"]]
    assert p["template_id"].notna().all() and set(p["template_id"].astype(str)) == set(IDS)
    assert np.allclose(p["pscore_template"], 0.25)
    assert ds.pushes.loc[~ds.pushes["sent"], "pscore_template"].isna().all()
    # urgent copy opens more for light users than personal copy, and the other way round
    gtu = pd.read_parquet(logs / "ground_truth_users.parquet")
    heavy = (gtu["sessions_per_day"] > 1.6).to_numpy()[p["user_id"].cat.codes]
    op = p["opened"].astype(bool).to_numpy()
    t = p["template_id"].astype(str).to_numpy()
    for seg, better, worse in ((~heavy, "rec_urgent_en", "rec_personal_en"),
                               (heavy, "rec_personal_en", "rec_urgent_en")):
        a, b = op[seg & (t == better)], op[seg & (t == worse)]
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert a.mean() - b.mean() > 2 * se  # truth: +0.6/+0.65 logit


def test_truth_template_logit() -> None:
    cfg = world_config("default", users=4, days=1, seed=0, templates=True)
    _, _, gtu = generate(cfg)
    items = pd.DataFrame({"item_id": ["a", "b"], "category": ["shoes", "bags"],
                          "price": [10.0, 20.0], "quality": [0.0, 0.0],
                          "discount_pct": [40.0, 0.0]})
    w = TrueWorld(cfg.params, gtu, items)
    u = np.array([0, 0])
    # deal copy: +0.4 on a 40 % discount, -0.4 without; fatigue 0.4 * exp(-h / 48)
    got = w.template_logit(u, np.array([0, 1]), np.array([3, 3]), np.array([336.0, 0.0]))
    assert got[0] == pytest.approx(0.4 - 0.4 * np.exp(-7), abs=1e-12)
    assert got[1] == pytest.approx(-0.4 - 0.4, abs=1e-12)


def test_rounds_policy_save_load_and_ope(logs: Path, tmp_path: Path) -> None:
    ds, _ = load_dataset(logs, quarantine=False)
    r = template_rounds(ds, IDS, spec=world_spec())
    assert r.n_rounds == int(ds.pushes["sent"].sum())
    assert r.context.candidates.shape == (r.n_rounds, 4)
    assert "tmpl_seen_24h" in r.context.candidate_feature_names
    pol = train_template_policy(r, VWConfig(learning_rate=0.02))
    assert pol.shows.sum() == r.n_rounds
    d = pol.action_dist(r.context)
    assert np.allclose(d.sum(1), 1.0)
    # the learned policy puts more mass on deal copy for discounted items
    items = r.arms.catalog.indices(ds.pushes["item_id"].astype(str).to_numpy()[r.row])
    disc = ds.items["discount_pct"].to_numpy()[items]
    deal = IDS.index("rec_deal_en")
    assert d[disc >= 30, deal].mean() > d[disc < 30, deal].mean() + 0.1
    art = pol.save(tmp_path / "vw-template")
    back = load_policy(art)
    assert isinstance(back, TemplatePolicy) and back.arm_ids == IDS
    assert np.allclose(back.action_dist(r.context), d, atol=1e-6)

    from pushrl.ope.evaluate_template import evaluate_template_policy

    res = evaluate_template_policy(r, UniformTemplate(), n_bootstrap=200)
    ipw = res["estimates"]["ipw"]
    # uniform == the logger: IPW is the on-policy mean exactly
    assert ipw["value"] == pytest.approx(res["on_policy"], rel=1e-9)
    res = evaluate_template_policy(r, FixedTemplate(arm=0), UniformTemplate(), n_bootstrap=200)
    assert res["gate"]["comparison"] is not None and "passed" in res["gate"]


def test_new_arm_gets_explored() -> None:
    rng = np.random.default_rng(0)
    from pushrl.data.features import FeatureSpec, ItemCatalog
    from pushrl.policies.template_policy import TemplateArms, new_template_policy

    spec = world_spec()
    items = pd.DataFrame({"item_id": ["a"], "category": ["shoes"], "price": [1.0]})
    arms = TemplateArms(("old1", "old2", "new"), spec, ItemCatalog(items, spec))
    ctx = arms.context(rng.random((5, 9)).astype(np.float32), np.zeros(5, np.int64),
                       np.full((5, 3), 336.0))
    pol = new_template_policy(arms, ctx, new_explore=0.2, new_min_shows=10)
    pol.shows = np.array([50, 50, 0])
    base = pol.vw.action_dist(ctx)
    got = pol.action_dist(ctx)
    assert np.allclose(got[:, 2], 0.8 * base[:, 2] + 0.2)
    pol.shows = np.array([50, 50, 10])
    assert np.allclose(pol.action_dist(ctx), base)
    assert isinstance(FeatureSpec, type)


def test_rounds_need_template_columns(tmp_path: Path) -> None:
    ds, _, _ = generate(world_config("default", users=20, days=2, seed=0))
    with pytest.raises(DataError, match="no `template_id` column"):
        template_rounds(ds, IDS)
    ds2, _, _ = generate(world_config("default", users=20, days=2, seed=0, templates=True))
    with pytest.raises(DataError, match="no sent row shows one of the arms"):
        template_rounds(ds2, ("other",))


def test_cli_train_and_evaluate(tmp_path: Path) -> None:
    from tests.cli_runner import run_pushrl

    for name, seed in (("train", 1), ("heldout", 2)):
        ds, _, _ = generate(world_config("default", users=200, days=7, seed=seed,
                                         templates=True))
        write_dataset(ds, tmp_path / name)
    r = run_pushrl("templates", "train", str(tmp_path / "train"), "--trigger", "recommendation",
                   "--out", str(tmp_path / "pol"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["arms"] == list(IDS)
    # the template slot learns from the open by default (TEMPLATE_TRAIN_REWARD)
    card = json.loads((tmp_path / "pol" / "v1" / "card.json").read_text())
    assert card["reward"] == RewardWeights.parse(TEMPLATE_TRAIN_REWARD).item_formula()
    r = run_pushrl("templates", "evaluate", str(tmp_path / "pol"), "--data",
                   str(tmp_path / "heldout"), "--baseline", "uniform", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert set(res["estimates"]) == {"ipw", "snipw", "dr", "sndr"} and "passed" in res["gate"]
    plain, _, _ = generate(world_config("default", users=50, days=3, seed=0))
    write_dataset(plain, tmp_path / "plain")
    for args, msg in ((["templates", "train", str(tmp_path / "plain")], "show none of"),
                      (["templates", "evaluate", str(tmp_path / "pol"), "--data",
                        str(tmp_path / "heldout"), "--baseline", "best"], "--baseline must")):
        r = run_pushrl(*args, cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize(("value", "reason"), [
    (1.5, "pscore_template outside (0, 1]"), (0.0, "pscore_template outside (0, 1]"),
    (np.nan, "pscore_template missing on a sent row with a template_id")])
def test_bad_pscore_template_rows_are_quarantined(tmp_path: Path, value: float,
                                                  reason: str) -> None:
    ds, _, _ = generate(world_config("default", users=40, days=3, seed=0, templates=True))
    p = ds.pushes.copy()
    rows = np.flatnonzero(p["sent"].to_numpy(bool))[:2]
    p.loc[rows, "pscore_template"] = value
    ds.pushes = p
    write_dataset(ds, tmp_path / "d")
    _, report = load_dataset(tmp_path / "d")
    assert report.counts["pushes"].reasons == {reason: 2}


def test_template_context_in_the_world_equals_replay_of_its_log(tmp_path: Path) -> None:
    """Parity: what a template policy sees inside the synthetic world (online FeatureState +
    TemplateRecency) is what training and OPE rebuild from the written log."""
    from pushrl.data.features import ItemCatalog
    from pushrl.policies.template_policy import TemplateArms

    cfg = world_config("default", users=150, days=5, seed=2, templates=True)
    items = generate(world_config("default", users=1, days=1, seed=2, templates=True))[0].items
    spec = world_spec()
    arms = TemplateArms(IDS, spec, ItemCatalog(items, spec))
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    pol, rng = UniformTemplate(), np.random.default_rng(0)

    def choose(state, users, bucket, its, hours):  # type: ignore[no-untyped-def]
        ctx = arms.context(state.features(users, bucket), its, hours)
        seen.append((ctx.shared, ctx.candidate_features))
        d = pol.decide_batch(ctx, rng)
        return d.action, d.pscore

    ds, _, _ = generate(cfg, items=items, template_chooser=choose)
    write_dataset(ds, tmp_path / "w")
    back, _ = load_dataset(tmp_path / "w", quarantine=False)
    r = template_rounds(back, IDS, spec=spec)
    shared = np.concatenate([s for s, _ in seen])
    cand = np.concatenate([c for _, c in seen])
    assert r.n_rounds == shared.shape[0] > 100
    np.testing.assert_allclose(r.context.shared, shared, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(r.context.candidate_features, cand)
