"""Decisions: features -> guardrails -> timing policy -> item policy -> log rows.

One vectorised path serves ``/v1/decide`` and ``/v1/decide/batch``. The logged ``pscore`` is
the probability of the logged action: ``p_send * p_item`` for a send, ``1 - p_send`` for a
wait; ``pscore_send`` is logged too (pushlog v1), so item-level OPE can divide it out.

With behaviour triggers on (:mod:`pushrl.serve.triggers`), a row whose user has a due trigger
above the scheduled push's priority is answered with that trigger (:meth:`Engine.trigger_rows`
writes its push like any other: ``pscore`` = the delay arm's probability x the item's).
"""

from __future__ import annotations

import functools
import json
import math
import operator
import secrets
import time
import uuid
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import logging

import numpy as np

from pushrl.data.features import F, N_FEATURES, ItemCatalog
from pushrl.data.split import key_uniforms
from pushrl.policies.base import (SEND, ItemPolicy, TimingContext, TimingPolicy, normalise_two,
                                  sample_two)
from pushrl.policies.timing_baselines import MostActiveHour
from pushrl.policies.item_data import ContextEncoder, make_context, pad_candidates
from pushrl.rules.guardrails import ALLOWED, REASONS, Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.rules.volume import SendPrice
from pushrl.serve import guardrails
from pushrl.serve.channels import NONE_REASON, ChannelChoice, ServerChannels
from pushrl.serve.config import ServeConfig
from pushrl.serve.errors import Conflict
from pushrl.serve.metrics import ServeMetrics
from pushrl.serve.policyset import Loaded, PolicySet, catalog_mismatch
from pushrl.serve.shards import shard_prefix
from pushrl.serve.state import ServerState
from pushrl.serve.rows import Chunks, Columns, Same
from pushrl.serve.store import OP_ADVANCE, OP_PUSH, Statement
from pushrl.serve.templates import ServerTemplates
from pushrl.units import HOUR

