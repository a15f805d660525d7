"""Item-choice simulator for logs without opens (the Open Bandit Dataset): P(click | x, item, pos).

Each logged row is a context: its point-in-time pipeline features (``replay``; OBD users have
no history, so mainly the local hour and weekday), its logged user features
(``ctx_*`` columns, one-hot over the fitted vocabulary), the display position, and the
per-candidate features ``cand_affinity``. A policy sees the row as the one item context
(:func:`pushrl.data.item_context.build_item_context`, the columns a policy trained on the
log with :mod:`pushrl.policies.item_data` sees): ``encode(raw)``, ``ctx_<name>=<value>``
one-hots; per candidate the catalog features, ``affinity`` (1.0: no pipeline activity) and
``cand_affinity``; the position in ``ctx.position``. The click model is a calibrated
logistic GLM (see :mod:`pushrl.sim.glm`) on its own design

    [encode(raw), ctx one-hots, position one-hot] (shared) and
    [catalog features, item one-hot, log1p(cand_affinity)] (per item).

The environment samples a logged context and draws a click for the chosen item from this
model; the expected reward of every candidate is the model's probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.contract import CAND_PREFIX, CTX_PREFIX
from pushrl.data.features import ENCODED_NAMES, FeatureSpec, ItemCatalog, encode, replay
from pushrl.data.item_context import ItemContext, build_item_context
from pushrl.data.fingerprint import same_data
from pushrl.data.io import Dataset
from pushrl.data.validate import ValidationReport
from pushrl.errors import DataError
from pushrl.sim.glm import Glm, binary_metrics, fit_glm
from pushrl.sim.model import SimModel

C_GRID_OBD = (0.0003, 0.003, 0.03, 0.3)
#: The logged per-candidate affinity column of OBD logs.
CAND_AFFINITY = f"{CAND_PREFIX}affinity"


def _ctx_codes(p: pd.DataFrame, vocab: dict[str, list[str]]) -> np.ndarray:
    """``(n, n_ctx)`` level index of every ``ctx_*`` column (-1 = unseen level)."""
    cols = []
    for c, levels in vocab.items():
        idx = {v: i for i, v in enumerate(levels)}
        cols.append(p[c].astype(str).map(idx).fillna(-1).to_numpy(np.int64) if c in p
                    else np.full(len(p), -1))
    return np.stack(cols, axis=1) if cols else np.zeros((len(p), 0), np.int64)


class ObdWorld:
    """Contexts and click probabilities of a fitted item-choice simulator.

    Args:
        model: A simulator with ``kind == "obd"``.
    """

    def __init__(self, model: SimModel) -> None:
        if model.kind != "obd":
            raise DataError(f"simulator kind is {model.kind!r}; the OBD world needs one fitted "
                            "on an item-choice log (e.g. simulator_data/obd/random)")
        a = model.arrays
        self.model = model
        self.raw = a["raw"].astype(np.float32)
        self.ctx = a["ctx_codes"].astype(np.int64)
        self.position = a["position"].astype(np.int64)
        self.affinity = a["cand_affinity"].astype(np.float32)
        self.vocab_sizes = [int(v) for v in a["ctx_vocab_sizes"]]
        self.n_positions = int(a["n_positions"])
        self.n_items = model.n_items
        self.glm: Glm = model.glm("obd_click")
        #: Names of the click model's shared design columns (not a policy context).
        self.design_names = (*ENCODED_NAMES,
                             *[f"ctx{j}={i}" for j, k in enumerate(self.vocab_sizes)
                               for i in range(k)],
                             *[f"position={i}" for i in range(self.n_positions)])

    @property
    def n_contexts(self) -> int:
        """Logged contexts available for sampling."""
        return int(self.raw.shape[0])

    def _one_hot_ctx(self, rows: np.ndarray) -> np.ndarray:
        """``(n, sum(vocab_sizes))`` one-hot logged user features (unseen level: zeros)."""
        out = np.zeros((rows.size, sum(self.vocab_sizes)), np.float32)
        j0 = 0
        for j, k in enumerate(self.vocab_sizes):
            c = self.ctx[rows, j]
            out[np.flatnonzero(c >= 0), j0 + c[c >= 0]] = 1.0
            j0 += k
        return out

    def design_shared(self, rows: np.ndarray) -> np.ndarray:
        """``(n, len(design_names))`` shared part of the click-model design of context
        ``rows``: encoded features, logged-context one-hots, position one-hot (also the
        ``shared`` observation of ``pushrl/PushItem-v0``)."""
        pos = np.zeros((rows.size, self.n_positions), np.float32)
        pos[np.arange(rows.size), np.clip(self.position[rows], 0, self.n_positions - 1)] = 1.0
        return np.concatenate([encode(self.raw[rows]), self._one_hot_ctx(rows), pos], axis=1)

    def context(self, rows: np.ndarray, candidates: np.ndarray,
                extra: dict[str, Any] | None = None) -> ItemContext:
        """The item context of logged context ``rows`` ``(n,)`` over ``candidates``
        ``(n, k)``, with the column names of a context built from the log itself."""
        vocab = self.model.meta.get("ctx_vocab")
        if vocab is None:
            raise DataError("the OBD simulator has no `ctx_vocab` in its metadata; refit it "
                            "with `pushrl sim fit`")
        names = tuple(f"{c}={v}" for c, levels in vocab.items() for v in levels)
        cand = np.asarray(candidates, np.int64)
        aff = self.affinity[rows[:, None], cand]
        return build_item_context(
            self.raw[rows], self.model.item_features, self.model.item_category,
            self.model.item_feature_names, candidates=cand, logged=self._one_hot_ctx(rows),
            logged_names=names, cand_values={CAND_AFFINITY: aff}, cand_names=(CAND_AFFINITY,),
            position=self.position[rows], extra=extra)

    def design(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Click-model rows for (context row, item) pairs, ``(n, d)``."""
        eye = np.zeros((items.size, self.n_items))
        eye[np.arange(items.size), items] = 1.0
        return np.concatenate([self.design_shared(rows), self.model.item_features[items], eye,
                               np.log1p(self.affinity[rows, items])[:, None]], axis=1)

    def p_click(self, rows: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """P(click) for ``items`` ``(n,)``, or for every item, ``(n, n_items)`` if None."""
        if items is not None:
            return self.glm.predict(self.design(rows, items))
        r = np.repeat(rows, self.n_items)
        i = np.tile(np.arange(self.n_items), rows.size)
        return self.glm.predict(self.design(r, i)).reshape(rows.size, self.n_items)


def fit_obd(ds: Dataset, report: ValidationReport,
            progress: Callable[[str], None] | None = None) -> SimModel:
    """Fit the item-choice click model and keep the logged contexts (see module docstring)."""
    say = progress or (lambda _m: None)
    spec = FeatureSpec.fit(ds)
    say("replaying the log through the feature pipeline")
    rr = replay(ds, spec, with_affinity=False)
    catalog = ItemCatalog(ds.items, spec)
    p = ds.pushes
    known = p["clicked"].notna().to_numpy() & p["sent"].fillna(False).to_numpy(bool)
    ctx_cols = sorted(c for c in p.columns if c.startswith(CTX_PREFIX))
    vocab = {c: sorted(p.loc[known, c].astype(str).unique().tolist()) for c in ctx_cols}
    pos = p["position"].fillna(0).to_numpy(np.int64)
    aff_col = CAND_AFFINITY
    aff = (np.stack([np.asarray(a, np.float32) for a in p[aff_col]]) if aff_col in p
           else np.zeros((len(p), len(catalog)), np.float32))
    if aff.shape[1] != len(catalog):
        raise DataError(f"`{aff_col}` lists have {aff.shape[1]} entries but there are "
                        f"{len(catalog)} items; align them with the items table order")
    arrays = {"raw": rr.features[known], "ctx_codes": _ctx_codes(p.loc[known], vocab),
              "position": pos[known], "cand_affinity": aff[known],
              "ctx_vocab_sizes": np.array([len(v) for v in vocab.values()], np.int64),
              "n_positions": np.array(int(pos.max()) + 1)}
    item = catalog.indices(p.loc[known, "item_id"].astype(str).to_numpy())
    stub = SimModel("obd", spec, catalog.ids.astype(str), catalog.features.astype(np.float32),
                    catalog.feature_names, catalog.category, np.zeros(len(catalog)),
                    {"obd_click": Glm((), np.zeros(0), 0.0)}, None, arrays)
    world = ObdWorld(stub)
    rows = np.arange(int(known.sum()))
    x = world.design(rows, item)
    y = p.loc[known, "clicked"].astype(bool).to_numpy()
    names = (*world.design_names, *catalog.feature_names,
             *[f"item={i}" for i in catalog.ids], "log1p_affinity")
    say(f"fitting P(click | context, item, position) on {rows.size} rows, {int(y.sum())} clicks")
    glm = fit_glm(x, y, rows, names, c_grid=C_GRID_OBD)
    stub.glms = {"obd_click": glm}
    stub.arrays["logged_item"] = item
    stub.arrays["logged_click"] = y
    stub.meta = {"data": str(ds.path) if ds.path else None, "fingerprint": report.fingerprint,
                 "decisions": int(known.sum()), "ctx_vocab": vocab,
                 "logging_policy": ds.meta.get("policy")}
    return stub


def _ctr_rows(key: np.ndarray, clicks: np.ndarray, p_sim: np.ndarray,
              labels: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, lab in enumerate(labels):
        m = key == i
        n = int(m.sum())
        if not n:
            continue
        r_log, r_sim = float(clicks[m].mean()), float(p_sim[m].mean())
        se = np.sqrt(max(r_sim * (1 - r_sim), 1e-12) / n)
        out.append({"key": lab, "n": n, "clicks_log": int(clicks[m].sum()), "ctr_log": r_log,
                    "ctr_sim": r_sim, "rel_error": (r_sim / r_log - 1) if r_log else None,
                    "z": (r_sim - r_log) / se})
    return out


def validate_obd(model: SimModel, ds: Dataset, report: ValidationReport) -> dict[str, Any]:
    """Held-out click metrics and the replay test (CTR by item and by position)."""
    same = same_data(model.meta.get("fingerprint"), report.fingerprint,
                     None if report.summary.get("sample") else ds.legacy_fingerprint)
    world = ObdWorld(model)
    p = ds.pushes
    known = p["clicked"].notna().to_numpy() & p["sent"].fillna(False).to_numpy(bool)
    y = p.loc[known, "clicked"].astype(bool).to_numpy()
    item = ItemCatalog(ds.items, model.spec).indices(p.loc[known, "item_id"].astype(str).to_numpy())
    if same:
        rows = np.arange(world.n_contexts)
        comp = {"obd_click": {"source": "fit cross-validation", **world.glm.metrics}}
    else:
        # contexts of the other log, featurised with the fitted vocabulary
        rr = replay(ds, model.spec, with_affinity=False)
        vocab = model.meta["ctx_vocab"]
        ext = SimModel("obd", model.spec, model.item_ids, model.item_features,
                       model.item_feature_names, model.item_category, model.item_revenue,
                       model.glms, None, {**model.arrays, "raw": rr.features[known],
                                          "ctx_codes": _ctx_codes(p.loc[known], vocab),
                                          "position": p.loc[known, "position"].to_numpy(np.int64),
                                          "cand_affinity": np.stack(
                                              [np.asarray(a, np.float32)
                                               for a in p.loc[known, "cand_affinity"]])})
        world = ObdWorld(ext)
        rows = np.arange(world.n_contexts)
        base = np.full(y.size, world.glm.metrics.get("rate", y.mean()))
        comp = {"obd_click": {"source": "external data",
                              **binary_metrics(y, world.p_click(rows, item), base)}}
    p_sim = world.p_click(rows, item)
    pos = world.position[rows]
    by_pos = _ctr_rows(pos, y, p_sim, list(range(world.n_positions)))
    by_item = _ctr_rows(item, y, p_sim, [str(i) for i in model.item_ids])
    zs = np.array([r["z"] for r in by_item])
    return {"sim": model.meta.get("path"), "data": str(ds.path), "same_data_as_fit": same,
            "components": comp,
            "replay": {"policy": "the logged actions (item, position) in their logged contexts; "
                                 "simulated CTR is the model's expected click probability",
                       "overall": {"ctr_log": float(y.mean()), "ctr_sim": float(p_sim.mean())},
                       "ctr_by_position": by_pos, "ctr_by_item": by_item,
                       "items_abs_z_over_2": int((np.abs(zs) > 2).sum()),
                       "items": len(by_item)},
            "gates": [], "passed": True}
