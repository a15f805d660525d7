"""Schema errors fail with one line; row errors are quarantined exactly; counts reconcile."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.data.io import read_raw, write_table
from pushrl.data.validate import REJECTED_DIR, TS_REASON, load_dataset
from pushrl.errors import DataError, SchemaError
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ["simulator_data/synth", "simulator_data/obd/random", "simulator_data/obd/bts"]


@pytest.mark.parametrize("rel", SHIPPED)
def test_shipped_datasets_have_zero_rejections(rel: str, tmp_path: Path) -> None:
    d = tmp_path / "ds"
    shutil.copytree(ROOT / rel, d)
    _, report = load_dataset(d)
    assert report.n_rejected == 0
    assert report.reconciles()
    assert report.summary["pscore_coverage"] == 1.0


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


Mutation = Callable[[pd.DataFrame], pd.DataFrame]


def _sent_rows(p: pd.DataFrame) -> np.ndarray:
    return np.flatnonzero(p["sent"].to_numpy(bool))


def _set(col: str, value: object, which: str = "sent", n: int = 3) -> Mutation:
    def f(p: pd.DataFrame) -> pd.DataFrame:
        unsent = np.flatnonzero(~p["sent"].to_numpy(bool))
        rows = _sent_rows(p)[:n] if which == "sent" else unsent[:n]
        p = p.copy()
        if col in ("user_id", "item_id"):
            p[col] = p[col].astype(object)
        p.loc[rows, col] = value
        return p
    return f


def _dup_decisions(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    p.loc[[5, 6, 7], "decision_id"] = p.loc[0, "decision_id"]
    return p


def _outcome_on_unsent(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    rows = np.flatnonzero(~p["sent"].to_numpy(bool))[:3]
    p.loc[rows, "opened"] = True
    return p


ROW_CASES: list[tuple[str, Mutation, str]] = [
    ("pscore_zero", _set("pscore", 0.0), "pscore outside (0, 1]"),
    ("pscore_above_one", _set("pscore", 1.5), "pscore outside (0, 1]"),
    ("pscore_negative", _set("pscore", -0.1), "pscore outside (0, 1]"),
    ("duplicate_decision", _dup_decisions, "duplicate decision_id"),
    ("unknown_user", _set("user_id", "nobody"), "unknown user_id"),
    ("unknown_item", _set("item_id", "no-such-item"), "unknown item_id"),
    ("sent_without_item", _set("item_id", None), "sent without item_id"),
    ("negative_revenue", _set("revenue", -5.0), "negative revenue"),
    ("outcome_on_unsent", _outcome_on_unsent, "outcomes on unsent row"),
    # issue #15 item 5: contract breaks that used to pass
    ("pscore_send_zero", _set("pscore_send", 0.0), "pscore_send outside (0, 1]"),
    ("pscore_send_two", _set("pscore_send", 2.0), "pscore_send outside (0, 1]"),
    ("pscore_send_negative", _set("pscore_send", -1.0), "pscore_send outside (0, 1]"),
    ("pscore_send_inf", _set("pscore_send", np.inf), "pscore_send outside (0, 1]"),
    ("pscore_send_unsent_negative", _set("pscore_send", -0.5, "unsent"),
     "pscore_send outside (0, 1]"),
    ("pscore_send_unsent_two", _set("pscore_send", 2.0, "unsent"), "pscore_send outside (0, 1]"),
    ("pscore_send_nan", _set("pscore_send", np.nan), "pscore_send missing on a sent row"),
    ("pscore_nan_on_sent", _set("pscore", np.nan), "pscore missing on a sent row"),
    ("pscore_above_send", _set("pscore", 0.5),
     "pscore above pscore_send (item-level propensity > 1)"),
    ("revenue_inf", _set("revenue", np.inf), "revenue not finite"),
    ("revenue_minus_inf", _set("revenue", -np.inf), "revenue not finite"),
    ("ts_1970", _set("ts", pd.Timestamp("1970-01-01", tz="UTC")), TS_REASON),
    ("ts_2200", _set("ts", pd.Timestamp("2200-01-01", tz="UTC")), TS_REASON),
    ("ts_1999_unsent", _set("ts", pd.Timestamp("1999-12-31T23:00", tz="UTC"), "unsent"),
     TS_REASON),
]


@pytest.mark.parametrize(("name", "mutate", "reason"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_row_errors_are_quarantined_exactly(tiny_synth: Path, tmp_path: Path, name: str,
                                            mutate: Mutation, reason: str) -> None:
    d = _copy(tiny_synth, tmp_path / name)
    raw = read_raw(d, "pushes")
    assert raw is not None
    bad = mutate(raw)
    write_table(bad, d / "pushes.parquet")
    ds, report = load_dataset(d)
    c = report.counts["pushes"]
    assert c.rejected == 3
    assert c.reasons == {reason: 3}
    assert c.accepted + c.rejected == c.read == len(raw)
    assert report.reconciles()
    q = pd.read_parquet(d / REJECTED_DIR / "pushes.parquet")
    assert len(q) == 3 and set(q["reason"]) == {reason}
    assert len(ds.pushes) == len(raw) - 3


def test_unsent_rows_may_have_a_zero_send_probability(tiny_synth: Path, tmp_path: Path) -> None:
    """A server logs pscore_send 0 (and pscore 1) where a guardrail made sending impossible."""
    d = _copy(tiny_synth, tmp_path / "zero")
    raw = read_raw(d, "pushes")
    assert raw is not None
    raw = _set("pscore", 1.0, "unsent")(_set("pscore_send", 0.0, "unsent")(raw))
    write_table(raw, d / "pushes.parquet")
    assert load_dataset(d)[1].n_rejected == 0


def test_quarantine_file_removed_when_clean(tiny_synth: Path, tmp_path: Path) -> None:
    d = _copy(tiny_synth, tmp_path / "clean")
    (d / REJECTED_DIR).mkdir()
    write_table(pd.DataFrame({"reason": ["stale"]}), d / REJECTED_DIR / "pushes.parquet")
    load_dataset(d)
    assert not (d / REJECTED_DIR / "pushes.parquet").exists()


def test_activity_and_users_rows(tiny_synth: Path, tmp_path: Path) -> None:
    d = _copy(tiny_synth, tmp_path / "act")
    act = read_raw(d, "activity")
    users = read_raw(d, "users")
    assert act is not None and users is not None
    act = act.copy()
    act["revenue"] = act["revenue"].astype(float)
    act.loc[[0, 1], "revenue"] = -1.0
    write_table(act, d / "activity.parquet")
    users = users.copy()
    users.loc[0, "timezone"] = "Mars/Olympus_Mons"
    write_table(users, d / "users.parquet")
    _, report = load_dataset(d)
    assert report.counts["users"].reasons == {
        "unknown timezone (use an IANA name such as Europe/Berlin)": 1}
    # the user's pushes and activity cascade as unknown_user, and the counts still reconcile
    act_c = report.counts["activity"]
    assert sum(act_c.reasons.get(k, 0) for k in ("negative revenue", "unknown user_id")) == \
        act_c.rejected
    assert report.reconciles()


def _drop(col: str) -> Mutation:
    return lambda p: p.drop(columns=[col])


def _naive_ts(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    p["ts"] = p["ts"].dt.tz_localize(None)
    return p


def _tokyo_ts(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    p["ts"] = p["ts"].dt.tz_convert("Asia/Tokyo")
    return p


def _string_ts(value: str) -> Mutation:
    def f(p: pd.DataFrame) -> pd.DataFrame:
        p = p.copy()
        s = p["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype(object)
        s.iloc[4] = value
        p["ts"] = s
        return p
    return f


def _sent_as_text(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    p["sent"] = np.where(p["sent"].to_numpy(bool), "yes", "no")
    return p


def _pscore_as_text(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    p["pscore"] = p["pscore"].astype(str)
    p.loc[2, "pscore"] = "high"
    return p


SCHEMA_CASES: list[tuple[str, Mutation, str]] = [
    ("missing_sent", _drop("sent"), r"table `pushes`: missing required column `sent`"),
    ("missing_ts", _drop("ts"), r"table `pushes`: missing required column `ts`"),
    ("naive_ts", _naive_ts, r"table `pushes`, column `ts`: timestamps are naive"),
    ("tokyo_ts", _tokyo_ts, r"table `pushes`, column `ts`: timestamps are in Asia/Tokyo, not UTC"),
    ("offset_ts", _string_ts("2026-03-02T09:00:00+09:00"), r"column `ts`: value .* is not UTC"),
    ("garbage_ts", _string_ts("yesterday-ish Z"), r"column `ts`: unparsable timestamp"),
    ("sent_text", _sent_as_text, r"column `sent`: expected booleans"),
    ("pscore_text", _pscore_as_text, r"column `pscore`: expected numbers, got 'high'"),
]


@pytest.mark.parametrize(("name", "mutate", "pattern"), SCHEMA_CASES,
                         ids=[c[0] for c in SCHEMA_CASES])
def test_schema_errors_raise_one_line(tiny_synth: Path, tmp_path: Path, name: str,
                                      mutate: Mutation, pattern: str) -> None:
    d = _copy(tiny_synth, tmp_path / name)
    raw = read_raw(d, "pushes")
    assert raw is not None
    write_table(mutate(raw), d / "pushes.parquet")
    with pytest.raises(SchemaError, match=pattern) as ei:
        load_dataset(d)
    assert "\n" not in str(ei.value)


def test_missing_table(tiny_synth: Path, tmp_path: Path) -> None:
    d = _copy(tiny_synth, tmp_path / "nousers")
    (d / "users.parquet").unlink()
    with pytest.raises(SchemaError, match=r"table `users` is missing"):
        load_dataset(d)


def test_csv_dataset_roundtrip(tiny_synth: Path, tmp_path: Path) -> None:
    """CSV tables with ISO-8601 UTC strings and JSON candidate lists load like Parquet."""
    d = tmp_path / "csv"
    d.mkdir()
    for name in ("users", "items", "activity", "pushes"):
        raw = read_raw(tiny_synth, name)
        assert raw is not None
        raw = raw.head(500) if name in ("activity", "pushes") else raw
        if "ts" in raw:
            raw = raw.assign(ts=raw["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        raw.to_csv(d / f"{name}.csv", index=False)
    ds, report = load_dataset(d)
    assert report.n_rejected == 0
    assert str(ds.pushes["ts"].dt.tz) == "UTC"
    assert ds.pushes["sent"].dtype == "boolean"


ACTIVITY_CASES: list[tuple[str, str, object, str]] = [
    ("revenue_inf", "revenue", np.inf, "revenue not finite"),
    ("revenue_negative", "revenue", -1.0, "negative revenue"),
    ("ts_1970", "ts", pd.Timestamp("1970-01-01", tz="UTC"), TS_REASON),
    ("ts_2200", "ts", pd.Timestamp("2200-01-01", tz="UTC"), TS_REASON),
]


@pytest.mark.parametrize(("name", "col", "value", "reason"), ACTIVITY_CASES,
                         ids=[c[0] for c in ACTIVITY_CASES])
def test_activity_row_errors_are_quarantined(tiny_synth: Path, tmp_path: Path, name: str,
                                             col: str, value: object, reason: str) -> None:
    d = _copy(tiny_synth, tmp_path / name)
    act = read_raw(d, "activity")
    assert act is not None
    act = act.copy()
    act["revenue"] = act["revenue"].astype(float)
    act.loc[[3, 40, 41], col] = value
    write_table(act, d / "activity.parquet")
    _, report = load_dataset(d)
    c = report.counts["activity"]
    assert c.reasons == {reason: 3} and c.accepted + c.rejected == c.read == len(act)
    q = pd.read_parquet(d / REJECTED_DIR / "activity.parquet")
    assert set(q["reason"]) == {reason}


def _with_old_rows(tiny_synth: Path, d: Path) -> int:
    """Copy ``tiny_synth`` to ``d`` with three pushes dated 1970; returns the pushes read."""
    _copy(tiny_synth, d)
    raw = read_raw(d, "pushes")
    assert raw is not None
    write_table(_set("ts", pd.Timestamp("1970-01-01", tz="UTC"))(raw), d / "pushes.parquet")
    return len(raw)


def test_ts_window_is_configurable(tiny_synth: Path, tmp_path: Path) -> None:
    d = tmp_path / "old"
    n = _with_old_rows(tiny_synth, d)
    _, report = load_dataset(d)
    assert report.counts["pushes"].reasons == {TS_REASON: 3}
    assert report.summary["ts_range"][0].startswith("2000-01-01")
    ds, report = load_dataset(d, min_ts="1960-01-01")
    assert report.counts["pushes"].rejected == 0 and len(ds.pushes) == n
    assert report.summary["ts_range"][0].startswith("1960-01-01")
    # meta.json `ts_range` sets it for every stage; the argument still wins
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "ts_range": ["1969-01-01T00:00:00Z",
                                                                  "2030-01-01T00:00:00Z"]}))
    assert load_dataset(d)[1].counts["pushes"].rejected == 0
    assert load_dataset(d, min_ts="1980-01-01")[1].counts["pushes"].rejected == 3
    # the upper bound: the synthetic log ends in March 2026
    assert load_dataset(d, max_ts="2026-03-05")[1].counts["pushes"].rejected > 3


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"min_ts": "soon"}, r"--min-ts: 'soon' is not a timestamp"),
    ({"min_ts": "2030-01-01", "max_ts": "2020-01-01"}, r"must be before --max-ts"),
])
def test_bad_ts_window_raises(tiny_synth: Path, tmp_path: Path, kwargs: dict[str, str],
                              pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_dataset(_copy(tiny_synth, tmp_path / "w"), **kwargs)


def _drop_cols(tiny_synth: Path, d: Path, cols: list[str]) -> Path:
    _copy(tiny_synth, d)
    raw = read_raw(d, "pushes")
    assert raw is not None
    write_table(raw.drop(columns=cols), d / "pushes.parquet")
    return d


def test_propensity_support_is_reported(tiny_synth: Path, tmp_path: Path) -> None:
    full = load_dataset(tiny_synth, quarantine=False)[1].summary["propensities"]
    assert full["supports"] == {"sim fit": True, "timing OPE": True, "item OPE": True,
                                "bandit training": True}
    assert full["item_pscore"] == "pscore / pscore_send" and full["missing"] == []
    no_send = load_dataset(_drop_cols(tiny_synth, tmp_path / "ns", ["pscore_send"]))[1]
    pr = no_send.summary["propensities"]
    assert pr["pscore_send"] == "missing" and pr["item_pscore"] is None
    assert pr["supports"] == {"sim fit": True, "timing OPE": False, "item OPE": False,
                              "bandit training": False}
    assert any(m.startswith("no `pscore_send`: item-level OPE and bandit training need it")
               and "--declare-send-pscore" in m for m in pr["missing"])
    none = load_dataset(_drop_cols(tiny_synth, tmp_path / "np", ["pscore", "pscore_send"]))[1]
    assert any(m.startswith("no `pscore`") for m in none.summary["propensities"]["missing"])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pushrl("data", "validate", *args, cwd=os.getcwd())


def test_cli_declares_send_pscore_and_reports_support(tiny_synth: Path, tmp_path: Path) -> None:
    d = _drop_cols(tiny_synth, tmp_path / "decl", ["pscore_send"])
    r = _cli(str(d))
    assert r.returncode == 0, r.stderr
    assert "no `pscore_send`: item-level OPE and bandit training need it" in \
        " ".join(r.stdout.split())
    bad = _cli(str(d), "--declare-send-pscore", "0", "--json")
    assert bad.returncode != 0 and "send_pscore` must be a number in (0, 1]" in \
        json.loads(bad.stdout)["error"]
    r = _cli(str(d), "--declare-send-pscore", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    pr = json.loads(r.stdout)["summary"]["propensities"]
    assert pr["pscore_send"] == "declared 0.5" and pr["supports"]["bandit training"]
    assert json.loads((d / "meta.json").read_text())["send_pscore"] == 0.5


@pytest.mark.parametrize(("setup", "pattern"), [
    ("missing_dir", "does not exist"),
    ("missing_column", "missing required column `sent`"),
    ("bad_window", "--min-ts: 'yesterday' is not a timestamp"),
])
def test_cli_json_errors_are_json(tiny_synth: Path, tmp_path: Path, setup: str,
                                  pattern: str) -> None:
    d = tmp_path / "nowhere"
    extra: tuple[str, ...] = ()
    if setup == "missing_column":
        d = _drop_cols(tiny_synth, tmp_path / "mc", ["sent"])
    elif setup == "bad_window":
        d, extra = _copy(tiny_synth, tmp_path / "bw"), ("--min-ts", "yesterday")
    r = _cli(str(d), "--json", *extra)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"error", "type"} and pattern in out["error"]


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules"])
def test_host_dependent_zone_names_are_quarantined(tiny_synth: Path, tmp_path: Path,
                                                   zone: str) -> None:
    # `localtime` is the machine's own zone and `Factory` has no offset rules: zoneinfo loads
    # both, but they do not name a place (the server refuses them too: zone_names())
    d = _copy(tiny_synth, tmp_path / "tz")
    users = read_raw(d, "users")
    assert users is not None
    users = users.copy()
    users.loc[0, "timezone"] = zone
    write_table(users, d / "users.parquet")
    _, report = load_dataset(d)
    assert report.counts["users"].reasons == {
        "unknown timezone (use an IANA name such as Europe/Berlin)": 1}
    assert report.reconciles()
