"""Propensities made explicit (issue #13 item 2): the item level is pscore / pscore_send, from
one function; a log without pscore_send is refused by every item-side stage unless the
logger's send probability is declared."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.contract import SEND_PSCORE_KEY, declared_send_pscore, item_pscore
from pushrl.data.io import Dataset, empty_activity, read_raw, write_dataset, write_table
from pushrl.data.validate import load_dataset
from pushrl.errors import DataError
from pushrl.ope.estimators import InverseProbabilityWeighting
from pushrl.policies.item_data import build_rounds
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[2]


def _p(pscore: list[float], send: list[float] | None) -> pd.DataFrame:
    d: dict[str, list[float]] = {"pscore": pscore}
    if send is not None:
        d["pscore_send"] = send
    return pd.DataFrame(d)


def test_item_pscore_divides_the_send_probability_out() -> None:
    np.testing.assert_allclose(item_pscore(_p([0.01, 0.004], [0.04, 0.02])), [0.25, 0.2])
    # a declared constant send probability stands in for the missing column
    np.testing.assert_allclose(item_pscore(_p([0.1, 0.2], None), send_pscore=0.5), [0.2, 0.4])
    np.testing.assert_allclose(item_pscore(_p([0.0125], None), send_pscore=1.0), [0.0125])


@pytest.mark.parametrize(("frame", "send", "pattern"), [
    (_p([0.01, 0.02], None), None, r"no `pscore_send` .* item-level OPE and bandit training"),
    (_p([0.01, 0.02], [np.nan, np.nan]), None, r"no `pscore_send`"),
    (_p([0.01, 0.02], [0.04, np.nan]), None, r"`pscore_send` is missing in 1 of 2 sent rows"),
    (_p([0.01, 0.02], [0.04, 2.0]), None, r"`pscore_send` must be in \(0, 1\], got 2"),
    (_p([0.01, 0.02], [0.04, 0.0]), None, r"`pscore_send` must be in \(0, 1\], got 0"),
    (_p([0.01, 0.02], [0.04, 0.01]), None, r"item-level `pscore` .* max=2"),
    (_p([0.01, np.nan], [0.04, 0.04]), None, r"`pscore` is missing in 1 of 2"),
    (pd.DataFrame({"pscore_send": [0.5]}), None, r"no `pscore`"),
    (_p([0.01], None), 0.001, r"item-level `pscore`"),
])
def test_item_pscore_refuses(frame: pd.DataFrame, send: float | None, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        item_pscore(frame, send_pscore=send)


@pytest.mark.parametrize("value", [0, -1, 1.5, "often", float("nan")])
def test_bad_declaration_is_refused(value: object) -> None:
    with pytest.raises(DataError, match=r"meta.json `send_pscore` must be a number in \(0, 1\]"):
        declared_send_pscore({SEND_PSCORE_KEY: value})
    assert declared_send_pscore({}) is None


def test_shipped_obd_declares_its_deterministic_send() -> None:
    ds, report = load_dataset(ROOT / "simulator_data" / "obd" / "random", quarantine=False)
    assert ds.meta[SEND_PSCORE_KEY] == 1.0
    assert report.summary["propensities"]["supports"]["bandit training"]
    np.testing.assert_allclose(build_rounds(ds).pscore, ds.pushes["pscore"].to_numpy(float))


# --- a uniform-item log with a known truth ------------------------------------------------
THETA = np.array([0.05, 0.1, 0.2, 0.3, 0.4])  # click probability of each item
Q_SEND = (0.2, 0.5)  # per-user send probability


def _uniform_item_log(d: Path, seed: int = 3, users: int = 300, days: int = 14) -> Path:
    """Every 6 h each user is sent a push with probability 0.2 or 0.5, the item uniform
    over 5 items, clicked with probability THETA[item]; pscore is the joint probability."""
    rng = np.random.default_rng(seed)
    k = THETA.size
    uid = np.repeat(np.arange(users), days * 4)
    ts = pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(
        np.tile(np.arange(days * 4) * 6, users), unit="h")
    q = np.asarray(Q_SEND)[uid % 2]
    sent = rng.random(uid.size) < q
    item = rng.integers(0, k, uid.size)
    clicked = sent & (rng.random(uid.size) < THETA[item])
    pushes = pd.DataFrame({
        "decision_id": np.arange(uid.size), "user_id": [f"u{u}" for u in uid], "ts": ts,
        "sent": sent, "item_id": np.where(sent, [f"i{i}" for i in item], None),
        "pscore": np.where(sent, q / k, 1 - q), "pscore_send": q,
        "opened": pd.array(np.where(sent, clicked, pd.NA), dtype="boolean"),
        "clicked": pd.array(np.where(sent, clicked, pd.NA), dtype="boolean"),
    }).sort_values("ts", kind="stable")
    users_df = pd.DataFrame({"user_id": [f"u{u}" for u in range(users)], "timezone": "UTC"})
    items_df = pd.DataFrame({"item_id": [f"i{i}" for i in range(k)], "price": 10.0})
    return write_dataset(Dataset(users_df, items_df, empty_activity(), pushes), d)


def _ipw_always_best(d: Path) -> tuple[float, float, int]:
    """IPW estimate and standard error of "always the best item", and the rounds used."""
    ds, _ = load_dataset(d)
    r = build_rounds(ds)
    np.testing.assert_allclose(r.pscore, 1.0 / THETA.size)  # pscore / pscore_send
    best = int(np.argmax(THETA))
    dist = np.zeros((r.n_rounds, r.n_actions))
    dist[:, best] = 1.0
    est = InverseProbabilityWeighting().estimate_policy_value(r.reward, r.action, r.pscore,
                                                              dist)
    terms = r.reward * dist[np.arange(r.n_rounds), r.action] / r.pscore
    return est, float(terms.std(ddof=1) / np.sqrt(r.n_rounds)), r.n_rounds


def test_ipw_on_a_uniform_item_log_is_near_the_truth(tmp_path: Path) -> None:
    d = _uniform_item_log(tmp_path / "u")
    est, se, n = _ipw_always_best(d)
    # truth THETA.max(); 4 standard errors (seeded, so this is a fixed draw)
    assert abs(est - THETA.max()) < 4 * se, (est, se, n)
    assert se < 0.05  # enough rounds that a joint pscore (x 1/0.2..1/0.5) could not pass


def test_rows_missing_pscore_send_are_quarantined_not_divided_by_one(tmp_path: Path) -> None:
    """Before: a sent row without pscore_send used its joint pscore as the item propensity
    (weights 2-5x too large on those rows); now the validator quarantines the row."""
    d = _uniform_item_log(tmp_path / "holes")
    raw = read_raw(d, "pushes")
    assert raw is not None
    sent_rows = np.flatnonzero(raw["sent"].to_numpy(bool))
    clicked = raw["clicked"].to_numpy(bool, na_value=False)
    holes = sent_rows[clicked[sent_rows]][::2]  # half of the clicks
    raw.loc[holes, "pscore_send"] = np.nan
    write_table(raw, d / "pushes.parquet")
    est, se, _ = _ipw_always_best(d)
    c = load_dataset(d, quarantine=False)[1].counts["pushes"]
    assert c.reasons == {"pscore_send missing on a sent row": holes.size}
    # dropping clicked rows lowers the value; the point is no 2-5x weights on them
    assert est < THETA.max() + 4 * se


# --- every item-side stage refuses a log without pscore_send (one line, exit 2) ----------
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pushrl(*args)


@pytest.fixture(scope="module")
def no_send_log(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds, _ = load_dataset(tiny_synth, quarantine=False)
    ds.pushes = ds.pushes.drop(columns=["pscore_send"])
    return write_dataset(ds, tmp_path_factory.mktemp("nosend"))


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_item_stages_refuse_a_log_without_pscore_send(no_send_log: Path, tmp_path: Path,
                                                      stage: str) -> None:
    args = (("train", "bandit", "--data", str(no_send_log), "--out", str(tmp_path / "pol"))
            if stage == "train" else
            ("evaluate", "--data", str(no_send_log), "--policy", "uniform-random",
             "--n-bootstrap", "10", "--out", str(tmp_path)))
    r = _run(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    # `evaluate` prints its progress to stderr first; the error is one line, the last
    errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert "Traceback" not in r.stderr and len(errors) == 1
    assert r.stderr.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("error: the logs have no `pscore_send`")
    assert "--declare-send-pscore" in errors[0]


def test_a_declared_send_pscore_is_divided_out(no_send_log: Path, tmp_path: Path) -> None:
    d = tmp_path / "declared"
    ds, _ = load_dataset(no_send_log, quarantine=False)
    write_dataset(ds, d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, SEND_PSCORE_KEY: 0.02}))
    ds, _ = load_dataset(d, quarantine=False)
    sent = ds.pushes["sent"].to_numpy(bool)
    np.testing.assert_allclose(build_rounds(ds).pscore,
                               np.minimum(ds.pushes.loc[sent, "pscore"] / 0.02, 1.0))
