"""Logged pushes -> bandit rounds: the one place that turns pushlog v1 into item decisions.

Training (VW, baselines), off-policy evaluation and the server build their
:class:`~pushrl.policies.base.ItemContext` with :func:`make_context`, which fits the logged
``ctx_*`` / ``cand_*`` columns (:class:`ContextEncoder`) to the one item-context builder
:func:`pushrl.data.item_context.build_item_context`, the builder the simulator uses too
(column vocabulary in :mod:`pushrl.data.item_context`):

* ``shared`` = :func:`~pushrl.data.features.encode` of the point-in-time pipeline features,
  then the logged ``ctx_*`` columns (numeric as is, strings one-hot with the training
  vocabulary: ``ctx_user_feature_0=81ce...``).
* ``candidate_features`` = the :class:`~pushrl.data.features.ItemCatalog` features of each
  candidate, then ``affinity`` (the pipeline's user-category affinity at decision time, 1.0
  where the pipeline has no activity), then each logged ``cand_*`` column.

A *round* is one sent push (``sent`` true): ``action`` is the logged item's index among the
round's candidates (``candidates`` column, absent = every catalog item), ``pscore`` the
item-level logging probability :func:`~pushrl.data.contract.item_pscore` (``pscore /
pscore_send``; the send probability declared in ``meta.json`` for logs without it, e.g. 1 in
OBD) and ``reward`` the one reward (:func:`pushrl.rules.reward.from_logs`) of the logged
outcomes under the item-round weights (:meth:`~pushrl.rules.reward.RewardWeights.item_round`:
the send is given, so no send cost and no unsubscribe). Every sent row with an ``item_id`` is
a round: a missing weighted outcome counts 0 and is counted in
:attr:`BanditRounds.missing_outcomes` (a weighted outcome missing on every sent row is an
error: the reward cannot be computed from these logs).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.contract import CAND_PREFIX, CTX_PREFIX, declared_send_pscore, item_pscore
from pushrl.data.fingerprint import Fingerprint
from pushrl.data.features import ENCODED_NAMES, FeatureSpec, ItemCatalog, iter_replay
from pushrl.data.item_context import AFFINITY, build_item_context
from pushrl.data.item_context import candidates_all as candidates_all
from pushrl.data.io import Dataset
from pushrl.data.shards import ShardPlan, iter_shards
from pushrl.data.split import UserSplit
from pushrl.errors import DataError
from pushrl.policies.base import ItemContext
from pushrl.rules import reward as rules_reward
from pushrl.rules.reward import RewardWeights, item_reward

#: Item-round reward of the synthetic data: a click is worth 1, each 100 of revenue another 1.
SYNTH_REWARD = RewardWeights.parse("clicked+0.01*revenue")


def default_reward(ds: Dataset) -> RewardWeights:
    """:data:`SYNTH_REWARD` when sent rows log revenue, else ``clicked``."""
    return _default_reward(_logs_revenue(ds.pushes))


def _logs_revenue(p: pd.DataFrame) -> bool:
    sent = p["sent"].fillna(False).to_numpy(bool)
    return "revenue" in p.columns and bool(p.loc[sent, "revenue"].notna().any())


def _default_reward(has_revenue: bool) -> RewardWeights:
    return SYNTH_REWARD if has_revenue else RewardWeights.parse("clicked")


class _ContextColumns:
    """The logged ``ctx_*`` / ``cand_*`` columns of one or more pushes tables (user shards):
    a ``ctx_*`` column is numeric when it is numeric in every shard, else a string column
    whose vocabulary is the union over shards."""

    def __init__(self) -> None:
        self.numeric: dict[str, bool] = {}
        self.vocab: dict[str, set[str]] = {}
        self.cand: set[str] = set()

    def add(self, p: pd.DataFrame) -> None:
        for c in (c for c in p.columns if c.startswith(CTX_PREFIX)):
            num = pd.api.types.is_numeric_dtype(p[c].dtype) or pd.api.types.is_bool_dtype(p[c])
            self.numeric[c] = self.numeric.get(c, True) and num
            vocab = self.vocab.setdefault(c, set())
            if not num:
                vocab.update(map(str, p[c].dropna().unique()))
        self.cand.update(c for c in p.columns if c.startswith(CAND_PREFIX))

    def encoder(self, spec: FeatureSpec, catalog: ItemCatalog) -> ContextEncoder:
        num = [c for c in sorted(self.numeric) if self.numeric[c]]
        cat = [(c, tuple(sorted(self.vocab[c]))) for c in sorted(self.numeric)
               if not self.numeric[c]]
        return ContextEncoder(spec, tuple(map(str, catalog.ids)), catalog.feature_names,
                              tuple(num), tuple(cat), tuple(sorted(self.cand)))


@dataclass(frozen=True)
class ContextEncoder:
    """Fitted columns of the item context (saved with every item policy artifact).

    Attributes:
        spec: Feature pipeline parameters.
        item_ids: Catalog item ids in items-table order (candidate indices refer to these).
        catalog_feature_names: :attr:`ItemCatalog.feature_names`.
        ctx_numeric: Logged numeric ``ctx_*`` columns.
        ctx_categorical: ``(column, vocabulary)`` of logged string ``ctx_*`` columns.
        cand_columns: Logged ``cand_*`` list columns.
    """

    spec: FeatureSpec
    item_ids: tuple[str, ...]
    catalog_feature_names: tuple[str, ...]
    ctx_numeric: tuple[str, ...] = ()
    ctx_categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()
    cand_columns: tuple[str, ...] = ()

    @property
    def shared_names(self) -> tuple[str, ...]:
        """Names of the ``shared`` columns."""
        onehot = tuple(f"{c}={v}" for c, vocab in self.ctx_categorical for v in vocab)
        return ENCODED_NAMES + self.ctx_numeric + onehot

    @property
    def candidate_feature_names(self) -> tuple[str, ...]:
        """Names of the ``candidate_features`` columns."""
        return (*self.catalog_feature_names, AFFINITY, *self.cand_columns)

    @classmethod
    def fit(cls, ds: Dataset, spec: FeatureSpec, catalog: ItemCatalog) -> ContextEncoder:
        """Columns and string vocabularies from a (training) dataset."""
        cols = _ContextColumns()
        cols.add(ds.pushes)
        return cols.encoder(spec, catalog)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"spec": self.spec.to_dict(), "item_ids": list(self.item_ids),
                "catalog_feature_names": list(self.catalog_feature_names),
                "ctx_numeric": list(self.ctx_numeric),
                "ctx_categorical": [[c, list(v)] for c, v in self.ctx_categorical],
                "cand_columns": list(self.cand_columns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContextEncoder:
        """Inverse of :meth:`to_dict`."""
        return cls(FeatureSpec.from_dict(d["spec"]), tuple(d["item_ids"]),
                   tuple(d["catalog_feature_names"]), tuple(d["ctx_numeric"]),
                   tuple((c, tuple(v)) for c, v in d["ctx_categorical"]),
                   tuple(d["cand_columns"]))

    def logged_context(self, logged: Mapping[str, Any] | pd.DataFrame | None,
                       n: int) -> np.ndarray:
        """``(n, d_logged)`` numeric ``ctx_*`` values then one-hot string ``ctx_*`` columns.

        Missing columns or values give zeros (an unknown string is all-zero).
        """
        d = len(self.ctx_numeric) + sum(len(v) for _, v in self.ctx_categorical)
        out = np.zeros((n, d), np.float32)
        if logged is None:
            return out
        j = 0
        for c in self.ctx_numeric:
            if c in logged:
                v = pd.to_numeric(pd.Series(np.asarray(logged[c])), errors="coerce")
                out[:, j] = v.fillna(0.0).to_numpy(np.float32)
            j += 1
        for c, vocab in self.ctx_categorical:
            if c in logged:
                codes = pd.Categorical(pd.Series(np.asarray(logged[c], dtype=object)).astype(
                    str), categories=list(vocab)).codes
                ok = codes >= 0
                out[np.flatnonzero(ok), j + codes[ok]] = 1.0
            j += len(vocab)
        return out


def make_context(encoder: ContextEncoder, catalog: ItemCatalog, features: np.ndarray, *,
                 category_affinity: np.ndarray | None = None,
                 candidates: np.ndarray | None = None, mask: np.ndarray | None = None,
                 logged: Mapping[str, Any] | pd.DataFrame | None = None,
                 cand_values: Mapping[str, np.ndarray] | None = None,
                 position: np.ndarray | None = None) -> ItemContext:
    """Build the item context of ``n`` decisions (logs, simulator and server alike).

    Args:
        encoder: Fitted context columns.
        catalog: Item catalog (same items table as at training).
        features: ``(n, N_FEATURES)`` raw pipeline features at decision time
            (:meth:`FeatureState.features` or :attr:`ReplayResult.features`).
        category_affinity: ``(n, n_categories)`` user-category affinity at decision time
            (e.g. ``state.affinity(users[:, None], arange(n_categories)[None])``); None = 1.0.
        candidates: ``(n, k)`` catalog indices; None = every catalog item.
        mask: ``(n, k)`` True for real candidates; None = all.
        logged: Logged ``ctx_*`` values by column (length-``n`` arrays).
        cand_values: ``cand_*`` values by column, each ``(n, k)`` aligned with ``candidates``.
        position: ``(n,)`` slot index, or None.

    Returns:
        The :class:`ItemContext` with :attr:`ContextEncoder.shared_names` and
        :attr:`ContextEncoder.candidate_feature_names` columns.
    """
    raw = np.asarray(features, np.float32)
    if tuple(map(str, catalog.ids)) != encoder.item_ids:
        raise ValueError("the item catalog differs from the encoder's (item ids or order); "
                         "build the catalog from the items table the policy was trained on")
    names = encoder.shared_names[len(ENCODED_NAMES):]
    return build_item_context(
        raw, catalog.features, catalog.category, catalog.feature_names,
        category_affinity=category_affinity, candidates=candidates, mask=mask,
        logged=encoder.logged_context(logged, raw.shape[0]), logged_names=names,
        cand_values=cand_values, cand_names=encoder.cand_columns, position=position)


@dataclass
class BanditRounds:
    """Logged bandit rounds in OBP vocabulary.

    Attributes:
        context: The rounds' :class:`ItemContext` (``n_rounds`` rounds).
        action: ``(n_rounds,)`` index of the logged item among the round's candidates.
        reward: ``(n_rounds,)`` reward of the logged action.
        pscore: ``(n_rounds,)`` item-level logging probability of the logged action.
        item_id: ``(n_rounds,)`` logged item ids.
        row: ``(n_rounds,)`` row of each round in ``ds.pushes``.
        encoder: The fitted context columns.
        catalog: The item catalog.
        weights: The item-round reward weights ``reward`` was computed with.
        missing_outcomes: Rounds whose weighted outcome was missing (counted 0), by
            outcome column, over the whole log (:func:`pushrl.rules.reward.missing_outcomes`).
    """

    context: ItemContext
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    item_id: np.ndarray
    row: np.ndarray
    encoder: ContextEncoder
    catalog: ItemCatalog
    weights: RewardWeights
    missing_outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        return int(self.action.shape[0])

    @property
    def n_actions(self) -> int:
        """Candidates per round (``k``, padding included)."""
        return int(np.asarray(self.context.candidates).shape[1])

    @property
    def position(self) -> np.ndarray | None:
        """``(n_rounds,)`` slot index or None."""
        return self.context.position

    def subset(self, idx: np.ndarray) -> BanditRounds:
        """The rounds at ``idx`` (an index or boolean array), e.g. a train/test split."""
        return replace(self, context=take_context(self.context, idx), action=self.action[idx],
                       reward=self.reward[idx], pscore=self.pscore[idx],
                       item_id=self.item_id[idx], row=self.row[idx])


def take_context(ctx: ItemContext, idx: np.ndarray) -> ItemContext:
    """Rows ``idx`` of an :class:`ItemContext`."""
    return ItemContext(ctx.shared[idx], np.asarray(ctx.candidates)[idx], ctx.mask[idx],
                       ctx.candidate_features[idx], ctx.shared_names,
                       ctx.candidate_feature_names,
                       None if ctx.position is None else ctx.position[idx], dict(ctx.extra))


def pad_candidates(lists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-round candidate lists as ``(candidates, mask)``, both ``(n, k)`` with
    ``k`` the longest list; padding is candidate 0 with ``mask`` False."""
    k = max(len(c) for c in lists)
    cand = np.zeros((len(lists), k), np.int64)
    mask = np.zeros((len(lists), k), bool)
    for i, c in enumerate(lists):
        cand[i, :len(c)], mask[i, :len(c)] = c, True
    return cand, mask


