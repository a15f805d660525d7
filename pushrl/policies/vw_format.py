"""Vectorised VW text for ``cb_adf`` rounds: :class:`ItemContext` -> VW multi-line examples.

One formatter serves training (a whole log written to a file the VW driver reads) and
decisions (a batch of rounds parsed in-process), so a policy sees exactly the features it was
trained on.

Each round becomes::

    shared |U hour_sin:0000.5000 ... |C ctx_user_feature_0=81ce... pos=1
    |I id=i0004 cat=shoes price:-0.1200 quality:1.0300 |A affinity:0001.2346
    0:-1.000000:0.01000000 |I id=i0017 ... |A affinity:0000.8711       <- logged action
    ...
    <blank line>

Namespaces: ``U`` encoded user features (:data:`~pushrl.data.features.ENCODED_NAMES`),
``C`` logged context features (``ctx_*`` columns, one-hot for strings) and the slot
position, ``I`` the item's catalog features and its id (static per item, stored in the
layout, so serving needs only catalog indices), ``A`` per-candidate features that change per
round (user-item affinity, ``cand_*`` columns).

Speed: the text is built as fixed-width byte columns with integer arithmetic (no per-value
Python formatting): a numeric value is written as ``name:SDDD.DDDD`` (zero-padded, which VW
parses as usual) or as blanks when it is zero (a zero-valued feature is a no-op in VW).
Values keep 4 decimals (labels: cost 6, probability 8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.data.features import ENCODED_NAMES
from pushrl.policies.base import ItemContext

#: Namespace letter of each feature group.
NS_USER, NS_CONTEXT, NS_ITEM, NS_CAND = "U", "C", "I", "A"
_BAD = re.compile(r"[\s:|]")
_DECIMALS = 4
#: Up to this many candidate slots, :meth:`VWFormatter.to_rounds` formats with plain strings.
SMALL_BATCH = 2048
#: Up to this many candidate slots, the candidate lines are plain strings too (a decision:
#: the byte-column machinery has a fixed cost per column, ~0.3 ms for a handful of lines).
SMALL_TEXT = 64


def vw_name(name: str) -> str:
    """A feature name VW can parse (no whitespace, ``:`` or ``|``)."""
    return _BAD.sub("_", str(name))


def _token(name: str, value: float) -> str:
    q = round(value * 10**_DECIMALS)
    if q == 0:
        return ""
    return name if q == 10**_DECIMALS else _q(name, q)


@dataclass(frozen=True)
class VWLayout:
    """How an :class:`ItemContext` maps to VW namespaces (saved with every VW artifact).

    Attributes:
        shared_names: Names of ``ctx.shared`` columns, in order.
        candidate_feature_names: Names of ``ctx.candidate_features`` columns, in order.
        static_names: Candidate columns that are item-static catalog features: written from
            :attr:`item_features` (namespace ``I``), not from the context.
        item_ids: Catalog item ids; candidate ``j`` of a context is item ``item_ids[j]``.
        item_features: ``(n_items, len(static_names))`` catalog values of the static columns.
    """

    shared_names: tuple[str, ...]
    candidate_feature_names: tuple[str, ...]
    static_names: tuple[str, ...]
    item_ids: tuple[str, ...]
    item_features: tuple[tuple[float, ...], ...]

    @property
    def user_columns(self) -> np.ndarray:
        """Indices of shared columns in namespace ``U`` (pipeline user features)."""
        return np.array([i for i, n in enumerate(self.shared_names) if n in ENCODED_NAMES], int)

    @property
    def context_columns(self) -> np.ndarray:
        """Indices of shared columns in namespace ``C`` (logged context)."""
        return np.array([i for i, n in enumerate(self.shared_names) if n not in ENCODED_NAMES],
                        int)

    @property
    def dynamic_columns(self) -> np.ndarray:
        """Indices of candidate columns in namespace ``A`` (change per round)."""
        return np.array([i for i, n in enumerate(self.candidate_feature_names)
                         if n not in self.static_names], int)

    @property
    def namespaces(self) -> dict[str, list[str]]:
        """Namespace letter -> VW feature names (for the model card)."""
        sn, cn = self.shared_names, self.candidate_feature_names
        return {NS_USER: [vw_name(sn[i]) for i in self.user_columns],
                NS_CONTEXT: [vw_name(sn[i]) for i in self.context_columns] + ["pos=<k>"],
                NS_ITEM: ["id=<item_id>", *map(vw_name, self.static_names)],
                NS_CAND: [vw_name(cn[i]) for i in self.dynamic_columns]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"shared_names": list(self.shared_names),
                "candidate_feature_names": list(self.candidate_feature_names),
                "static_names": list(self.static_names), "item_ids": list(self.item_ids),
                "item_features": [list(r) for r in self.item_features]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VWLayout:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["shared_names"]), tuple(d["candidate_feature_names"]),
                   tuple(d["static_names"]), tuple(d["item_ids"]),
                   tuple(tuple(float(v) for v in r) for r in d["item_features"]))

    @classmethod
    def from_catalog(cls, shared_names: tuple[str, ...], candidate_feature_names: tuple[str, ...],
                     item_ids: np.ndarray, catalog_features: np.ndarray,
                     catalog_feature_names: tuple[str, ...]) -> VWLayout:
        """Layout whose static item features are the catalog's (rounded as written)."""
        vals = np.round(np.asarray(catalog_features, np.float64), _DECIMALS)
        return cls(tuple(shared_names), tuple(candidate_feature_names),
                   tuple(catalog_feature_names), tuple(str(i) for i in item_ids),
                   tuple(tuple(r) for r in vals.tolist()))


