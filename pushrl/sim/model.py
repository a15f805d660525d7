"""The fitted simulator artifact: ``sim.json`` + ``arrays.npz``, checksummed, no pickles.

Layout of ``simulator_data/fitted/<name>/``::

    sim.json     format, kind, data fingerprint, FeatureSpec, GLM coefficients and held-out
                 metrics of every component, sha256 of every other file
    arrays.npz   population (warm-start counts, rhythm, category mix), item catalog features,
                 OBD contexts; loaded with ``allow_pickle=False`` after its sha256 matches

Loading verifies the checksums before reading any array and refuses other formats.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pushrl.data.features import FeatureSpec
from pushrl.data.io import json_default, sha256_file
from pushrl.errors import ArtifactError
from pushrl.sim.glm import Glm
from pushrl.sim.population import Population

SIM_FORMAT = "pushrl/sim/v1"
SIM_JSON = "sim.json"
ARRAYS = "arrays.npz"


@dataclass
class SimModel:
    """A fitted simulator in memory.

    Attributes:
        kind: ``"push"`` (timing and item response of a push log) or ``"obd"`` (item choice
            with positions, e.g. the Open Bandit Dataset).
        spec: Feature pipeline parameters the models were fitted with.
        item_ids: ``(n_items,)`` item ids.
        item_features: ``(n_items, d_item)`` :class:`~pushrl.data.features.ItemCatalog`
            features; ``item_feature_names`` their names.
        item_category: ``(n_items,)`` category ids.
        item_revenue: ``(n_items,)`` expected revenue of a conversion.
        glms: Fitted components by name (``open``, ``click``, ``convert``, ``unsubscribe``,
            ``obd_click``).
        population: Users to bootstrap (push kind).
        arrays: Other arrays (OBD contexts).
        meta: Data fingerprint, data path, metrics, creation time.
    """

    kind: Literal["push", "obd"]
    spec: FeatureSpec
    item_ids: np.ndarray
    item_features: np.ndarray
    item_feature_names: tuple[str, ...]
    item_category: np.ndarray
    item_revenue: np.ndarray
    glms: dict[str, Glm]
    population: Population | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        """Number of catalog items."""
        return int(self.item_ids.shape[0])

    def glm(self, name: str) -> Glm:
        """Component ``name``; raises ``ArtifactError`` naming what the artifact has."""
        if name not in self.glms:
            raise ArtifactError(f"simulator has no {name!r} model (has: {', '.join(self.glms)}); "
                                "refit it from data with that outcome")
        return self.glms[name]


def save_sim(model: SimModel, out: str | Path) -> Path:
    """Write ``model`` to directory ``out`` (created); returns the directory."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    arrs: dict[str, np.ndarray] = {
        "item_ids": model.item_ids.astype(str), "item_features": model.item_features,
        "item_category": model.item_category, "item_revenue": model.item_revenue,
    }
    if model.population is not None:
        arrs.update(model.population.to_arrays())
    arrs.update({f"x_{k}": v for k, v in model.arrays.items()})
    tmp = d / (ARRAYS + ".tmp.npz")
    np.savez_compressed(tmp, **arrs)  # type: ignore[arg-type]
    tmp.replace(d / ARRAYS)
    doc = {
        "format": SIM_FORMAT, "kind": model.kind,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "feature_spec": model.spec.to_dict(),
        "item_feature_names": list(model.item_feature_names),
        "components": {k: g.to_dict() for k, g in model.glms.items()},
        "meta": model.meta, "files": {ARRAYS: sha256_file(d / ARRAYS)},
    }
    body = json.dumps(doc, indent=1, sort_keys=True, default=json_default)
    (d / SIM_JSON).write_text(body)
    return d


def load_sim(path: str | Path) -> SimModel:
    """Load and verify a fitted simulator directory.

    Raises:
        ArtifactError: missing files, unknown format or a checksum mismatch.
    """
    d = Path(path)
    if not (d / SIM_JSON).is_file():
        raise ArtifactError(f"no fitted simulator at {str(d)!r} ({SIM_JSON} missing); run "
                            "`pushrl sim fit DATA --out DIR`")
    try:
        doc = json.loads((d / SIM_JSON).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{d / SIM_JSON} is not valid JSON ({exc}); refit the simulator") \
            from None
    if doc.get("format") != SIM_FORMAT:
        raise ArtifactError(f"{d / SIM_JSON}: format {doc.get('format')!r} != {SIM_FORMAT!r}; "
                            "refit with this pushrl version")
    for name, digest in doc.get("files", {}).items():
        f = d / name
        if not f.is_file() or sha256_file(f) != digest:
            raise ArtifactError(f"{f} is missing or fails its sha256 check; the artifact is "
                                "corrupt or was modified, refit it with `pushrl sim fit`")
    try:
        spec = FeatureSpec.from_dict(doc["feature_spec"])
    except ValueError as exc:
        raise ArtifactError(f"{d}: {exc}") from None
    with np.load(d / ARRAYS, allow_pickle=False) as z:
        arrs = {k: z[k] for k in z.files}
    pop = Population.from_arrays(arrs) if "pop_user_id" in arrs else None
    extra = {k[2:]: v for k, v in arrs.items() if k.startswith("x_")}
    meta = dict(doc.get("meta", {}))
    meta["path"] = str(d)
    meta["sha256"] = doc["files"][ARRAYS]
    return SimModel(doc["kind"], spec, arrs["item_ids"], arrs["item_features"],
                    tuple(doc["item_feature_names"]), arrs["item_category"],
                    arrs["item_revenue"],
                    {k: Glm.from_dict(v) for k, v in doc["components"].items()},
                    pop, extra, meta)
