"""Convert the Open Bandit Dataset sample (ZOZOTOWN, CC BY 4.0) into pushlog v1.

The sample ships inside the ``obp==0.4.1`` wheel under ``obp/dataset/obd/``. We never install
obp (it pins numpy < 2 and pandas < 2): we read the CSVs straight out of the wheel, which
:func:`find_obd_source` downloads with ``pip download --no-deps`` when no source is given.

Mapping (one OBD row = one decision):

* ``users``: one opaque user per impression (OBD has no user ids), ``timezone=Asia/Tokyo``.
* ``items``: ``item_id`` and ``item_feature_0`` (numeric, as ``price_z``), ``item_feature_1``
  as ``category``, ``item_feature_2/3`` as ``subcategory``/``segment`` (hashed strings).
* ``pushes``: ``sent=True``, ``item_id``, ``position`` (0-based), ``pscore`` (the logged
  ``propensity_score``), ``clicked`` (``click``); ``opened`` is unknown (null); user features
  go to ``ctx_user_feature_*``; the per-item ``user-item_affinity_*`` columns become the
  candidate feature list ``cand_affinity`` aligned with the ``items`` table order (``candidates``
  absent = all items).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.data.contract import PUSHLOG_VERSION, SEND_PSCORE_KEY
from pushrl.data.io import Dataset, empty_activity, write_dataset
from pushrl.errors import DataError

OBP_WHEEL = "obp-0.4.1-py3-none-any.whl"
POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")


def find_obd_source(source: str | Path | None = None) -> Path:
    """Locate the obp 0.4.1 wheel (or an extracted ``obd`` directory).

    Looks at ``source``, then ``./obp-0.4.1-py3-none-any.whl``, then downloads the wheel from
    the package registry into a temporary directory (``pip download obp==0.4.1 --no-deps``).
    """
    if source is not None:
        p = Path(source)
        if not p.exists():
            raise DataError(f"--source {str(p)!r} does not exist; pass the obp-0.4.1 wheel or "
                            "a directory containing obd/")
        return p
    if Path(OBP_WHEEL).exists():
        return Path(OBP_WHEEL)
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-obp-"))
    cmd = [sys.executable, "-m", "pip", "download", "obp==0.4.1", "--no-deps", "-q", "-d", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = tmp / OBP_WHEEL
    if res.returncode != 0 or not wheel.exists():
        raise DataError("could not download obp==0.4.1 to read the OBD sample; run "
                        "`pip download obp==0.4.1 --no-deps` and pass --source <wheel>")
    return wheel


def _read(source: Path, policy: str, campaign: str, name: str) -> pd.DataFrame:
    rel = f"obd/{policy}/{campaign}/{name}"
    if source.is_dir():
        for base in (source, source / "obp" / "dataset"):
            if (base / rel).exists():
                return pd.read_csv(base / rel)
        raise DataError(f"{rel} not found under {source}")
    with zipfile.ZipFile(source) as z:
        return pd.read_csv(io.BytesIO(z.read(f"obp/dataset/{rel}")))


def convert(source: Path, policy: str = "random", campaign: str = "all") -> Dataset:
    """Convert one OBD (policy, campaign) sample to a pushlog v1 :class:`Dataset`."""
    if policy not in POLICIES:
        raise DataError(f"--policy must be one of {POLICIES}, got {policy!r}")
    if campaign not in CAMPAIGNS:
        raise DataError(f"--campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    log = _read(source, policy, campaign, f"{campaign}.csv")
    ictx = _read(source, policy, campaign, "item_context.csv").sort_values("item_id")
    n = len(log)
    tag = "r" if policy == "random" else "b"
    user_ids = np.array([f"obd{tag}{j:06d}" for j in range(n)])
    users = pd.DataFrame({"user_id": user_ids, "timezone": "Asia/Tokyo"})
    items = pd.DataFrame({
        "item_id": ictx["item_id"].astype(str).to_numpy(),
        "price_z": ictx["item_feature_0"].to_numpy(float),
        "category": ictx["item_feature_1"].astype(str).to_numpy(),
        "subcategory": ictx["item_feature_2"].astype(str).to_numpy(),
        "segment": ictx["item_feature_3"].astype(str).to_numpy(),
    })
    aff_cols = [f"user-item_affinity_{int(i)}" for i in ictx["item_id"]]
    aff = log[aff_cols].to_numpy(np.float32)
    pushes = pd.DataFrame({
        "decision_id": np.arange(n, dtype=np.int64),
        "user_id": user_ids,
        "ts": pd.to_datetime(log["timestamp"], utc=True, format="ISO8601"),
        "sent": True,
        "item_id": log["item_id"].astype(str).to_numpy(),
        "pscore": log["propensity_score"].to_numpy(float),
        "position": (log["position"].to_numpy() - 1).astype(np.int64),
        "opened": pd.array([pd.NA] * n, dtype="boolean"),
        "clicked": log["click"].astype(bool).to_numpy(),
        "channel": "recommendation",
    })
    for j in range(4):
        pushes[f"ctx_user_feature_{j}"] = log[f"user_feature_{j}"].astype(str).to_numpy()
    pushes["cand_affinity"] = list(aff)
    meta = {"source": "Open Bandit Dataset sample (ZOZOTOWN), from obp==0.4.1",
            "license": "CC BY 4.0", "policy": policy, "campaign": campaign,
            "len_list": 3, "format": PUSHLOG_VERSION,
            SEND_PSCORE_KEY: 1.0}  # every impression was shown: pscore is item level
    return Dataset(users, items, empty_activity(), pushes, meta=meta)


def import_obd(out: str | Path, policy: str = "random", campaign: str = "all",
               source: str | Path | None = None) -> dict[str, object]:
    """Convert and write one OBD sample as a pushlog v1 directory; returns a summary."""
    ds = convert(find_obd_source(source), policy, campaign)
    write_dataset(ds, out)
    return {"out": str(out), "policy": policy, "campaign": campaign, "decisions": len(ds.pushes),
            "items": len(ds.items), "click_rate": float(ds.pushes["clicked"].mean())}