# ----------------------------------------------------------------- fixed-width byte columns
#: ``_DIGITS[v]`` = the 4 ASCII digits of ``0 <= v < 10000``.
_DIGITS = (np.arange(10000)[:, None] // np.array([1000, 100, 10, 1]) % 10
           + ord("0")).astype(np.uint8)
_SPACE = ord(" ")


@dataclass(frozen=True)
class _Numeric:
    """A fixed-width numeric field ``lead + name:SI.FFFF`` (blanks where the value is 0)."""

    prefix: bytes
    n_int: int

    @property
    def width(self) -> int:
        return len(self.prefix) + 2 + self.n_int + _DECIMALS

    @classmethod
    def plan(cls, name: str, values: np.ndarray) -> _Numeric:
        big = float(np.abs(values).max()) if values.size else 0.0
        if not np.isfinite(big):
            raise ValueError(f"feature {name!r} has non-finite values; fix the feature pipeline")
        n_int = max(1, len(str(round(big * 10**_DECIMALS) // 10**_DECIMALS)))
        return cls(f" {name}:".encode(), n_int)

    def write(self, out: np.ndarray, values: np.ndarray) -> None:
        """Write ``values`` (``out.shape[:-1]``) into ``out`` (``(..., width)`` uint8)."""
        if out.ndim > 1 and out.shape[0] > 1 and not out.flags.c_contiguous:
            # a field of wider lines: build it packed, then move whole fields (the
            # column-by-column writes below are several times slower on strided rows)
            tmp = np.empty(out.shape, np.uint8)
            self.write(tmp, values)
            _void(out)[...] = _void(tmp)
            return
        q = np.rint(values * 10**_DECIMALS).astype(np.int64)
        mag = np.abs(q)
        p = len(self.prefix)
        out[..., :p] = np.frombuffer(self.prefix, np.uint8)
        out[..., p] = np.where(q < 0, ord("-"), ord("0"))
        ip = mag // 10**_DECIMALS
        c = p + 1
        for start in range(0, self.n_int, 4):  # integer digits, 4 at a time from the left
            nd = min(4, self.n_int - start)
            shift = self.n_int - start - nd
            out[..., c:c + nd] = _DIGITS[(ip // 10**shift) % 10**nd][..., 4 - nd:]
            c += nd
        out[..., c] = ord(".")
        out[..., c + 1:c + 1 + _DECIMALS] = _DIGITS[mag % 10**_DECIMALS]
        out[q == 0] = _SPACE


def _string_table(strings: list[str]) -> np.ndarray:
    """Strings -> ``(len, max_len)`` uint8 padded with blanks."""
    enc = [s.encode() for s in strings]
    lens = np.fromiter(map(len, enc), np.int64, len(enc))
    w = int(lens.max()) if lens.size else 0
    out = np.full((len(enc), w), _SPACE, np.uint8)
    # row-major: the mask's True cells are each row's first len(e) bytes, in row order
    out[np.arange(w) < lens[:, None]] = np.frombuffer(b"".join(enc), np.uint8)
    return out


@dataclass
class CBLabels:
    """Logged labels of ``n`` rounds for training text.

    Attributes:
        action: ``(n,)`` index of the logged candidate.
        cost: ``(n,)`` cost of the logged action (VW minimises cost: ``-reward``).
        pscore: ``(n,)`` logging probability of the logged action (item level).
    """

    action: np.ndarray
    cost: np.ndarray
    pscore: np.ndarray


@dataclass
class VWFormatter:
    """Writes :class:`ItemContext` rounds as VW ``cb_adf`` text (see module docstring).

    Args:
        layout: The namespace layout.
    """

    layout: VWLayout
    _items: np.ndarray = field(init=False, repr=False)
    _item_text: list[str] = field(init=False, repr=False)
    _cols: tuple[list[int], list[int], np.ndarray, list[str], list[str]] = field(
        init=False, repr=False)

    def __post_init__(self) -> None:
        lay = self.layout
        dyn = lay.dynamic_columns
        # the per-decision lookups (user / context / dynamic columns and their VW names)
        self._cols = (lay.user_columns.tolist(), lay.context_columns.tolist(), dyn,
                      [vw_name(n) for n in lay.shared_names],
                      [vw_name(lay.candidate_feature_names[j]) for j in dyn])
        names = tuple(map(vw_name, self.layout.static_names))
        rows = []
        for item_id, vals in zip(self.layout.item_ids, self.layout.item_features, strict=True):
            toks = [f"id={vw_name(item_id)}"] + [_token(n, v) for n, v in zip(names, vals,
                                                                                strict=True)]
            rows.append(f"|{NS_ITEM} " + " ".join(t for t in toks if t))
        self._items = _string_table(rows)
        self._item_text = rows

    def check(self, ctx: ItemContext) -> None:
        """Raise ``ValueError`` when ``ctx`` does not have the layout's columns."""
        lay = self.layout
        if tuple(ctx.shared_names) != lay.shared_names:
            raise ValueError(f"ctx.shared_names {tuple(ctx.shared_names)} != the policy's "
                             f"{lay.shared_names}; build the context with the policy's encoder")
        if tuple(ctx.candidate_feature_names) != lay.candidate_feature_names:
            raise ValueError(f"ctx.candidate_feature_names {tuple(ctx.candidate_feature_names)}"
                             f" != the policy's {lay.candidate_feature_names}")
        cand = np.asarray(ctx.candidates)
        bad = (cand < 0) | (cand >= len(lay.item_ids))
        if (bad & np.asarray(ctx.mask, bool)).any():
            raise ValueError(f"ctx.candidates has catalog indices outside [0, "
                             f"{len(lay.item_ids)}) (the catalog the policy was trained with); "
                             "retrain on the current items table")

    def _shared(self, ctx: ItemContext) -> tuple[list[tuple[Any, np.ndarray]], int]:
        """Field plan of the shared lines: ``[(literal bytes | _Numeric | table, values)]``."""
        shared = np.asarray(ctx.shared)
        lay = self.layout
        plan: list[tuple[Any, np.ndarray]] = [(f"shared |{NS_USER}".encode(), shared[:, 0])]
        for j in lay.user_columns:
            v = shared[:, j].astype(np.float64)
            plan.append((_Numeric.plan(vw_name(lay.shared_names[j]), v), v))
        plan.append((f" |{NS_CONTEXT}".encode(), shared[:, 0]))
        for j in lay.context_columns:
            v = shared[:, j].astype(np.float64)
            plan.append((_Numeric.plan(vw_name(lay.shared_names[j]), v), v))
        if ctx.position is not None:
            pos = np.asarray(ctx.position, np.int64)
            plan.append((_string_table([f" pos={p}" for p in range(int(pos.max()) + 1)]), pos))
        return plan, sum(_width(f) for f, _ in plan)

    def _candidate(self, ctx: ItemContext, cand: np.ndarray) -> tuple[list[tuple[Any, Any]],
                                                                       int]:
        """Field plan of the candidate lines (values shaped ``(n, k)``)."""
        lay = self.layout
        # every round with the same candidates (e.g. the whole catalog): one row of indices,
        # broadcast over the rounds when written (a copy instead of a gather per round)
        same = cand.shape[0] > 1 and bool((cand == cand[:1]).all())
        plan: list[tuple[Any, Any]] = [(self._items, cand[:1] if same else cand)]
        dyn = lay.dynamic_columns
        if dyn.size:
            plan.append((f" |{NS_CAND}".encode(), cand))
            cf = np.asarray(ctx.candidate_features)
            for j in dyn:
                v = cf[:, :, j].astype(np.float64)
                num = _Numeric.plan(vw_name(lay.candidate_feature_names[j]), v)
                plan.append(_distinct_columns(num, v) or (num, v))
        return plan, sum(_width(f) for f, _ in plan)

    def to_bytes(self, ctx: ItemContext, labels: CBLabels | None = None) -> bytes:
        """All rounds as VW text, each followed by a blank line.

        With ``labels`` the logged candidate is written first (with its label): VW's
        ``cb_adf`` learning does not depend on the order of the actions.
        """
        return self.to_array(ctx, labels).tobytes()

    def to_array(self, ctx: ItemContext, labels: CBLabels | None = None) -> np.ndarray:
        """:meth:`to_bytes` as a 1-d uint8 array (write it with ``arr.tofile(f)``)."""
        self.check(ctx)
        cand = np.asarray(ctx.candidates, np.int64)
        mask = np.asarray(ctx.mask, bool)
        n, k = cand.shape
        cand = _clip(cand, len(self._items))
        splan, ws = self._shared(ctx)
        # the candidate lines are formatted in the context's order, then (with labels) each
        # round's logged line is swapped with its first one: the same bytes as formatting
        # the swapped context (field widths depend on the set of values, not their order)
        cplan, wc = self._candidate(ctx, cand)
        lab = self._label_bytes(labels) if labels is not None else np.zeros((n, 0), np.uint8)
        wl = lab.shape[1]
        row = ws + 1 + wl + k * (wc + 1) + 1
        block = np.empty((n, row), np.uint8)
        _fill(block[:, :ws], splan)
        block[:, ws] = ord("\n")
        block[:, ws + 1:ws + 1 + wl] = lab
        lines = block[:, ws + 1 + wl:row - 1].reshape(n, k, wc + 1)
        _fill(lines[:, :, :wc], cplan)
        lines[:, :, wc] = ord("\n")
        block[:, -1] = ord("\n")
        if labels is not None:  # logged action first
            a = np.asarray(labels.action, np.int64)
            _swap_first(_void(lines), a)
            mask = mask.copy()
            _swap_first(mask, a)
        if mask.all():
            return block.reshape(-1)
        keep = np.ones(block.shape, bool)
        keep[:, ws + 1 + wl:row - 1] = np.repeat(mask, wc + 1, axis=1)
        return block[keep]

    @staticmethod
    def _label_bytes(labels: CBLabels) -> np.ndarray:
        """``(n, w)`` uint8 ``0:COST:PROB `` (the cost written even when zero)."""
        cost = np.asarray(labels.cost, np.float64)
        p = np.asarray(labels.pscore, np.float64)
        txt = [f"0:{c:.6f}:{q:.8f} " for c, q in zip(cost.tolist(), p.tolist(), strict=True)]
        return _string_table(txt)

    def to_rounds(self, ctx: ItemContext, labels: CBLabels | None = None) -> list[str]:
        """One multi-line VW example per round (shared line first).

        Large batches go through :meth:`to_bytes`. Small ones (decisions, online updates)
        write the shared lines with plain string formatting of the same rounded values (the
        vectorised path has a fixed cost per column, and shared lines are wide but few) and
        the candidate lines as byte columns; with ``labels`` the logged candidate is labelled
        in place instead of being moved first. VW sees identical features either way.
        """
        size = np.asarray(ctx.mask).size
        if size > SMALL_BATCH:
            text = self.to_bytes(ctx, labels).decode()
            return text[:-2].split("\n\n") if text else []
        self.check(ctx)
        if size <= SMALL_TEXT:
            return self._small_rounds(ctx, labels)
        shared = self._shared_text(ctx)
        cand = np.clip(np.asarray(ctx.candidates, np.int64), 0, len(self._items) - 1)
        mask = np.asarray(ctx.mask, bool)
        n, k = cand.shape
        plan, wc = self._candidate(ctx, cand)
        lab = (self._label_bytes(labels) if labels is not None else np.zeros((n, 0), np.uint8))
        wl = lab.shape[1]
        lines = np.empty((n, k, wl + wc + 1), np.uint8)
        if wl:
            lines[:, :, :wl] = _SPACE
            a = np.asarray(labels.action, np.int64)  # type: ignore[union-attr]
            lines[np.arange(n), a, :wl] = lab
        _fill(lines[:, :, wl:wl + wc], plan)
        lines[:, :, -1] = ord("\n")
        every = mask.all()
        return [sh + "\n" + (lines[i] if every else lines[i][mask[i]]).tobytes().decode()[:-1]
                for i, sh in enumerate(shared)]

    def _small_rounds(self, ctx: ItemContext, labels: CBLabels | None) -> list[str]:
        """:meth:`to_rounds` with plain string formatting throughout (a few rounds): the same
        tokens and values as the byte columns (values rounded half-even to 4 decimals, zero
        values left out), without their zero padding and blank fill."""
        _, _, dyn, _, names = self._cols
        cf = np.asarray(ctx.candidate_features, np.float64)[:, :, dyn]
        if not np.isfinite(cf).all():
            bad = names[int(np.flatnonzero(~np.isfinite(cf).all(axis=(0, 1)))[0])]
            raise ValueError(f"feature {bad!r} has non-finite values; fix the feature pipeline")
        vals = np.rint(cf * 10**_DECIMALS).astype(np.int64).tolist()
        cand = np.clip(np.asarray(ctx.candidates, np.int64), 0,
                       len(self._item_text) - 1).tolist()
        mask = np.asarray(ctx.mask, bool).tolist()
        items = self._item_text
        label: dict[int, str] = {}
        if labels is not None:
            a = np.asarray(labels.action, np.int64).tolist()
            cost = np.asarray(labels.cost, np.float64).tolist()
            prob = np.asarray(labels.pscore, np.float64).tolist()
        out = []
        for i, sh in enumerate(self._shared_text(ctx)):
            if labels is not None:
                label = {a[i]: f"0:{cost[i]:.6f}:{prob[i]:.8f} "}
            lines = [sh]
            for j, (c, m, v) in enumerate(zip(cand[i], mask[i], vals[i], strict=True)):
                if not m:
                    continue
                line = label.get(j, "") + items[c]
                if names:
                    line += f" |{NS_CAND}" + "".join(
                        " " + _q(nm, q) for nm, q in zip(names, v, strict=True) if q)
                lines.append(line)
            out.append("\n".join(lines))
        return out

    def _shared_text(self, ctx: ItemContext) -> list[str]:
        """The shared line of each round, with plain string formatting."""
        shared = np.rint(np.asarray(ctx.shared, np.float64) * 10**_DECIMALS).astype(np.int64)
        u_idx, c_idx, _, names, _ = self._cols
        out = []
        for i in range(len(ctx)):
            row = shared[i].tolist()
            u = " ".join(_q(names[j], row[j]) for j in u_idx if row[j])
            c = " ".join(_q(names[j], row[j]) for j in c_idx if row[j])
            if ctx.position is not None:
                c += f" pos={int(ctx.position[i])}"
            out.append(f"shared |{NS_USER} {u} |{NS_CONTEXT} {c}")
        return out


def _q(name: str, q: int) -> str:
    """``name:value`` from a value already scaled to an integer of 1e-4 units."""
    a = abs(q)
    return f"{name}:{'-' if q < 0 else ''}{a // 10**_DECIMALS}.{a % 10**_DECIMALS:04d}"


def _width(f: Any) -> int:
    if isinstance(f, bytes):
        return len(f)
    if isinstance(f, _Numeric):
        return f.width
    return int(f.shape[1])


def _fill(out: np.ndarray, plan: list[tuple[Any, Any]]) -> None:
    """Write a field plan into ``out`` (``(..., width)`` uint8) left to right."""
    c = 0
    for f, v in plan:
        w = _width(f)
        if isinstance(f, bytes):
            out[..., c:c + w] = np.frombuffer(f, np.uint8)
        elif isinstance(f, _Numeric):
            f.write(out[..., c:c + w], v)
        elif w:
            _void(out[..., c:c + w])[...] = _void(np.ascontiguousarray(f))[v]
        c += w


def _void(a: np.ndarray) -> np.ndarray:
    """View the last axis (contiguous bytes) as one opaque element: copies move whole rows
    instead of single bytes (~20x faster for strided destinations)."""
    return a.view(np.dtype((np.void, a.shape[-1])))[..., 0]


def _clip(cand: np.ndarray, n_items: int) -> np.ndarray:
    """``np.clip(cand, 0, n_items - 1)``; ``cand`` itself when no index is out of range."""
    if cand.size and (cand.min() < 0 or cand.max() >= n_items):
        return np.clip(cand, 0, n_items - 1)
    return cand


def _swap_first(x: np.ndarray, action: np.ndarray) -> None:
    """Swap ``x[i, 0]`` and ``x[i, action[i]]`` in place for every row ``i`` (``x`` is
    ``(n, k)``; a void view moves whole lines)."""
    r = np.arange(action.shape[0])
    first = x[:, 0].copy()
    x[:, 0] = x[r, action]
    x[r, action] = first


#: Rounds from which :func:`_distinct_columns` looks for repeated candidate columns (a
#: decision's few rounds skip the search).
DEDUP_ROUNDS = 256


def _distinct_columns(num: _Numeric, v: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A ``(table, index)`` plan entry writing the ``(n, k)`` values ``v`` of one candidate
    column with each distinct candidate column (``v[:, j]`` over all rounds, compared
    bitwise) formatted once, or None when at most half the columns repeat (or the batch is
    small). A per-category value such as the user-item affinity repeats across the items of
    a category: ~10x fewer values to format. Equal values give equal text, so the bytes are
    those of ``num.write(out, v)``."""
    n, k = v.shape
    if n < DEDUP_ROUNDS or k < 4:
        return None
    seen: dict[bytes, int] = {}
    inv = np.fromiter((seen.setdefault(b, len(seen)) for b in map(bytes, v.T.copy())),
                      np.int64, k)
    g = len(seen)
    if 2 * g > k:
        return None
    first = np.zeros(g, np.int64)
    first[inv[::-1]] = np.arange(k)[::-1]  # the first column of each group
    table = np.empty((n, g, num.width), np.uint8)
    num.write(table, v[:, first])
    return table.reshape(n * g, num.width), np.arange(n)[:, None] * g + inv[None, :]
