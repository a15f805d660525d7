"""The template slot: which approved message template, given the user and the chosen item.

Template choice is a conditional contextual bandit after the item slot: the item policy picks
the item (its ``pscore`` as before), then a template policy picks one of the approved arms of
a catalog (:class:`~pushrl.policies.templates.TemplateCatalog`) with probability
``pscore_template``; the whole action's probability is ``pscore * pscore_template``.

The context is :func:`pushrl.data.item_context.build_template_context` (the one item-context
builder with templates as candidates): pipeline user features, the chosen item's catalog
features, and each template's recency for this user
(:class:`~pushrl.data.features.TemplateRecency`, shown in the last 24 h / 7 days), so a
learned policy can rest a template the user just saw (a recovering arm).

:class:`TemplatePolicy` is a VW ``cb_explore_adf`` model (:class:`~pushrl.policies.vw.VWItemPolicy`
over the arms, the same formatter and learner as items) plus an exploration floor for *new*
arms: an arm seen fewer than ``new_min_shows`` times in training gets a share ``new_explore``
of the probability, split among the new arms, so a freshly approved template is tried.
:class:`FixedTemplate` and :class:`UniformTemplate` are the yardsticks.

Logs -> rounds: :func:`template_rounds` (sent rows with a ``template_id`` among the arms and a
``pscore_template``; reward: the item-round reward of :mod:`pushrl.policies.item_data`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import (
    FeatureSpec,
    ItemCatalog,
    replay,
    template_recency_replay,
    user_index,
)
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.item_context import build_template_context
from pushrl.errors import ArtifactError, DataError
from pushrl.policies.base import ItemContext, ItemPolicy
from pushrl.policies.item_data import _sent, _weights
from pushrl.policies.registry import register_loader, save_artifact
from pushrl.policies.vw import LAYOUT_FILE, MODEL_FILE, VWConfig, VWItemPolicy, vw_from_artifact
from pushrl.policies.vw_format import VWLayout
from pushrl.rules.reward import RewardWeights
from pushrl.units import HOUR

ARMS_FILE = "arms.json"

#: Reward the template slot learns from by default: the open. The copy is what the user sees
#: before opening; what follows an open (click, purchase) depends on the item, which the item
#: slot chose before the template, so within one decision every arm's value is its open
#: probability times the same per-open value and the open ranks the arms as the objective
#: does, at a far higher rate than clicks or revenue (less noise per logged round). Measured
#: in ``benchmarks/templates.py`` (README "Message templates"). A catalog whose copy changes
#: what happens after the open (e.g. a promised discount) should train on the objective.
TEMPLATE_TRAIN_REWARD = "opened"


@dataclass(frozen=True)
class TemplateArms:
    """The arms of a template decision and what the context needs to describe them.

    Attributes:
        ids: Approved template ids, in arm order.
        spec: Feature spec of the user features (categories of the item features).
        catalog: The item catalog (features of the chosen item).
        catalog_ref: ``name@version`` of the template catalog the arms came from.
    """

    ids: tuple[str, ...]
    spec: FeatureSpec
    catalog: ItemCatalog
    catalog_ref: str = ""

    @property
    def features(self) -> np.ndarray:
        """``(n_arms, 0)``: templates are told apart by id (VW's ``id=`` feature)."""
        return np.zeros((len(self.ids), 0), np.float32)

    def context(self, features: np.ndarray, items: np.ndarray, hours: np.ndarray,
                mask: np.ndarray | None = None) -> ItemContext:
        """Template context of ``n`` decisions: raw pipeline ``features`` ``(n, N_FEATURES)``,
        chosen catalog ``items`` ``(n,)``, ``hours`` ``(n, n_arms)`` since each arm was shown."""
        items = np.asarray(items, np.int64)
        return build_template_context(features, self.catalog.features[items],
                                      self.catalog.feature_names, self.features, (), hours,
                                      mask=mask)


@dataclass
class TemplateRounds:
    """Logged template decisions (OBP vocabulary).

    Attributes:
        context: Template contexts, ``n_rounds`` rounds over the arms.
        action: ``(n_rounds,)`` arm index shown.
        reward: ``(n_rounds,)`` item-round reward of the push.
        pscore: ``(n_rounds,)`` logged ``pscore_template``.
        row: ``(n_rounds,)`` rows of ``ds.pushes``.
        arms: The arms.
        weights: Reward weights.
    """

    context: ItemContext
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    row: np.ndarray
    arms: TemplateArms
    weights: RewardWeights

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        return int(self.action.size)


def template_rounds(ds: Dataset, arm_ids: Sequence[str], *, spec: FeatureSpec | None = None,
                    reward: RewardWeights | str | None = None,
                    catalog_ref: str = "") -> TemplateRounds:
    """Template rounds of a log's sent pushes, featurised point-in-time.

    Recency is replayed over every sent push with a ``template_id`` among ``arm_ids`` (a
    template that is no longer an arm still showed, but is not a feature here).

    Raises:
        DataError: no ``template_id`` / ``pscore_template`` column, or no sent row with an
            arm and a logged ``pscore_template``.
    """
    p = ds.pushes
    for c in ("template_id", "pscore_template"):
        if c not in p:
            raise DataError(f"the logs have no `{c}` column; template training and OPE need "
                            "the shown template and its logging probability on sent rows")
    spec = spec or FeatureSpec.fit(ds)
    arms = TemplateArms(tuple(map(str, arm_ids)), spec, ItemCatalog(ds.items, spec), catalog_ref)
    index = {t: j for j, t in enumerate(arms.ids)}
    w = _weights(ds, reward)
    rows, sp, r, _ = _sent(ds, w)
    tid = p["template_id"].astype(object).where(p["template_id"].notna(), "").to_numpy()
    arm = np.array([index.get(str(t), -1) for t in tid], np.int64)
    sent = p["sent"].fillna(False).to_numpy(bool)
    arm[~sent] = -1
    users = user_index(ds, p["user_id"])
    buckets = to_unix_seconds(p["ts"]) // HOUR
    hours = template_recency_replay(users, buckets, arm, len(ds.users), len(arms.ids))
    ps = p["pscore_template"].to_numpy(np.float64, na_value=np.nan)
    keep = (arm[rows] >= 0) & np.isfinite(ps[rows])
    if not keep.any():
        raise DataError(f"no sent row shows one of the arms {list(arms.ids)} with a logged "
                        "`pscore_template`; pass the catalog the logs were made with")
    rows, r = rows[keep], r[keep]
    rep = replay(ds, spec, with_affinity=False)
    items = arms.catalog.indices(sp["item_id"].astype(str).to_numpy()[keep])
    ctx = arms.context(rep.features[rows], items, hours[rows])
    return TemplateRounds(ctx, arm[rows], r, ps[rows], rows, arms, w)


# --------------------------------------------------------------------- policies
@dataclass
class FixedTemplate(ItemPolicy):
    """Always the same arm (the item-only bandit's "best fixed template")."""

    arm: int = 0
    name: str = "fixed-template"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        d = np.zeros(np.asarray(ctx.mask).shape)
        d[:, self.arm] = 1.0
        return d


@dataclass
class UniformTemplate(ItemPolicy):
    """Uniform over the allowed arms (the random-template yardstick and the synthetic logger)."""

    name: str = "uniform-template"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return np.ones(np.asarray(ctx.mask).shape)


@dataclass
class TemplatePolicy(ItemPolicy):
    """A VW template policy with an exploration floor for new arms.

    Args:
        vw: The VW ``cb_explore_adf`` model over the arms.
        arm_ids: Arm ids (VW's candidate ids).
        shows: ``(n_arms,)`` times each arm was shown in the training rounds.
        new_explore: Probability mass given to arms with fewer than ``new_min_shows`` shows.
        new_min_shows: Shows below which an arm counts as new.
    """

    vw: VWItemPolicy
    arm_ids: tuple[str, ...]
    shows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    new_explore: float = 0.1
    new_min_shows: int = 200
    name: str = "vw-template"
    version: str = "0"
    catalog_ref: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.new_explore < 1.0:
            raise ValueError(f"new_explore must be in [0, 1), got {self.new_explore}")
        if self.shows.size == 0:
            self.shows = np.zeros(len(self.arm_ids), np.int64)
        if self.shows.size != len(self.arm_ids):
            raise ValueError(f"shows has {self.shows.size} entries for {len(self.arm_ids)} arms")

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return self.with_new_floor(self.vw.action_dist(ctx), np.asarray(ctx.mask, bool))

    def with_new_floor(self, dist: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``dist`` ``(n, n_arms)`` with the share :attr:`new_explore` spread over the allowed
        new arms (``mask`` ``(n, n_arms)``) of each row that has one."""
        new = (self.shows < self.new_min_shows)[None, :] & mask
        if self.new_explore > 0 and new.any():
            has = new.any(axis=1, keepdims=True)
            floor = np.where(new, 1.0, 0.0) / np.maximum(new.sum(axis=1, keepdims=True), 1)
            dist = np.where(has, (1 - self.new_explore) * dist + self.new_explore * floor, dist)
        return dist

    def learn(self, ctx: ItemContext, action: np.ndarray, reward: np.ndarray,
              pscore: np.ndarray) -> None:
        """Online update from observed template rounds (counts shows for the new-arm floor)."""
        self.vw.learn(ctx, action, reward, pscore)
        self.shows = self.shows + np.bincount(np.asarray(action, np.int64),
                                              minlength=len(self.arm_ids))

    def describe(self) -> dict[str, Any]:
        """Model-card parameters."""
        return {**super().describe(), "arms": list(self.arm_ids),
                "new_explore": self.new_explore, "new_min_shows": self.new_min_shows,
                "template_catalog": self.catalog_ref, "vw_args": list(self.vw.args)}

    def save(self, out: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Registry artifact ``out/vN`` (VW model, layout, arms), checksummed."""
        arms = {"arm_ids": list(self.arm_ids), "shows": self.shows.tolist(),
                "new_explore": self.new_explore, "new_min_shows": self.new_min_shows,
                "template_catalog": self.catalog_ref}
        files: dict[str, str | Path | bytes] = {
            MODEL_FILE: self.vw.model_bytes(),
            LAYOUT_FILE: json.dumps(self.vw.layout.to_dict()).encode(),
            ARMS_FILE: json.dumps(arms).encode()}
        full = {"policy": self.describe(), "slot": "template", "vw_args": list(self.vw.args),
                **(card or {})}
        return save_artifact(out, kind="item", loader="vw_template", files=files, card=full)


def new_template_policy(arms: TemplateArms, ctx: ItemContext, config: VWConfig | None = None,
                        *, new_explore: float = 0.1, new_min_shows: int = 200) -> TemplatePolicy:
    """An untrained :class:`TemplatePolicy` for contexts shaped like ``ctx``."""
    cfg = config or VWConfig()
    layout = VWLayout.from_catalog(ctx.shared_names, ctx.candidate_feature_names,
                                   np.array(arms.ids), arms.features, ())
    vw = VWItemPolicy(layout, cfg.args(), name="vw-template")
    return TemplatePolicy(vw, arms.ids, new_explore=new_explore, new_min_shows=new_min_shows,
                          catalog_ref=arms.catalog_ref)


def train_template_policy(rounds: TemplateRounds, config: VWConfig | None = None, *,
                          chunk: int = 2048, new_explore: float = 0.1,
                          new_min_shows: int = 200) -> TemplatePolicy:
    """Learn a :class:`TemplatePolicy` from logged rounds (one pass, in time order)."""
    pol = new_template_policy(rounds.arms, rounds.context, config, new_explore=new_explore,
                              new_min_shows=new_min_shows)
    learn_in_time_order(pol, rounds, chunk)
    return pol


def learn_in_time_order(pol: Any, rounds: Any, chunk: int) -> None:
    """One pass of ``pol.learn`` over ``rounds`` (``row``, ``context``, ``action``,
    ``reward``, ``pscore``: template or channel rounds) in logged-row order, ``chunk`` rounds
    at a time; the VW model is then final (``model_bytes`` flushes it)."""
    from pushrl.policies.item_data import take_context

    order = np.argsort(rounds.row, kind="stable")
    for lo in range(0, order.size, chunk):
        idx = order[lo:lo + chunk]
        pol.learn(take_context(rounds.context, idx), rounds.action[idx], rounds.reward[idx],
                  rounds.pscore[idx])
    pol.vw.model_bytes()


@register_loader("vw_template")
def load_template_policy(path: Path, card: dict[str, Any]) -> TemplatePolicy:
    """Registry loader of a verified template-policy artifact."""
    for f in (MODEL_FILE, LAYOUT_FILE, ARMS_FILE):
        if f not in card.get("files", {}):
            raise ArtifactError(f"{path}: template policy artifact lacks {f}; re-train it")
    arms = json.loads((Path(path) / ARMS_FILE).read_text())
    vw = vw_from_artifact(Path(path), card, "vw-template")
    return TemplatePolicy(vw, tuple(arms["arm_ids"]), np.asarray(arms["shows"], np.int64),
                          float(arms["new_explore"]), int(arms["new_min_shows"]),
                          str(card.get("name", "vw-template")), str(card.get("version", "0")),
                          str(arms.get("template_catalog", "")))
