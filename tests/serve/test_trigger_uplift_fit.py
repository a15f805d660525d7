"""`pushrl uplift fit --trigger-kinds`: per-kind uplift from a server's per-kind holdouts,
round trip through the real app: server events -> `pushrl logs export` -> `pushrl uplift fit
--data EXPORT --trigger-kinds` -> per-kind estimates whose 95 % intervals cover the closed-loop
world's truth (:mod:`pushrl.compare.trigger_uplift_world`, seed 0, 600 users: tolerance = the
interval; the world's U is known exactly), the logged holdout probabilities as propensities,
the same result from --state, and each kind's T-learner ranks the users the truth ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pushrl.compare import trigger_uplift_world as W
from pushrl.data.validate import load_dataset
from pushrl.policies.delay_data import delay_rounds
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import parse_trigger_holdouts
from pushrl.rules.triggers import TriggerConfig, TriggerKind
from pushrl.serve.app import create_app
from pushrl.train.trigger_uplift import TriggerUplift, fit_trigger_uplift, kind_estimate
from tests.cli_runner import run_pushrl
from tests.serve.conftest import doubles, make_cfg

N, SEED = 600, 0
SHARES = {"cart": 0.3, "browse": 0.5}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trigup")
    holdouts = parse_trigger_holdouts([f"{k}={v}" for k, v in SHARES.items()], "w")
    cfg = make_cfg(tmp, sync="normal", triggers=TriggerConfig.parse(W.RULES),
                   guardrails=Guardrails(0, 0, 0, 0), trigger_holdouts=holdouts)
    c = TestClient(create_app(cfg, overrides=doubles()))
    c.__enter__()
    try:
        run = W.run_world(c, N, SEED)
    finally:
        c.__exit__(None, None, None)
    assert run.sends["cart"] > 0 and run.sends["browse"] > 0
    (tmp / "converted.json").write_text(json.dumps(run.converted))
    run.outcomes.to_parquet(tmp / "outcomes.parquet")
    (tmp / "rules.toml").write_text(W.RULES_TOML)
    r = run_pushrl("logs", "export", "--state", tmp / "state", "--out", tmp / "export")
    assert r.returncode == 0, r.stderr
    return tmp


def test_per_kind_estimates_cover_the_worlds_truth(served: Path) -> None:
    out = served / "kinds.json"
    r = run_pushrl("uplift", "fit", "--trigger-kinds", "--data", served / "export",
                   "--triggers", served / "rules.toml", "--horizon-h", W.HORIZON_H,
                   "--out", out, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    res = TriggerUplift.load(out)
    assert doc["kinds"].keys() == res.kinds.keys() == {"cart", "browse"}
    truth = W.truth(N)
    for kind, k in res.kinds.items():
        # every user has EPISODES triggers of each kind, all complete; the arms are the
        # kind's own hashed share, its logged probability the propensity
        assert k.triggers == W.EPISODES * N and k.censored == 0
        assert k.users == N and k.p_holdout == (SHARES[kind], SHARES[kind])
        assert 0.2 < k.held_out / k.triggers / SHARES[kind] < 1.6
        assert k.lower <= truth[kind] <= k.upper, (kind, k, truth[kind])
        assert abs(k.incremental - truth[kind]) < 3 * k.se
        assert k.sends_per_treated == 1.0  # open guardrails: every treated trigger is sent
        assert k.model is not None
    # every push conversion of the loop is in the export, on its trigger's push
    ds, _ = load_dataset(served / "export")
    conv = ds.pushes.merge(ds.triggers[["trigger_id", "kind"]], on="trigger_id")
    got = conv[conv["converted"].fillna(False).astype(bool)].groupby("kind").size().to_dict()
    assert got == json.loads((served / "converted.json").read_text())
    # the cart push helps more than the browse push, and the intervals say so
    assert res.kinds["cart"].lower > res.kinds["browse"].incremental
    # the state path exports the same log: the same numbers
    r2 = run_pushrl("uplift", "fit", "--trigger-kinds", "--state", served / "state",
                    "--triggers", served / "rules.toml", "--horizon-h", W.HORIZON_H,
                    "--out", served / "kinds2.json", "--json")
    assert r2.returncode == 0, r2.stderr
    doc2 = json.loads(r2.stdout)
    assert doc2["meta"]["fingerprint"] == doc["meta"]["fingerprint"]
    for d in (doc, doc2):  # the models' provenance names the source; the rest is equal
        for k in d["kinds"].values():
            k["model"]["meta"] = {m: v for m, v in k["model"]["meta"].items()
                                  if m not in ("data", "state")}
    assert doc2["kinds"] == doc["kinds"]
    # the human summary: one row per kind with its interval
    r3 = run_pushrl("uplift", "fit", "--trigger-kinds", "--data", served / "export",
                    "--triggers", served / "rules.toml", "--horizon-h", W.HORIZON_H,
                    "--out", served / "kinds3.json")
    assert r3.returncode == 0, r3.stderr
    k = res.kinds["cart"]
    assert "cart" in r3.stdout and "browse" in r3.stdout and "Traceback" not in r3.stderr
    assert f"[{k.lower:+.4f}, {k.upper:+.4f}]" in r3.stdout


def test_the_log_path_adds_no_error_to_the_worlds_own_comparison(served: Path) -> None:
    """The world knows every trigger's arm (the kind's hash) and outcome (``y1`` if its push
    was sent, else ``y0``): each exported trigger round carries exactly those (no row
    missing, no arm or outcome mislabelled, no treated trigger left unsent, no leak), so the
    fit's estimate is the world's own difference of the arms to float precision; whatever
    error it has against the truth is the randomisation's and the world's coins'
    (``benchmarks/trigger_uplift_diag.py`` splits it over seeds)."""
    ds, _ = load_dataset(served / "export")
    rounds = delay_rounds(ds, TriggerConfig.parse(W.RULES), Guardrails(),
                          horizon_h=W.HORIZON_H, keep_held_out=True, due=False)
    assert rounds.held_out is not None
    log = pd.DataFrame({"kind": rounds.kind, "user_id": rounds.user_id,
                        "episode": ds.triggers["item_id"].astype(str).str[1:].astype(int)
                        .to_numpy() // 2, "log_held": rounds.held_out,
                        "log_sent": rounds.sent, "log_y": rounds.converted})
    w = pd.read_parquet(served / "outcomes.parquet")
    assert len(w) == len(log) == 2 * W.EPISODES * N
    m = w.merge(log, on=["kind", "user_id", "episode"], how="inner", validate="1:1")
    assert len(m) == len(w)
    holdouts = parse_trigger_holdouts([f"{k}={v}" for k, v in SHARES.items()], "w")
    fit = fit_trigger_uplift(rounds, ds.triggers["p_holdout"].to_numpy(float),
                             horizon_h=W.HORIZON_H)
    for kind in SHARES:
        k = m[m["kind"] == kind]
        held = holdouts[TriggerKind(kind)].held_out(k["user_id"].to_numpy())
        assert (k["log_held"].to_numpy(bool) == held).all()
        assert (k["sent"].to_numpy(bool) == ~held).all()  # no cancel/supersede, no leak
        assert (k["log_sent"].to_numpy(bool) == k["sent"].to_numpy(bool)).all()
        y_obs = np.where(k["sent"], k["y1"], k["y0"])
        assert (k["log_y"].to_numpy(bool) == y_obs).all()
        oracle = k["y1"].to_numpy(float)[~held].mean() - k["y0"].to_numpy(float)[held].mean()
        assert fit.kinds[kind].incremental == pytest.approx(oracle, abs=1e-12)


def test_the_kind_models_rank_users_as_the_truth_does(served: Path) -> None:
    """The world's push helps quiet users more (U inactive > U active for both kinds); the
    T-learner on the pipeline features (activity_7d tells the groups apart) predicts more
    incremental conversions per send for them."""
    ds, _ = load_dataset(served / "export")
    rounds = delay_rounds(ds, TriggerConfig.parse(W.RULES), Guardrails(),
                          horizon_h=W.HORIZON_H, keep_held_out=True, due=False)
    res = fit_trigger_uplift(rounds, ds.triggers["p_holdout"].to_numpy(float),
                             horizon_h=W.HORIZON_H)
    act = W.active(N)[[int(u[1:]) for u in rounds.user_id]]
    assert rounds.raw is not None
    for kind, k in res.kinds.items():
        assert k.model is not None
        sel = rounds.kind == kind
        pred = k.model.predict(rounds.raw[sel])
        assert pred[~act[sel]].mean() > pred[act[sel]].mean(), kind


def test_the_ipw_estimate_weights_by_the_logged_probabilities() -> None:
    """With a share that changed (two halves of a log at p_holdout 0.2 and 0.6), the Hajek
    weights 1/p reweight each arm to the population; the plain difference of means does
    not. Exact arithmetic on a hand-made table; the interval clusters by user."""
    # half A (p=0.2): treated y=1 (4 rows), held y=0 (1 row); half B (p=0.6): treated y=0
    # (2 rows), held y=0 (3 rows): treated weights 1/0.8 and 1/0.4, so the weighted rate is
    # 4 * 1.25 / (4 * 1.25 + 2 * 2.5) = 0.5 where the plain mean is 4/6
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], float)
    t = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], bool)
    p = np.array([0.2] * 5 + [0.6] * 5)
    users = np.array(["a", "a", "b", "b", "c", "d", "d", "e", "f", "f"])
    m1, m0, d, se, z = kind_estimate(y, t, p, users)
    w1 = np.where(t, 1 / (1 - p), 0)
    assert m1 == pytest.approx((w1 * y).sum() / w1.sum()) and m1 == pytest.approx(5 / 10)
    assert m1 != pytest.approx(y[t].mean())
    assert m0 == 0.0 and d == pytest.approx(m1) and z == pytest.approx(1.959964, abs=1e-6)
    e = pd.Series(w1 * (y - m1) / w1.sum()).groupby(users).sum()
    assert se == pytest.approx(np.sqrt(len(e) / (len(e) - 1) * (e ** 2).sum()))


def test_logs_without_arms_are_one_line(served: Path, tmp_path: Path) -> None:
    from pushrl.data.io import write_dataset

    ds, _ = load_dataset(served / "export")
    ds.triggers = ds.triggers.drop(columns=["holdout", "p_holdout"])
    write_dataset(ds, tmp_path / "noarms")
    r = run_pushrl("uplift", "fit", "--trigger-kinds", "--data", tmp_path / "noarms",
                   "--out", tmp_path / "x.json")
    assert r.returncode == 2 and "no `holdout`/`p_holdout` columns" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.json").exists()
    r = run_pushrl("uplift", "fit", "--data", served / "export", "--out", tmp_path / "y.json")
    assert r.returncode == 2 and "go with --trigger-kinds" in r.stderr, r.stderr