def _candidates(p: pd.DataFrame, catalog: ItemCatalog, logged_idx: np.ndarray,
                rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(candidates or None, mask, action)`` from the ``candidates`` column (None = all)."""
    col = p["candidates"] if "candidates" in p.columns else None
    if col is None or not col.notna().any():
        return None, np.ones((len(p), len(catalog)), bool), logged_idx
    cand, mask = pad_candidates([catalog.indices(list(c))
                                 if isinstance(c, list | tuple | np.ndarray)
                                 else np.arange(len(catalog)) for c in col])
    hit = (cand == logged_idx[:, None]) & mask
    if not hit.any(axis=1).all():
        bad = ~hit.any(axis=1)
        raise DataError(f"the logged item is not among `candidates` in {int(bad.sum())} rows "
                        f"(first at pushes row {int(rows[np.argmax(bad)])}); fix the log")
    return cand, mask, np.argmax(hit, axis=1)


def _stack_lists(col: pd.Series, k: int) -> np.ndarray:
    """A column of numeric lists -> ``(n, k)`` float32, zero-padded (missing = zeros)."""
    out = np.zeros((len(col), k), np.float32)
    for i, v in enumerate(col):
        if isinstance(v, list | tuple | np.ndarray):
            a = np.asarray(v, np.float32)[:k]
            out[i, :a.size] = a
    return out


@dataclass
class _Logged:
    """Row-level arrays of the sent rows of a dataset (everything but pipeline features)."""

    rows: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    item_id: np.ndarray
    candidates: np.ndarray | None
    mask: np.ndarray | None
    cand_values: dict[str, np.ndarray]
    logged: dict[str, np.ndarray]
    position: np.ndarray | None
    missing_outcomes: dict[str, int]


def _sent(ds: Dataset, w: RewardWeights
          ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, dict[str, int]]:
    """``(rows, pushes[rows], reward, missing outcomes)`` of the sent rows with an item."""
    p = ds.pushes
    sent = p["sent"].fillna(False).to_numpy(bool) & p["item_id"].notna().to_numpy()
    if not sent.any():
        raise DataError("the logs have no sent pushes with an item_id: nothing to learn from")
    rows = np.flatnonzero(sent)
    sp = p.iloc[rows]
    missing = rules_reward.missing_outcomes(w, sp)
    never = [c for c, n in missing.items() if n == rows.size]
    if never:
        raise DataError(f"--reward {w.item_formula()} weighs {', '.join(never)}, which no sent "
                        "row logs; weigh outcomes the logs record (e.g. --reward clicked)")
    return rows, sp, rules_reward.from_logs(w, sp), missing


def logged_item_rewards(ds: Dataset, catalog: ItemCatalog,
                        reward: RewardWeights | str | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Catalog index and reward of every sent push, each ``(n_sent,)`` (for counting)."""
    _, sp, r, _ = _sent(ds, _weights(ds, reward))
    return catalog.indices(sp["item_id"].astype(str).tolist()), r


def _weights(ds: Dataset, reward: RewardWeights | str | None) -> RewardWeights:
    """Item-round weights of ``reward`` (None: :func:`default_reward`)."""
    return default_reward(ds) if reward is None or reward == "" else item_reward(reward)


def _logged(ds: Dataset, enc: ContextEncoder, catalog: ItemCatalog,
            w: RewardWeights) -> _Logged:
    rows, sp, r, missing = _sent(ds, w)
    pscore = item_pscore(sp, send_pscore=declared_send_pscore(ds.meta))
    item_ids = sp["item_id"].astype(str).to_numpy(dtype=object)
    cand, mask, action = _candidates(sp, catalog, catalog.indices(item_ids), rows)
    k = len(catalog) if cand is None else cand.shape[1]
    # cand_* lists are aligned with `candidates` (with the items table when it is absent)
    cand_values = {c: _stack_lists(sp[c], k) for c in enc.cand_columns if c in sp}
    pos = sp["position"].to_numpy(np.float64, na_value=np.nan) if "position" in sp else None
    position = pos.astype(np.int64) if pos is not None and np.isfinite(pos).all() else None
    names = (*enc.ctx_numeric, *(c for c, _ in enc.ctx_categorical))
    logged = {c: sp[c].to_numpy() for c in names if c in sp}
    return _Logged(rows, action.astype(np.int64), r, pscore, item_ids, cand,
                   mask if cand is not None else None, cand_values, logged, position, missing)


def iter_rounds(ds: Dataset, *, encoder: ContextEncoder | None = None,
                reward: RewardWeights | str | None = None,
                chunk_rounds: int = 0) -> Iterator[BanditRounds]:
    """Bandit rounds of a dataset's sent pushes in time order, featurised point-in-time.

    Args:
        ds: A dataset from :func:`~pushrl.data.validate.load_dataset`.
        encoder: Context columns fitted on training data; None fits them on ``ds``.
        reward: Reward weights (their :meth:`~pushrl.rules.reward.RewardWeights.item_round`
            part) or a formula (``"clicked+0.01*revenue"``); None = :func:`default_reward`.
        chunk_rounds: Yield about this many rounds at a time while the log is replayed
            (0 = all at once), so a consumer (VW training) can start early.

    Raises:
        DataError: no sent rows, no or invalid ``pscore``, or a weighted outcome that no
            sent row logs.
        ValueError: a malformed reward formula.
    """
    spec = encoder.spec if encoder is not None else FeatureSpec.fit(ds)
    catalog = ItemCatalog(ds.items, spec)
    enc = encoder or ContextEncoder.fit(ds, spec, catalog)
    w = _weights(ds, reward)
    lg = _logged(ds, enc, catalog, w)
    where = np.full(len(ds.pushes), -1, np.int64)
    where[lg.rows] = np.arange(lg.rows.size)
    per_row = lg.rows.size / max(len(ds.pushes), 1)
    chunk_rows = int(np.ceil(chunk_rounds / per_row)) if chunk_rounds else 0
    # compact: the replay's arrays hold the sent rows only, row i = lg.rows[i] (= round i)
    for done, rep in iter_replay(ds, spec, with_affinity=False, category_affinity=True,
                                 chunk_rows=chunk_rows, need=where >= 0, compact=True):
        sel = where[done]
        sel = sel[sel >= 0]
        if not sel.size:
            continue
        rows = lg.rows[sel]
        aff = rep.category_affinity[sel] if rep.category_affinity is not None else None
        ctx = make_context(
            enc, catalog, rep.features[sel], category_affinity=aff,
            candidates=None if lg.candidates is None else lg.candidates[sel],
            mask=None if lg.mask is None else lg.mask[sel],
            logged={c: v[sel] for c, v in lg.logged.items()},
            cand_values={c: v[sel] for c, v in lg.cand_values.items()},
            position=None if lg.position is None else lg.position[sel])
        yield BanditRounds(ctx, lg.action[sel], lg.reward[sel], lg.pscore[sel],
                           lg.item_id[sel], rows, enc, catalog, w, dict(lg.missing_outcomes))


def build_rounds(ds: Dataset, *, encoder: ContextEncoder | None = None,
                 reward: RewardWeights | str | None = None) -> BanditRounds:
    """All bandit rounds of a dataset's sent pushes (see :func:`iter_rounds`)."""
    return next(iter(iter_rounds(ds, encoder=encoder, reward=reward)))


@dataclass
class ShardedLog:
    """What bandit training needs from a log too large to hold: fitted once over its user
    shards (:func:`fit_sharded`), then replayed shard by shard (:func:`iter_sharded_rounds`).

    Attributes:
        plan: The shard plan.
        encoder: Context columns fitted over every shard (exactly :meth:`ContextEncoder.fit`
            of the whole log: the priors are sums, vocabularies unions).
        weights: The reward (the default decided over every shard).
        fingerprint: The data's :meth:`~pushrl.data.io.Dataset.fingerprint` (of ``split``'s
            part when given), computed over the shards.
        rejected_rows: Rows the shards' validation rejected.
        split: The part of a user split every shard is cut to (None = every user).
        n_users: Users over every shard (of ``split``'s part when given).
        of: The whole log's fingerprint (what ``split``'s record names as ``of``).
    """

    plan: ShardPlan
    encoder: ContextEncoder
    weights: RewardWeights
    fingerprint: str
    rejected_rows: int
    split: UserSplit | None = None
    n_users: int = 0
    of: str = ""


def _split_shards(p: ShardPlan, split: UserSplit | None,
                  fps: tuple[Fingerprint, Fingerprint] | None = None,
                  ) -> Iterator[tuple[Dataset, Any]]:
    """The shards of ``p``, each cut to ``split``'s part when one is given; with ``fps``
    (whole log, part) every shard's rows are added to both fingerprints on the way."""
    for k, (ds, counts) in enumerate(iter_shards(p)):
        part = split.apply(ds, check_sizes=False) if split is not None else ds
        if fps is not None:
            whole, mine = fps
            for name in ("users", "activity", "pushes") + (("items",) if k == 0 else ()):
                df = ds.table(name)
                mask = (None if part is ds or name == "items"
                        else df["user_id"].isin(part.users["user_id"]).to_numpy())
                h = whole.add(name, df)
                if part is not ds:
                    mine.add_hashes(name, df, h if mask is None else h[mask])
        yield part, counts


def fit_sharded(p: ShardPlan, reward: RewardWeights | str | None = None,
                split: UserSplit | None = None) -> ShardedLog:
    """One pass over the shards of ``p``: the feature spec, context columns and reward
    (of ``split``'s part of every shard when given), and the fingerprints of the whole log
    and of the part (:mod:`pushrl.data.fingerprint`: equal to the whole-table loader's).

    Raises:
        DataError: the log has no users.
    """
    cols = _ContextColumns()
    state = {"revenue": False, "rejected": 0, "users": 0}
    whole = Fingerprint()
    mine = Fingerprint() if split is not None else whole

    def scan(shards: Iterator[tuple[Dataset, Any]]) -> Iterator[Dataset]:
        for ds, counts in shards:
            cols.add(ds.pushes)
            state["revenue"] = bool(state["revenue"]) or _logs_revenue(ds.pushes)
            state["rejected"] = int(state["rejected"]) + sum(c.rejected for c in counts.values())
            state["users"] = int(state["users"]) + len(ds.users)
            yield ds

    shards = _split_shards(p, split, (whole, mine))
    try:
        first, first_counts = next(shards)
    except StopIteration:
        raise DataError(f"{p.path}: the log has no user shards") from None
    spec = FeatureSpec.fit_parts(first.items,
                                 scan(itertools.chain([(first, first_counts)], shards)))
    catalog = ItemCatalog(first.items, spec)
    rs = (reward if isinstance(reward, RewardWeights) else RewardWeights.parse(reward)
          if reward else _default_reward(bool(state["revenue"])))
    return ShardedLog(p, cols.encoder(spec, catalog), rs, mine.digest(), int(state["rejected"]),
                      split, int(state["users"]), whole.digest())


def iter_sharded_rounds(log: ShardedLog, *, chunk_rounds: int = 0) -> Iterator[BanditRounds]:
    """Bandit rounds shard by shard (each shard in time order, see :func:`iter_rounds`),
    with one shard's rows in memory at a time. A round's ``row`` indexes its shard's
    pushes; shards without a sent push are skipped."""
    for ds, _ in _split_shards(log.plan, log.split):
        p = ds.pushes
        if not (p["sent"].fillna(False).to_numpy(bool) & p["item_id"].notna().to_numpy()).any():
            continue
        yield from iter_rounds(ds, encoder=log.encoder, reward=log.weights,
                               chunk_rounds=chunk_rounds)
