"""Does item-level affinity (a user's earlier views/carts/purchases of the pushed item) add
to the click model beyond the pipeline's user-category affinity? (issue 13, item 6)

Usage: python benchmarks/item_affinity.py DATA [DATA ...]   (pushlog v1 directories, e.g.
       the training logs written by benchmarks/sim_fidelity.py: out/sim_fidelity/W/data)

For every opened push, the point-in-time count of the user's activity events on the pushed
item in earlier hour buckets (the pipeline's visibility rule) is computed here, outside the
library, as an experiment. The click model of ``pushrl sim fit`` (``click_design``: category
affinity, engagement, item features) is cross-validated by user with and without
``log1p(item events)``. The feature would go into the one pipeline only if it lowered the
held-out log-loss; prints one row per dataset.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, ItemCatalog, replay
from pushrl.data.io import to_unix_seconds
from pushrl.data.validate import load_dataset
from pushrl.sim import design
from pushrl.sim.glm import fit_glm
from pushrl.units import HOUR


def item_events_before(ds: object, rows: np.ndarray) -> np.ndarray:
    """``(rows.sum(),)`` events of (user, pushed item) in hour buckets before the push's."""
    act = ds.activity.dropna(subset=["item_id"])  # type: ignore[attr-defined]
    p = ds.pushes[rows]  # type: ignore[attr-defined]
    key = lambda df: df["user_id"].astype(str) + "|" + df["item_id"].astype(str)  # noqa: E731
    events = pd.DataFrame({"k": key(act).to_numpy(), "b": to_unix_seconds(act["ts"]) // HOUR})
    by_key = {k: np.sort(g["b"].to_numpy()) for k, g in events.groupby("k")}
    empty = np.zeros(0, np.int64)
    return np.array([np.searchsorted(by_key.get(k, empty), b, side="left")
                     for k, b in zip(key(p).to_numpy(), to_unix_seconds(p["ts"]) // HOUR,
                                     strict=True)])


def main() -> None:
    print("| data | opened pushes | share with earlier item events | click LL (category) "
          "| click LL (+ item) | AUC (category) | AUC (+ item) | constant LL |")
    print("|" + "---|" * 8)
    for data in sys.argv[1:]:
        ds, _ = load_dataset(data, quarantine=False)
        spec = FeatureSpec.fit(ds)
        rr = replay(ds, spec)
        cat = ItemCatalog(ds.items, spec)
        p = ds.pushes
        rows = (p["sent"].fillna(False) & p["opened"].fillna(False)).to_numpy(bool)
        idx = cat.indices(p["item_id"].astype(str)[rows].to_numpy())
        y = p["clicked"][rows].fillna(False).to_numpy(int)
        x = design.click_design(rr.features[rows], rr.affinity[rows], cat.features[idx])
        names = design.click_names(cat.feature_names)
        n_item = item_events_before(ds, rows)
        groups = rr.user_index[rows]
        base = fit_glm(x, y, groups, names).metrics
        more = fit_glm(np.c_[x, np.log1p(n_item)], y, groups,
                       (*names, "log1p_item_events")).metrics
        print(f"| {data} | {rows.sum()} | {(n_item > 0).mean():.2f} | {base['log_loss']:.4f} "
              f"| {more['log_loss']:.4f} | {base['auc']:.3f} | {more['auc']:.3f} "
              f"| {base['log_loss_baseline']:.4f} |")


if __name__ == "__main__":
    main()