log = logging.getLogger("pushrl.serve")
_DECISION_SQL = (
    "INSERT INTO decisions(decision_id, seq, user_id, ts, sent, item_id, pscore, pscore_send, "
    "pscore_item, policy, item_policy, reason, candidates, context, features, holdout, "
    "p_holdout) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
#: :data:`_DECISION_SQL` of a row without candidates, context or holdout arm (the usual one),
#: with an item (``_SEND_SQL``) or without (``_WAIT_SQL``): the columns that are NULL left
#: out (they default to NULL: the same stored row; sqlite3 binds a NULL at ~1k instructions)
_SEND_SQL = (
    "INSERT INTO decisions(decision_id, seq, user_id, ts, sent, item_id, pscore, pscore_send, "
    "pscore_item, policy, item_policy, reason, features) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
_WAIT_SQL = (
    "INSERT INTO decisions(decision_id, seq, user_id, ts, sent, pscore, pscore_send, policy, "
    "reason, features) VALUES (?,?,?,?,?,?,?,?,?,?)")
_SHADOW_SQL = "INSERT INTO shadow VALUES (?,?,?,?,?,?,?)"
_TRIGGER_DECISION_SQL = (
    "INSERT INTO decisions(decision_id, seq, user_id, ts, sent, item_id, pscore, pscore_send, "
    "pscore_item, policy, item_policy, reason, features, trigger_id, holdout, p_holdout) "
    "VALUES (?,?,?,?,1,?,?,?,?,?,?,?,?,?,?,?)")
_TRIGGER_SENT_SQL = "UPDATE triggers SET status='sent', decision_id=? WHERE trigger_id=?"
#: Passes of up to this many rows run :meth:`Engine._decide_few` (plain Python numbers) when
#: it covers the configuration; larger passes, or what it does not cover, the array pass.
#: (callgrind, benchmarks/engine_pass.py, 2026-12-06: the few-rows pass costs 0.84x the
#: array pass's instructions at 24 rows, 0.90x at 32, 1.23x at 64)
FEW_ROWS = 32


@dataclass(slots=True)
class DecideRow:
    """One validated decision request (slotted: no per-row ``__dict__``, issue 20).

    Attributes:
        user_id: Opaque user id.
        u: User index in the feature state.
        ts: Unix seconds of the decision.
        candidates: Server catalog indices, or None for every item.
        context: Request context (logged as ``ctx_*``).
        horizon: Look-ahead hours, or None.
    """

    user_id: str
    u: int
    ts: int
    candidates: list[int] | None = None
    context: dict[str, Any] | None = None
    horizon: int | None = None


@dataclass
class TriggerSends:
    """Triggered pushes logged at one time (:meth:`Engine.trigger_sends`), column-wise: one
    entry per send in each list."""

    decision_ids: list[str]
    items: list[str | None]
    pscore: list[float]
    p_arm: list[float]
    policy: str
    item_policy: list[str | None]
    reasons: list[str]
    trigger_ids: list[str]
    ts: str
    holdout: int | None
    p_holdout: float | None

    def bodies(self) -> list[dict[str, Any]]:
        """One ``decide`` answer per send."""
        label, when, hold, p_hold = self.policy, self.ts, self.holdout, self.p_holdout
        held = None if hold is None else False
        return [{"decision_id": did, "send": True, "item_id": it, "pscore": p,
                 "p_send": pa, "policy": label, "item_policy": il, "reason": r, "ts": when,
                 "send_at": None, "trigger_id": tid, "holdout": held, "p_holdout": p_hold}
                for did, it, p, pa, il, r, tid in zip(
                    self.decision_ids, self.items, self.pscore, self.p_arm, self.item_policy,
                    self.reasons, self.trigger_ids, strict=True)]


#: A sent trigger's fields :meth:`Engine.trigger_sends` logs (one tuple per trigger).
#: A sent trigger's fields in its rows, one getter each (a C-level ``map`` per field: ~2x
#: cheaper than transposing a tuple per send with ``zip(*...)``).
_SEND_FIELDS = tuple(map(operator.attrgetter, ("user", "item", "pscore", "kind", "trigger_id")))


@functools.lru_cache(maxsize=64)
def _trigger_reason(kind: Any) -> str:
    """``trigger:KIND`` (cached per kind: an enum's ``value`` costs a descriptor call)."""
    return f"trigger:{kind.value}"


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_SHIFTS = np.arange(44, -4, -4, dtype=np.int64)  # the 12 hex digits of a decision count


def hex_ids(prefix: str, start: int, n: int) -> list[str]:
    """``[f"{prefix}{i:012x}" for i in range(start, start + n)]`` (decision ids), built for
    many ids as one ASCII buffer split in C (~1.2 us per id formatted one by one)."""
    if n < 64 or start + n > 16 ** 12 or not prefix.isascii() or "\n" in prefix:
        # ("%012x" %: the same digits; an f-string's format spec is parsed per id)
        return ["%s%012x" % (prefix, i) for i in range(start, start + n)]  # noqa: UP031
    digits = _HEX_DIGITS[(np.arange(start, start + n, dtype=np.int64)[:, None] >> _SHIFTS) & 15]
    k = len(prefix)
    buf = np.empty((n, k + 13), np.uint8)
    buf[:, :k] = np.frombuffer(prefix.encode("ascii"), np.uint8)
    buf[:, k:k + 12] = digits
    buf[:, -1] = ord("\n")
    return buf.tobytes()[:-1].decode("ascii").split("\n")


def _count(size: Any) -> int:
    """Elements of a ``size`` argument (an int or a shape); ``math.prod``, not ``np.prod``:
    numpy's reduction of a shape tuple costs as much as ~10 small array operations."""
    if isinstance(size, tuple):  # (what Policy.sample passes: no exception raised and caught)
        return math.prod(size)
    return operator.index(size)


class KeyedDraws(np.random.Generator):
    """Counter-based decision draws: row ``i``'s uniform is the ONE keyed hash
    (:func:`pushrl.data.split.key_uniform`) of ``(seed, stream, ts_i, user_id_i)``, so a
    decision's draw depends on who and when, never on what other users were decided before
    it in this process. That is what makes a sharded server (users spread over processes,
    :mod:`pushrl.serve.shards`) decide exactly as one process does, and a replay of the
    same requests reproducible from ``seed``.

    Only :meth:`random` is keyed (the one call :meth:`pushrl.policies.base.Policy.sample`
    makes: one uniform per row); a second call on the same object draws another keyed
    stream (the call number is part of the key).

    Args:
        bitgen: Any bit generator (unused by :meth:`random`; required by the base class).
        seed: The server's decision seed.
        stream: What the draw is for (``timing``, ``item``, ``shadow-item``, ``ahead`` ...).
        user_ids: ``(n,)`` user ids of the rows.
        ts: ``(n,)`` unix seconds (or any integer time key) of the rows.
    """

    def __init__(self, bitgen: np.random.BitGenerator, seed: int, stream: str,
                 user_ids: Sequence[str], ts: Sequence[int]) -> None:
        super().__init__(bitgen)
        self._args = (seed, stream, user_ids, ts)
        self._calls = 0

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        """Uniforms in [0, 1), one per row, shaped ``size`` (``(n,)`` or ``(n, 1)``)."""
        n = len(self._args[2])
        if size is None or out is not None or _count(size) != n:
            raise ValueError(f"KeyedDraws.random draws one number per row ({n}), got "
                             f"size={size!r}")
        self._calls += 1
        return np.array(keyed_uniforms(*self._args, self._calls), np.float64).reshape(size)


def keyed_uniforms(seed: int, stream: str, user_ids: Sequence[str], ts: Sequence[int],
                   call: int = 1) -> list[float]:
    """The uniforms of :class:`KeyedDraws` call number ``call`` as Python floats, one per
    row (the one definition of a decision draw's key; the few-rows pass reads them here)."""
    if len(user_ids) != len(ts):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
        raise ValueError(f"{len(user_ids)} user ids but {len(ts)} times")
    return key_uniforms([f"{t}:{u}" for u, t in zip(user_ids, ts)],  # noqa: B905
                        f"pushrl-draw:{seed}:{stream}:{call}:")


@functools.lru_cache(maxsize=4096)
def iso(sec: int) -> str:
    """``2026-03-02T09:00:00Z`` for unix seconds (the API's time format; cached: concurrent
    decisions share their second). A second not seen yet is the date of its day
    (:func:`_iso_day`, ``time.strftime`` of ``time.gmtime``) and its time of day by floor
    divisions: the same string (``tests/serve/test_iso.py``), without ``time.gmtime``'s
    struct per second (~19k instructions a miss, one per decision when every request
    carries its own ``ts``, issue 20)."""
    day, rem = divmod(sec, 86_400)  # (unix time has no leap seconds: a day is 86,400 s)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    two = _TWO_DIGITS
    return f"{_iso_day(day)}T{two[h]}:{two[m]}:{two[s]}Z"


#: ``00`` .. ``59`` (:func:`iso`'s hours, minutes and seconds: an f-string's ``:02d`` costs
#: a format-spec parse per field)
_TWO_DIGITS = [f"{i:02d}" for i in range(60)]


@functools.lru_cache(maxsize=64)
def _iso_day(day: int) -> str:
    """``2026-03-02`` of unix day number ``day`` (the UTC date of ``day * 86400``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


def encoding(state: ServerState, loaded: Loaded) -> tuple[ItemCatalog, ContextEncoder,
                                                         np.ndarray]:
    """Catalog, encoder and ``server item index -> encoder index`` map for item policy
    ``loaded`` over the server's items (a trained policy's own catalog order, else the
    server's catalog); refuses a policy trained on items the server does not have."""
    enc = loaded.encoder
    if isinstance(enc, ContextEncoder):
        frame = state.items_frame().set_index("item_id")
        why = catalog_mismatch(loaded, state.items)
        if why is not None:
            raise Conflict("catalog_mismatch", why)
        catalog = ItemCatalog(frame.loc[list(enc.item_ids)].reset_index(), enc.spec)
        pos = {i: j for j, i in enumerate(enc.item_ids)}
        mapping = np.array([pos.get(it.item_id, -1) for it in state.item_list], np.int64)
    else:
        catalog = state.catalog
        enc = ContextEncoder(state.spec, tuple(map(str, catalog.ids)), catalog.feature_names)
        mapping = np.arange(len(state.item_list), dtype=np.int64)
    return catalog, enc, mapping


def choose_items(policy: Any, catalog: ItemCatalog, enc: ContextEncoder, raw: np.ndarray,
                 affinity: np.ndarray | None, rng: np.random.Generator, *,
                 candidates: np.ndarray | None = None, mask: np.ndarray | None = None,
                 logged: dict[str, np.ndarray] | None = None) -> tuple[list[str], np.ndarray]:
    """The server's item step for ``k`` sends: build the ONE item context
    (:func:`~pushrl.policies.item_data.make_context`) and let ``policy`` choose.

    Args:
        policy: The item policy (``decide_batch``).
        catalog: Its catalog (:func:`encoding`).
        enc: Its context encoder.
        raw: ``(k, N_FEATURES)`` raw user features at the decision.
        affinity: ``(k, n_categories)`` category affinity, or None.
        rng: Sampling generator.
        candidates: ``(k, m)`` padded catalog indices (None: every item).
        mask: ``(k, m)`` valid candidates.
        logged: Request context columns ``ctx_*``.

    Returns:
        Chosen item ids ``[k]`` and their item-level probabilities ``(k,)``.
    """
    ctx = make_context(enc, catalog, raw, category_affinity=affinity, candidates=candidates,
                       mask=mask, logged=logged)
    return decide_items(policy, catalog, ctx, rng)


def decide_items(policy: Any, catalog: ItemCatalog, ctx: Any, rng: np.random.Generator
                 ) -> tuple[list[str], np.ndarray]:
    """:func:`choose_items` given the item context ``ctx`` of ``k`` rows."""
    d = policy.decide_batch(ctx, rng)
    chosen = np.asarray(ctx.candidates)[np.arange(len(ctx)), d.action]
    return [str(catalog.ids[c]) for c in chosen], np.asarray(d.pscore, np.float64)


class Engine:
    """Makes decisions against a :class:`ServerState` with the current :class:`PolicySet`."""

    def __init__(self, state: ServerState, cfg: ServeConfig, policies: PolicySet,
                 metrics: ServeMetrics, *, kill_switch: bool = False) -> None:
        self.state = state
        self.cfg = cfg
        self.policies = policies
        self.metrics = metrics
        self.kill_switch = kill_switch
        #: Seed of the keyed decision draws (:meth:`draws`); fresh entropy without one.
        self.seed = secrets.randbits(63) if cfg.seed is None else int(cfg.seed)
        self._bitgen = np.random.PCG64(self.seed)
        # decision ids: a random per-process prefix and a counter (uuid4 costs a syscall);
        # a shard's ids start with its number, so the router routes feedback without a lookup
        self._id_prefix = ((shard_prefix(cfg.shard[0]) if cfg.shard else "")
                           + uuid.uuid4().hex[:16])
        self._id_count = 0
        self._ctx_cache: dict[int, tuple[Any, ItemCatalog, ContextEncoder, np.ndarray]] = {}
        #: :meth:`_shared_items` per item policy (by id): ``(policy, key, catalog, value)``
        self._shared: dict[int, tuple[Any, Any, ItemCatalog, Any]] = {}
        self._counter_cache: dict[str, tuple[Any, Any]] = {}
        self._guard: tuple[Loaded | None, Guardrails] = (None, Guardrails())
        #: The template slot of sent pushes (``--templates``), None without templates.
        self.templates: ServerTemplates | None = None
        #: The channel slot of sent pushes (``--channels``), None without channels.
        self.channels: ServerChannels | None = None
        #: The global volume target's price on a send (``--volume``), None without one.
        self.price = None if cfg.volume is None else SendPrice(cfg.volume)
        #: The holdout's incumbent policy (loaded once per holdout), see :meth:`incumbent`.
        self._incumbent: tuple[Holdout | None, Any] = (None, None)
        #: Passes of up to this many rows try :meth:`_decide_few` (0: always the array pass).
        self.few_rows = FEW_ROWS

    def incumbent(self) -> tuple[str, Any] | None:
        """``(label, policy)`` deciding for held-out users (:mod:`pushrl.rules.holdout`
        ``incumbent``), None when they get no push."""
        h = self.state.held_out.holdout
        if h is None or not h.has_incumbent:
            return None
        if self._incumbent[0] is not h:
            from pushrl.compare.runner import PolicySpec

            self._incumbent = (h, PolicySpec.parse(h.incumbent).load())
        return f"incumbent:{h.incumbent}", self._incumbent[1]

    def _guard_held(self, held: np.ndarray | None) -> np.ndarray | None:
        """The HELD_OUT guardrail's mask: none when an incumbent decides for them."""
        return None if held is None or self.incumbent() is not None else held

    @property
    def guardrails(self) -> Guardrails:
        """The guardrails applied with the active timing policy
        (:func:`pushrl.serve.guardrails.effective`; resolved once per policy swap)."""
        t = self.policies.timing
        if self._guard[0] is not t:
            self._guard = (t, guardrails.effective(self.cfg.guardrails, t.policy, t.label))
        return self._guard[1]

    def _counters(self, label: str) -> tuple[Any, Any]:
        """The ``decisions`` and ``sends`` counters of a policy label (``labels()`` is a
        locked dict lookup: cached, as it runs for every pass)."""
        got = self._counter_cache.get(label)
        if got is None:
            got = (self.metrics.decisions.labels(label), self.metrics.sends.labels(label))
            self._counter_cache[label] = got
        return got

    def draws(self, stream: str, rows: Sequence[DecideRow],
              ts: Sequence[int] | None = None) -> KeyedDraws:
        """The keyed random draws of ``rows`` (every random decision of the engine takes its
        uniforms here: :class:`KeyedDraws`); ``ts`` overrides the rows' times."""
        return KeyedDraws(self._bitgen, self.seed, stream, [r.user_id for r in rows],
                          [r.ts for r in rows] if ts is None else ts)

    def _block(self, n: int) -> tuple[int, list[str]]:
        """One block of ``n`` journal seq numbers (``seq0 + 1 .. seq0 + n``; refused while
        the state is frozen) and their ``n`` decision ids, in order: ``(seq0, ids)``."""
        seq0 = self.state.take_seqs(n)
        id0, self._id_count = self._id_count, self._id_count + n
        return seq0, hex_ids(self._id_prefix, id0 + 1, n)

    # ------------------------------------------------------------------ item contexts
    def _encoding(self, loaded: Loaded) -> tuple[ItemCatalog, ContextEncoder, np.ndarray]:
        """:func:`encoding` of a policy, cached until the catalog changes."""
        st = self.state
        key = id(loaded.policy)
        hit = self._ctx_cache.get(key)
        if hit is not None and hit[0] is st.catalog:
            return hit[1], hit[2], hit[3]
        catalog, enc, mapping = encoding(st, loaded)
        self._ctx_cache[key] = (st.catalog, catalog, enc, mapping)
        return catalog, enc, mapping

    def _choose_items(self, loaded: Loaded, rows: list[DecideRow], u: np.ndarray,
                      raw: np.ndarray, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        """Item id and item-level probability for each of ``rows``."""
        catalog, _, ctx = self._item_context(loaded, rows, u, raw)
        return decide_items(loaded.policy, catalog, ctx, rng)

    def _shared_items(self, loaded: Loaded, row: DecideRow, u: np.ndarray, raw: np.ndarray
                      ) -> tuple[list[float], list[float], list[str]] | None:
        """For an item policy whose distribution is the same for every row without
        candidates (:meth:`~pushrl.policies.base.ItemPolicy.shared_key`): that distribution,
        its cumulative sums (as :meth:`~pushrl.policies.base.Policy.sample` sums them) and
        the candidates' item ids, computed once by the array step on ``row`` (``u``, ``raw``:
        its ``(1,)`` user and ``(1, N_FEATURES)`` features) and kept until the key or the
        catalog changes. None for other policies."""
        pol = loaded.policy
        key = pol.shared_key() if isinstance(pol, ItemPolicy) else None
        if key is None:
            return None
        hit = self._shared.get(id(pol))
        catalog = self._encoding(loaded)[0]
        if hit is not None and hit[0] is pol and hit[1] == key and hit[2] is catalog:
            return hit[3]
        catalog, _, ctx = self._item_context(loaded, [row], u, raw)
        dist = pol.action_dist(ctx)
        cand = np.asarray(ctx.candidates)[0]
        got = (dist[0].tolist(), np.cumsum(dist, axis=1)[0].tolist(),
               [str(catalog.ids[c]) for c in cand.tolist()])
        self._shared[id(pol)] = (pol, key, catalog, got)
        return got

    def _item_context(self, loaded: Loaded, rows: list[DecideRow], u: np.ndarray,
                      raw: np.ndarray) -> tuple[ItemCatalog, ContextEncoder, Any]:
        """The item policy's catalog, encoder and the ONE item context of ``rows``
        (:func:`~pushrl.policies.item_data.make_context`)."""
        catalog, enc, mapping = self._encoding(loaded)
        if all(r.candidates is None for r in rows):
            cand, mask = None, None
        else:
            cand, mask = pad_candidates([mapping[r.candidates] if r.candidates is not None
                                         else np.arange(len(catalog)) for r in rows])
        ncat = enc.spec.n_categories
        aff = (self.state.fs.affinity(u, np.broadcast_to(np.arange(ncat), (len(u), ncat)))
               if ncat else None)
        keys = sorted({k for r in rows if r.context for k in r.context})
        logged = {f"ctx_{k}": np.array([(r.context or {}).get(k) for r in rows], dtype=object)
                  for k in keys} or None
        return catalog, enc, make_context(enc, catalog, raw, category_affinity=aff,
                                          candidates=cand, mask=mask, logged=logged)

    # ------------------------------------------------------------------ decisions
    def decide(self, rows: list[DecideRow]) -> tuple[list[dict[str, Any]], list[Statement]]:
        """Decide for ``rows`` (distinct users); returns response bodies and log rows."""
        if len(rows) <= self.few_rows:
            got = self._decide_few(rows)
            if got is not None:
                return got
        st, ps = self.state, self.policies
        u = np.array([r.u for r in rows], np.int64)
        ts = np.array([r.ts for r in rows], np.int64)
        b = ts // HOUR
        st.check_clock(u, b)
        if not st.item_list:
            raise Conflict("no_items", "the item catalog is empty; add items with "
                           "PUT /v1/items/{item_id} or start the server with --catalog DIR")
        self.check_items(ps.item, rows)
        timing = ps.safe if self.kill_switch else ps.timing
        stmts = st.op(OP_ADVANCE, u, b)
        held = st.held_out.mask(u)
        try:
            if st.triggers is not None and not self.kill_switch:
                done = self._due_triggers(rows, u, ts, stmts)
                if done:
                    return self._decide_rest(rows, u, ts, b, timing, done, stmts, held)
            # one offset lookup: local time at the request (guardrails), at the bucket (features)
            at, start = st.fs.decision_clock(u, ts)
            allowed, reasons, today, days = guardrails.check(
                self.guardrails, st.sends, u, ts, st.fs, st.subscriptions,
                self._guard_held(held), local=at)
            return self._decide(rows, u, ts, b, days, allowed, reasons, today, timing, stmts,
                                (start[0], start[1]), held=held)
        except BaseException:
            st.pending.extend(stmts)  # the state moved: journal it with the next commit
            raise

    def _decide_rest(self, rows: list[DecideRow], u: np.ndarray, ts: np.ndarray,
                     b: np.ndarray, timing: Loaded, done: dict[int, dict[str, Any]],
                     stmts: list[Statement], held: np.ndarray | None = None,
                     ) -> tuple[list[dict[str, Any]], list[Statement]]:
        """The rows a due trigger did not answer, decided as usual (after the triggers'
        sends: those count in the guardrails); ``held``: the rows' live-holdout mask."""
        keep = np.array([i for i in range(len(rows)) if i not in done], np.int64)
        out: list[dict[str, Any]] = [done.get(i, {}) for i in range(len(rows))]
        if keep.size:
            ku, kts = u[keep], ts[keep]
            kh = None if held is None else held[keep]
            allowed, reasons, today, days = guardrails.check(
                self.guardrails, self.state.sends, ku, kts, self.state.fs,
                self.state.subscriptions, self._guard_held(kh))
            o, stmts = self._decide([rows[i] for i in keep.tolist()], ku, kts, b[keep], days,
                                    allowed, reasons, today, timing, stmts, held=kh)
            for i, d in zip(keep.tolist(), o, strict=True):
                out[i] = d
        return out, stmts

    def _due_triggers(self, rows: list[DecideRow], u: np.ndarray, ts: np.ndarray,
                      stmts: list[Statement]) -> dict[int, dict[str, Any]]:
        """Answer the rows whose user has a due trigger that outranks the scheduled push
        (:meth:`~pushrl.serve.triggers.ServerTriggers.resolve`: the ONE guardrails with
        every push counted; a blocked trigger is re-queued and the row decided as usual).
        Returns ``{row: response}`` for the rows a trigger was sent to."""
        st = self.state
        trig = st.triggers
        assert trig is not None
        stmts += trig.advance(st, int(ts.max()))
        sel = np.flatnonzero(trig.due_users(u, ts, outranking=True))
        if not sel.size:
            return {}
        done: dict[int, dict[str, Any]] = {}
        for t in np.unique(ts[sel]).tolist():
            idx = sel[ts[sel] == t]
            res, s = trig.resolve(st, u[idx], int(t), self.guardrails,
                                  None if self.channels is None
                                  else self.channels.push_mask(u[idx]))
            stmts += s
            if not res.sent:
                continue
            row_of = {int(u[i]): int(i) for i in idx.tolist()}
            sends = [(tr, row_of[tr.user]) for tr in res.sent]
            outs = self.trigger_rows([tr for tr, _ in sends], [rows[i].user_id for _, i in sends],
                                     int(t), stmts, advance=False)
            for (_, i), o in zip(sends, outs, strict=True):
                if rows[i].horizon is not None:
                    o["send_at"] = o["ts"]
                done[i] = o
        return done

    def trigger_rows(self, sent: list[Any], user_ids: list[str], ts: int,
                     stmts: list[Statement], *, advance: bool) -> list[dict[str, Any]]:
        """:meth:`trigger_sends` as one decision body per send (``decide``'s answers)."""
        return self.trigger_sends(sent, user_ids, ts, stmts, advance=advance).bodies()

    def trigger_sends(self, sent: list[Any], user_ids: list[str], ts: int,
                      stmts: list[Statement], *, advance: bool) -> TriggerSends:
        """Log the pushes of triggers being sent at ``ts`` like any push (a ``decisions`` row
        with ``trigger_id``, the feature state's push, the guardrails' send history) and
        return them column-wise. A trigger without item (win-back) gets the active item
        policy's item. The rows of all sends are one statement per table (a pull of 10k
        sends builds them with ``zip``, not per send).

        Args:
            sent: :class:`~pushrl.rules.triggers.Trigger` s being sent (distinct users).
            user_ids: Their user ids.
            ts: Unix seconds of the send.
            stmts: Journal rows (appended to).
            advance: Move the users' feature clocks to ``ts`` first (the pull; ``decide``
                already did).
        """
        st, ps = self.state, self.policies
        trig = st.triggers
        assert trig is not None
        n = len(sent)
        # the sends' fields column-wise, a C-level pass each (not a comprehension per field)
        ul, it_idx, p_tr, kinds, tids = (list(map(g, sent)) for g in _SEND_FIELDS)
        u = np.array(ul, np.int64)
        b = np.full(n, ts // HOUR, np.int64)
        if advance:
            st.check_clock(u, b)
            stmts += st.op(OP_ADVANCE, u, b)
        raw = st.fs.features(u, b)
        item_list = st.item_list
        items: list[str | None] = [None if i is None else item_list[i].item_id
                                   for i in it_idx]
        pl = [1.0] * n
        item_label: list[str | None] = [None] * n
        need = [i for i, x in enumerate(it_idx) if x is None] if None in it_idx else []
        if need:
            ix = np.array(need, np.int64)
            need_rows = [DecideRow(user_ids[i], int(u[i]), ts) for i in need]
            chosen, pi = self._choose_items(ps.item, need_rows, u[ix], raw[ix],
                                            self.draws("item", need_rows))
            for j, i in enumerate(need):
                items[i], pl[i], item_label[i] = chosen[j], float(pi[j]), ps.item.label
        stmts += st.op(OP_PUSH, u, b)
        days = st.fs.local_time_at(u, np.full(n, ts, np.int64))[2].tolist()
        label = trig.policy.label
        # a sent trigger's user is treated (held-out users are never sent: HELD_OUT guardrail)
        p_hold = st.held_out.share
        arm = None if p_hold is None else 0
        st.sends.record_many(ul, ts, days)  # distinct users (one due send each)
        seq0, dids = self._block(n)
        p_arm = [float(p or 1.0) for p in p_tr]
        pscore = [a * q for a, q in zip(p_arm, pl, strict=True)]
        reasons = list(map(_trigger_reason, kinds))
        rb, w = np.ascontiguousarray(raw).tobytes(), raw.shape[1] * raw.itemsize
        # column-wise: the row tuples (and feature BLOBs) are made by the writer, or never
        # (a pull's bulk record stores the columns, serve/bulk_sends.py)
        rows = Columns(n, dids, range(seq0 + 1, seq0 + n + 1), user_ids, Same(ts), items,
                       pscore, p_arm, pl, Same(label), item_label, reasons, Chunks(rb, w),
                       tids, Same(arm), Same(p_hold))
        marks = Columns(n, dids, tids)
        if n == 1:  # decide's one send: plain statements
            stmts += [(_TRIGGER_DECISION_SQL, next(rows.rows())),
                      (_TRIGGER_SENT_SQL, next(marks.rows()))]
        else:
            stmts += [(_TRIGGER_DECISION_SQL, rows), (_TRIGGER_SENT_SQL, marks)]
        decisions, sends = self._counters(label)
        decisions.inc(n)
        sends.inc(n)
        return TriggerSends(dids, items, pscore, p_arm, label, item_label, reasons, tids,
                            iso(ts), arm, p_hold)

    def check_row(self, row: DecideRow, index: int = 0) -> None:
        """Everything :meth:`decide` would refuse for this row alone (so a micro-batch can
        drop it without failing the others); ``index`` names it in messages."""
        st = self.state
        if row.ts // HOUR < st.fs.clock(row.u):
            st.check_clock(np.array([row.u]), np.array([row.ts // HOUR]), first=index)
        if not st.item_list:
            raise Conflict("no_items", "the item catalog is empty; add items with "
                           "PUT /v1/items/{item_id} or start the server with --catalog DIR")
        if row.candidates is not None:
            self.check_items(self.policies.item, [row])

    def check_items(self, loaded: Loaded, rows: list[DecideRow]) -> None:
        """Refuse candidates the item policy cannot score (before any state changes)."""
        _, _, mapping = self._encoding(loaded)
        for i, r in enumerate(rows):
            if r.candidates is not None and (mapping[r.candidates] < 0).any():
                raise Conflict("item_not_in_policy", f"request {i}: a candidate is unknown "
                               f"to item policy {loaded.label} (trained on another catalog)")

    def _gates(self, dist: np.ndarray, raw: np.ndarray, tctx: TimingContext,
               held: np.ndarray | None, label: str) -> tuple[np.ndarray, list[str]]:
        """The timing distribution ``(n, 2)`` after the volume price, the uplift gate and the
        holdout's incumbent (before sampling, so ``pscore`` stays exact), and each row's
        policy label."""
        labels = [label] * len(raw)
        if self.kill_switch:
            return dist, labels
        if self.price is not None:  # the global volume target
            dist = self.price.apply(dist, self.price.value(raw))
        if self.cfg.uplift is not None:  # send only if it helps
            g = self.cfg.uplift
            hsp = (self.state.fs.hours_since_purchase(np.asarray(tctx.user_index), tctx.bucket)
                   if g.needs_purchases else None)
            dist = g.apply(dist, raw, hsp)
        inc = None if held is None or not held.any() else self.incumbent()
        if inc is not None and held is not None:
            # held-out users: the incumbent's distribution, never the active policy's
            dist = np.array(dist, np.float64, copy=True)
            dist[held] = np.asarray(inc[1].action_dist(tctx), np.float64)[held]
            for i in np.flatnonzero(held).tolist():
                labels[i] = inc[0]
        return dist, labels

    def _decide(self, rows: list[DecideRow], u: np.ndarray, ts: np.ndarray, b: np.ndarray,
                days: np.ndarray, allowed: np.ndarray, reasons: list[str | None],
                today: np.ndarray, timing: Loaded, stmts: list[Statement],
                clock: tuple[np.ndarray, np.ndarray] | None = None,
                held: np.ndarray | None = None,
                ) -> tuple[list[dict[str, Any]], list[Statement]]:
        st, ps, n = self.state, self.policies, len(rows)
        raw = st.fs.features(u, b, clock=clock, advanced=True)  # decide advanced them
        tctx = TimingContext(raw, allowed, u, b, st.fs, today)
        # a guardrail blocked row is one with a reason (guardrails.check: reason None where
        # allowed); counted in Python: most passes have none
        n_blocked = n if self.kill_switch else sum(r is not None for r in reasons)
        if (n_blocked and not self.kill_switch
                and isinstance(timing.policy, TimingPolicy)):
            # one evaluation gives the decision and what the policy wanted where blocked
            dist, free = timing.policy.action_dist_unguarded(tctx)
        else:
            dist, free = timing.policy.action_dist(tctx), None
        dist, labels = self._gates(dist, raw, tctx, held, timing.label)
        td = timing.policy.sample(dist, self.draws("timing", rows))
        send = np.asarray(td.action) == SEND
        p_send = np.asarray(td.action_dist, np.float64)[:, SEND]  # (read only)
        why = (["policy"] * n if not n_blocked else
               self._reasons(tctx, np.ones(n, bool) if self.kill_switch else ~allowed,
                             reasons, free))
        items: list[str | None] = [None] * n
        n_send = int(np.count_nonzero(send))
        pss_l = p_send.tolist()
        p_item: np.ndarray | None = None  # (only with sends: the channel slot reads it)
        if n_send:
            idx = np.flatnonzero(send)
            srows = [rows[i] for i in idx]
            chosen, pi = self._choose_items(ps.item, srows, u[idx], raw[idx],
                                            self.draws("item", srows))
            for j, i in enumerate(idx.tolist()):
                items[i] = chosen[j]
            p_item = np.ones(n)
            p_item[idx] = pi
            ps_l = np.where(send, p_send * p_item, 1.0 - p_send).tolist()
            pi_l = p_item.tolist()
        else:  # no send: pscore = 1 - p_send (the same double subtraction), p_item 1
            ps_l, pi_l = [1.0 - p for p in pss_l], [1.0] * n
        chan = None
        if self.channels is not None and n_send:  # the channel slot (serve/channels.py)
            chan, send = self._channel_step(rows, u, ts, b, raw, send, items, why)
            n_send = int(np.count_nonzero(send))
        if n_send:
            stmts += st.op(OP_PUSH, u[send], b[send])
            for i in np.flatnonzero(send).tolist():
                st.sends.record(int(u[i]), "", int(ts[i]), int(days[i]))
        p_hold = st.held_out.share  # the holdout arm's probability (None: no holdout)
        arm_l: list[bool | None] = [None] * n if held is None else held.tolist()
        out = self._log_rows(rows, ts.tolist(), send.tolist(), items, ps_l, pss_l, pi_l,
                             labels, why, arm_l, p_hold, np.ascontiguousarray(raw).tobytes(),
                             stmts)
        if chan is not None and self.channels is not None:
            assert p_item is not None  # a channel step ran: there were sends
            stmts += self.channels.apply(out, chan, p_item)
        if self.templates is not None and n_send:  # the template slot (serve/templates.py)
            stmts += self.templates.apply(st, out, u, b, raw, send)
        if self.price is not None:
            self.price.observe(int(b.max()), float(send.sum()),
                               len(st.users) - st.subscriptions.n_unsubscribed)
        decisions, sends = self._counters(timing.label)
        decisions.inc(n)
        sends.inc(n_send)
        if ps.shadow_timing is not None or ps.shadow_item is not None:
            try:
                stmts += self._shadow(rows, u, raw, tctx, send, p_send,
                                      [str(o["decision_id"]) for o in out])
            except Exception as exc:  # a shadow policy must never break a live decision
                log.warning("shadow decision failed: %s: %s", type(exc).__name__, exc)
                self.metrics.shadow.labels("error").inc(n)
        for i, r in enumerate(rows):
            if r.horizon is not None:
                out[i]["send_at"] = (out[i]["ts"] if send[i] else
                                     self._look_ahead(timing, r, int(u[i]), int(ts[i])))
        return out, stmts

    def _log_rows(self, rows: list[DecideRow], ts_l: list[int], send_l: list[bool],
                  items: list[str | None], ps_l: list[float], pss_l: list[float],
                  pi_l: list[float], labels: list[str], why: list[str],
                  arm_l: list[bool | None], p_hold: float | None, rb: bytes,
                  stmts: list[Statement]) -> list[dict[str, Any]]:
        """The decision rows (appended to ``stmts``) and response bodies of a pass, from its
        columns; ``rb``: the ``(n, N_FEATURES)`` float32 raw features as bytes."""
        st, item_label = self.state, self.policies.item.label
        n = len(rows)
        if not (n == len(ts_l) == len(send_l) == len(items) == len(ps_l) == len(pss_l)
                == len(pi_l) == len(labels) == len(why) == len(arm_l)):
            raise ValueError(f"_log_rows: the columns of {n} rows differ in length")
        w = len(rb) // n if n else 0
        seq, dids = self._block(n)
        bare = p_hold is None  # (then a row without candidates, context or arm: _SEND/_WAIT_SQL)
        out = []
        end, when, at = 0, None, ""  # (the feature bytes' end; the last ts and its iso)
        # one zip of the columns (row by row: ~20 instructions of bytecode less per row than
        # indexing each column; issue 20)
        for r, did, t, sent, item, ps, pss, pi, label, reason, arm in zip(  # noqa: B905
                rows, dids, ts_l, send_l, items, ps_l, pss_l, pi_l, labels, why, arm_l):
            seq += 1
            start, end = end, end + w
            feats = rb[start:end]
            if t != when:  # (a pass's rows often share their second)
                when, at = t, iso(t)
            if bare and arm is None and r.candidates is None and r.context is None:
                # the NULL columns left out (the same stored row: they default to NULL)
                if item is None:
                    row: tuple[Any, ...] = (_WAIT_SQL, (
                        did, seq, r.user_id, t, 1 if sent else 0, ps, pss, label, reason,
                        feats))
                else:
                    row = (_SEND_SQL, (
                        did, seq, r.user_id, t, 1 if sent else 0, item, ps, pss,
                        pi if item else None, label, item_label if item else None, reason,
                        feats))
            else:
                row = (_DECISION_SQL, (
                    did, seq, r.user_id, t, 1 if sent else 0, item, ps, pss,
                    pi if item else None, label, item_label if item else None, reason,
                    None if r.candidates is None else json.dumps(
                        [st.item_list[c].item_id for c in r.candidates]),
                    None if r.context is None else json.dumps(r.context, sort_keys=True),
                    feats, None if arm is None else int(bool(arm)), p_hold))
            stmts.append(row)
            out.append({"decision_id": did, "send": sent, "item_id": item,
                        "pscore": ps, "p_send": pss, "policy": label,
                        "item_policy": item_label if sent else None, "reason": reason,
                        "ts": at, "send_at": None, "holdout": arm, "p_holdout": p_hold})
        return out

    # ------------------------------------------------------------------ few-rows pass
    def _decide_few(self, rows: list[DecideRow]
                    ) -> tuple[list[dict[str, Any]], list[Statement]] | None:
        """:meth:`decide` of a few rows in plain Python numbers for the configuration it
        covers (push only, no triggers, templates, shadow, volume price, uplift gate or
        holdout; most-active-hour timing; no candidates, context or horizon; any item
        policy: :meth:`_items_few`), else None before anything changed (the array pass
        decides then, and refuses what it refuses). The same rules through their scalar
        forms (:meth:`~pushrl.data.features.FeatureState.features_few`,
        :meth:`~pushrl.rules.guardrails.Guardrails.verdict_few`, :meth:`~pushrl.policies.
        timing_baselines.MostActiveHour.send_few`, :func:`~pushrl.policies.base.
        normalise_two`, :func:`~pushrl.policies.base.sample_two`): the same answers and
        journal rows bit for bit (``tests/serve/test_engine_few.py``)."""
        st, ps = self.state, self.policies
        timing = ps.timing
        if (self.kill_switch or st.triggers is not None or self.channels is not None
                or self.templates is not None or self.price is not None
                or self.cfg.uplift is not None or ps.shadow_timing is not None
                or ps.shadow_item is not None or st.held_out.holdout is not None
                or not st.item_list or type(timing.policy) is not MostActiveHour):
            return None
        ul, tl, bl, ids = [], [], [], []
        for r in rows:
            if r.candidates is not None or r.context is not None or r.horizon is not None:
                return None
            t = r.ts
            ul.append(r.u)
            tl.append(t)
            bl.append(t // HOUR)
            ids.append(r.user_id)
        fs = st.fs
        if len(set(ul)) < len(ul) or fs.behind_few(ul, bl):
            return None  # (the array pass refuses a decision before the user's state)
        cl = fs.decision_clock_few(ul, tl)
        if cl is None:
            return None
        self._encoding(ps.item)  # (check_items without candidates: refuses a mismatched catalog)
        stmts = st.advance_few(ul, bl)
        try:
            return self._pass_few(rows, ul, tl, bl, ids, cl, timing, stmts), stmts
        except BaseException:
            st.pending.extend(stmts)  # the state moved: journal it with the next commit
            raise

    def _pass_few(self, rows: list[DecideRow], ul: list[int], tl: list[int], bl: list[int],
                  ids: list[str], cl: list[tuple[int, int, int, int, int, int]],
                  timing: Loaded, stmts: list[Statement]) -> list[dict[str, Any]]:
        """:meth:`_decide_few` after the advance: guardrails, features, timing, items, rows
        (``ul``, ``tl``, ``bl``, ``ids``: the rows' users, times, buckets and user ids)."""
        st, ps, n = self.state, self.policies, len(rows)
        hours, _, days, b_hour, b_dow, _ = map(list, zip(*cl))  # noqa: B905 (6-tuples)
        today, week = st.sends.counts_few(ul, bl, days)
        subs = st.subscriptions
        codes = self.guardrails.verdict_few(
            hours, today, week, None if subs.n_unsubscribed == 0 else subs.get_few(ul))
        allowed = [c == ALLOWED for c in codes]
        feats = st.fs.features_few(ul, bl, b_hour, b_dow)
        gap = feats[F["hours_since_push"]::N_FEATURES].tolist()
        pol = timing.policy
        assert isinstance(pol, MostActiveHour)
        # the policy with every slot allowed (what it wanted), then the guardrails' mask
        raw = [(0.0, 1.0) if s else (1.0, 0.0)
               for s in pol.send_few(st.fs, ul, b_hour, b_dow, gap, today)]
        dist = normalise_two(raw, [(True, a) for a in allowed])
        act, _ = sample_two(dist, keyed_uniforms(self.seed, "timing", ids, tl))
        send = [a == SEND for a in act]
        pss_l = [d[SEND] for d in dist]
        why = ["policy"] * n
        if not all(allowed):
            free = normalise_two(raw, None)
            for i, c in enumerate(codes):
                if c != ALLOWED:
                    why[i] = f"guardrail:{REASONS[c]}"
                    if free[i][SEND] > 0:
                        self.metrics.guardrail_blocks.labels(REASONS[c]).inc()
        items: list[str | None] = [None] * n
        sel = [i for i in range(n) if send[i]]
        if sel:
            srows = [rows[i] for i in sel]
            su = np.array([ul[i] for i in sel], np.int64)
            raw_s = np.frombuffer(feats, np.float32).reshape(n, -1)[sel]
            chosen, pi = self._items_few(ps.item, srows, su, raw_s)
            pi_l = [1.0] * n
            for j, p in enumerate(pi):
                items[sel[j]], pi_l[sel[j]] = chosen[j], p
            # (n each)
            ps_l = [p * q if s else 1.0 - p for p, q, s in zip(pss_l, pi_l, send)]  # noqa: B905
            stmts += st.op(OP_PUSH, su, np.array([bl[i] for i in sel], np.int64))
            for i in sel:
                st.sends.record(ul[i], "", tl[i], days[i])
        else:
            ps_l, pi_l = [1.0 - p for p in pss_l], [1.0] * n
        out = self._log_rows(rows, tl, send, items, ps_l, pss_l, pi_l, [timing.label] * n,
                             why, [None] * n, st.held_out.share, feats.tobytes(), stmts)
        decisions, sends = self._counters(timing.label)
        decisions.inc(n)
        if sel:
            sends.inc(len(sel))
        return out

    def _items_few(self, loaded: Loaded, rows: list[DecideRow], u: np.ndarray,
                   raw: np.ndarray) -> tuple[list[str], list[float]]:
        """:meth:`_choose_items` of the few-rows pass: with a shared distribution
        (:meth:`_shared_items`) the draw of :func:`~pushrl.policies.base._sample` row by row
        (the uniform times the last cumulative sum, the number of sums at or below it, capped
        at the last candidate: ``bisect_right`` on the non-decreasing sums), else the array
        step."""
        shared = self._shared_items(loaded, rows[0], u[:1], raw[:1])
        if shared is None:
            chosen, pi = self._choose_items(loaded, rows, u, raw, self.draws("item", rows))
            return chosen, pi.tolist()
        dist, cdf, ids = shared
        last, top = cdf[-1], len(cdf) - 1
        act = [min(bisect_right(cdf, x * last), top) for x in keyed_uniforms(
            self.seed, "item", [r.user_id for r in rows], [r.ts for r in rows])]
        return [ids[a] for a in act], [dist[a] for a in act]

    def _channel_step(self, rows: list[DecideRow], u: np.ndarray, ts: np.ndarray,
                      b: np.ndarray, raw: np.ndarray, send: np.ndarray,
                      items: list[str | None], why: list[str]
                      ) -> tuple[ChannelChoice, np.ndarray]:
        """The channel of each send (:meth:`ServerChannels.decide`) and the sends left: a
        "none" is not sent (its row keeps the item and the timing x item ``pscore``; reason
        ``channel:none``, set in ``why``)."""
        assert self.channels is not None
        chan = self.channels.decide(self, rows, u, ts, b, raw, send, items)
        none = chan.rows[chan.arm < 0]
        if none.size:
            send = send.copy()
            send[none] = False
            for i in none.tolist():
                why[i] = NONE_REASON
        return chan, send

    def _reasons(self, tctx: TimingContext, blocked: np.ndarray, reasons: list[str | None],
                 free: np.ndarray | None) -> list[str]:
        """``policy`` or ``guardrail:<name>``; counts the blocks that changed a decision.

        ``free`` is the active timing policy's ``(n, 2)`` distribution with every slot
        allowed (None: compute it for the blocked rows, as under the kill switch, where the
        safe policy decided).
        """
        if self.kill_switch:
            reasons = ["kill_switch"] * len(reasons)
        if not np.count_nonzero(blocked):
            return ["policy"] * len(reasons)
        m = np.flatnonzero(blocked)
        if free is None:
            users = np.asarray(tctx.user_index)
            today = np.asarray(tctx.sends_today)
            sub = TimingContext(tctx.features[m], np.ones(m.size, bool), users[m],
                                np.asarray(tctx.bucket)[m], tctx.state, today[m])
            wanted = self.policies.timing.policy.action_dist(sub)[:, SEND] > 0
        else:
            wanted = free[m, SEND] > 0
        for i in m[wanted].tolist():
            self.metrics.guardrail_blocks.labels(reasons[i]).inc()
        return [f"guardrail:{r}" if x else "policy"
                for r, x in zip(reasons, blocked.tolist(), strict=True)]

    def _shadow(self, rows: list[DecideRow], u: np.ndarray, raw: np.ndarray,
                tctx: TimingContext, send: np.ndarray, p_send: np.ndarray,
                ids: list[str]) -> list[Statement]:
        """Log what the shadow policies would have done (never acted on)."""
        ps = self.policies
        t = ps.shadow_timing or ps.timing
        if ps.shadow_timing is not None:
            d = t.policy.decide_batch(tctx, self.draws("shadow-timing", rows))
            s_send = np.asarray(d.action) == SEND
            s_p = np.asarray(d.action_dist)[:, SEND].astype(np.float64)
        else:
            s_send, s_p = send, p_send
        item = ps.shadow_item or ps.item
        items: list[str | None] = [None] * len(rows)
        p_item = np.ones(len(rows))
        if s_send.any():
            idx = np.flatnonzero(s_send)
            srows = [rows[i] for i in idx]
            chosen, pi = self._choose_items(item, srows, u[idx], raw[idx],
                                            self.draws("shadow-item", srows))
            for j, i in enumerate(idx.tolist()):
                items[i] = chosen[j]
            p_item[idx] = pi
        ps_joint = np.where(s_send, s_p * p_item, 1.0 - s_p)
        self.metrics.shadow.labels(t.label).inc(len(rows))
        return [(_SHADOW_SQL, (ids[i], t.label, item.label, int(s_send[i]), items[i],
                               float(ps_joint[i]), float(s_p[i]))) for i in range(len(rows))]

    def _look_ahead(self, timing: Loaded, r: DecideRow, u: int, ts: int) -> str | None:
        """First slot after ``ts`` within ``r.horizon`` hours in which ``timing`` would send,
        on a copy of the user's state (no new events assumed)."""
        h = int(r.horizon or 0)
        if h <= 0:
            return None
        st = self.state
        scratch = st.fs.copy_users(np.full(h, u, np.int64))
        bb = ts // HOUR + 1 + np.arange(h, dtype=np.int64)
        local = np.arange(h, dtype=np.int64)
        raw = scratch.features(local, bb)
        uu = np.full(h, u, np.int64)
        allowed, _, today, _ = guardrails.check(self.guardrails, st.sends, uu, bb * HOUR,
                                                st.fs, st.subscriptions, st.held_out.mask(uu))
        ctx = TimingContext(raw, allowed, local, bb, scratch, today)
        ahead = self.draws(f"ahead:{ts}", [r] * h, (bb * HOUR).tolist())
        act = np.asarray(timing.policy.decide_batch(ctx, ahead).action)
        hit = np.flatnonzero(act == SEND)
        return iso(int(bb[hit[0]] * HOUR)) if hit.size else None
