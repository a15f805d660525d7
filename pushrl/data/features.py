"""The single feature pipeline of pushrl: a user's features at a decision time.

Every stage computes user features through :class:`FeatureState`: simulator fitting and the
vectorised simulator, bandit and PPO training, OPE and the policy server. There is no second
implementation; a test replays a log through the batch path and through the one-user-at-a-time
path the server uses and checks the results are identical.

Point-in-time semantics (the one rule): time is counted in UTC hour buckets
(``unix_seconds // 3600``). The features of a decision in bucket ``b`` are a function of the
events in buckets ``< b`` only. Events recorded in the current bucket are *pending* and become
visible when the user's clock moves past it, so the order of events inside a bucket never
matters and the log replay, the simulator and the server agree by construction.

Raw features (:data:`FEATURE_NAMES`), shape ``(n, N_FEATURES)``:

=====================  ====================================================================
``local_hour``         user's local hour 0-23 at the bucket start (DST-correct)
``local_dow``          local weekday, Monday = 0
``hours_since_push``   hours since the last push sent (capped at 336; 336 if never)
``sends_24h``          pushes sent in the 24 buckets before ``b``
``sends_7d``           pushes sent in the 168 buckets before ``b``
``opens_7d``           pushes opened in the 168 buckets before ``b`` (by send bucket)
``activity_at_hour``   user's share of organic activity at this local hour of week, shrunk
                       toward the population profile, times 168 (1.0 = average hour)
``engagement``         open rate of past pushes shrunk toward the population open rate
``activity_7d``        organic activity events in the 168 buckets before ``b``
=====================  ====================================================================

Item affinity (:meth:`FeatureState.affinity`) is the user's share of activity in the item's
category, shrunk toward the population share and divided by it (1.0 = average).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.timezones import TimezoneTable, local_clock, local_clock_int
from pushrl.units import HOUR, utc_offset_seconds

FEATURE_VERSION = "features/v1"
FEATURE_NAMES: tuple[str, ...] = (
    "local_hour", "local_dow", "hours_since_push", "sends_24h", "sends_7d", "opens_7d",
    "activity_at_hour", "engagement", "activity_7d",
)
N_FEATURES = len(FEATURE_NAMES)
F = {n: i for i, n in enumerate(FEATURE_NAMES)}
#: Names of the model-ready encoding produced by :func:`encode`.
ENCODED_NAMES: tuple[str, ...] = (
    "hour_sin", "hour_cos", "weekend", "log_hours_since_push", "sends_24h", "sends_7d",
    "opens_7d", "log_activity_at_hour", "engagement", "log1p_activity_7d",
)
N_ENCODED = len(ENCODED_NAMES)

HOURS_CAP = 336
#: Snapshot arrays a :meth:`FeatureState.from_arrays` may miss (older snapshots).
_OPTIONAL_ARRAYS = frozenset({"last_buy", "last_buy_before"})
_RING = 192  # > 168 so that the 7-day window's two ends never share a slot
_NEVER = np.iinfo(np.int64).min // 4
#: :meth:`FeatureState.advance` of at most this many distinct users runs user by user.
_ADVANCE_FEW = 8
#: Up to this many decisions, :meth:`FeatureState.decision_clock` computes with Python ints.
_CLOCK_FEW = 8
#: Calls of :meth:`FeatureState.day_profile` with at most this many users (the server's
#: decision passes) read pooled profiles from a per-user cache, kept until the user's
#: hour-of-week counts change; larger calls (simulator, replay) compute them directly.
PROFILE_CACHE_USERS = 16
_PROFILE_CACHE_MAX = 1 << 16  # cached (pool, user) profiles before the cache starts anew
_POOLS = ("day", "weekpart", "week")
_AT_NEXT = np.array([0, 1], np.int64)  # a bucket and the next one (local_time_at)
#: :meth:`FeatureState.features`' ring gather: (lag in buckets, kind x _RING) per row; rows
#: 0-3 minus rows 4-7 are the windows sends_24h, sends_7d, opens_7d, activity_7d.
_WIN_LAG = np.array([[0], [0], [0], [0], [24], [168], [168], [168]], np.int64)
_WIN_KIND = np.array([[0], [0], [1], [2], [0], [0], [1], [2]], np.int64) * _RING
_EXACT_START = np.array([[0], [1]], np.int64)  # decision_clock: exact time, bucket start


@dataclass(frozen=True)
class FeatureSpec:
    """Fitted, versioned parameters of the feature pipeline (saved with every artifact).

    Attributes:
        categories: Item category vocabulary; index = category id.
        item_category: ``item_id -> category id``.
        prior_how: Population activity share per local hour of week, shape ``(168,)``.
        prior_cat: Population activity share per category, shape ``(n_categories,)``.
        prior_open_rate: Population open rate of sent pushes.
        shrink_how: Pseudo-events that pull a user's rhythm toward ``prior_how``.
        shrink_cat: Pseudo-events that pull a user's category mix toward ``prior_cat``.
        shrink_open: Pseudo-pushes that pull engagement toward ``prior_open_rate``.
        category_column: Column of ``items`` that defines the category.
        version: Feature semantics version; bump when a meaning changes.
    """

    categories: tuple[str, ...]
    item_category: dict[str, int]
    prior_how: tuple[float, ...]
    prior_cat: tuple[float, ...]
    prior_open_rate: float = 0.1
    shrink_how: float = 24.0
    shrink_cat: float = 10.0
    shrink_open: float = 5.0
    category_column: str = "category"
    version: str = FEATURE_VERSION

    @property
    def n_categories(self) -> int:
        """Number of item categories."""
        return len(self.categories)

    @classmethod
    def fit(cls, ds: Dataset, *, category_column: str = "category") -> FeatureSpec:
        """Fit the population priors of the pipeline from a dataset.

        The priors are model parameters (like a scaler's mean), the same at training and
        serving time; per-decision features never look past their decision time.
        """
        return cls.fit_parts(ds.items, [ds], category_column=category_column)

    @classmethod
    def fit_parts(cls, items: pd.DataFrame, parts: Iterable[Dataset], *,
                  category_column: str = "category") -> FeatureSpec:
        """:meth:`fit` over the user shards of one log (:mod:`pushrl.data.shards`), one
        shard in memory at a time. The priors are sums of counts, so the result is exactly
        :meth:`fit` of the whole log.

        Args:
            items: The items table.
            parts: Datasets holding disjoint users' rows (each with the same items).
        """
        col = category_column if category_column in items.columns else "item_id"
        cats = items[col].astype(str)
        categories = tuple(sorted(cats.unique()))
        cidx = {c: i for i, c in enumerate(categories)}
        item_category = {str(i): cidx[c] for i, c in zip(items["item_id"], cats, strict=True)}
        prior_how = np.full(168, 1.0)
        prior_cat = np.full(len(categories), 1.0)
        opens = known = 0
        for ds in parts:
            act = ds.activity
            if len(act):
                tzt = TimezoneTable(sorted(ds.users["timezone"].astype(str).unique()))
                user_tz = np.array([tzt.index(str(t)) for t in ds.users["timezone"]], np.int64)
                tz_idx = user_tz[user_index(ds, act["user_id"])]
                sec = to_unix_seconds(act["ts"])
                hour, dow, _ = local_clock(sec, tzt.offset_seconds(tz_idx, sec // HOUR))
                prior_how += np.bincount(dow * 24 + hour, minlength=168)
                ic = act["item_id"].map(item_category).dropna().astype(int).to_numpy()
                prior_cat += np.bincount(ic, minlength=len(categories))
            sent = ds.pushes["sent"].fillna(False).to_numpy(bool)
            opened = ds.pushes.loc[sent, "opened"]
            known += int(opened.notna().sum())
            opens += int(opened.fillna(False).astype(bool).sum())
        p_open = opens / known if known else 0.1
        return cls(categories, item_category, tuple((prior_how / prior_how.sum()).tolist()),
                   tuple((prior_cat / prior_cat.sum()).tolist()), p_open,
                   category_column=col)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`; refuses a different feature version."""
        if d.get("version") != FEATURE_VERSION:
            raise ValueError(f"feature spec version {d.get('version')!r} != {FEATURE_VERSION!r}; "
                             "refit the artifact with this pushrl version")
        d = dict(d)
        d["categories"] = tuple(d["categories"])
        d["prior_how"] = tuple(d["prior_how"])
        d["prior_cat"] = tuple(d["prior_cat"])
        return cls(**d)

    def item_categories(self, item_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Category ids of ``item_ids``, shape ``(n,)``; -1 for unknown items."""
        ids = np.asarray(item_ids, dtype=object)
        if ids.ndim == 1 and ids.size > 1024 and pd.api.types.infer_dtype(ids) == "string":
            # an event log's column (all strings): look each distinct id up once
            codes, uniq = pd.factorize(ids)
            cats = np.array([self.item_category.get(i, -1) for i in uniq.tolist()], np.int64)
            return cats[codes]
        return np.array([self.item_category.get(str(i), -1) for i in item_ids], dtype=np.int64)


@dataclass
class _Arrays:
    clock: np.ndarray           # (n,) bucket each user's state is at
    tz_idx: np.ndarray          # (n,)
    cum: np.ndarray             # (3, n) cumulative sends, opens, activity (incl. pending)
    ring: np.ndarray            # (3, _RING, n) cum at the start of bucket b in slot b % _RING
    last_push: np.ndarray       # (n,) bucket of the last push
    last_push_before: np.ndarray  # (n,) bucket of the last push before `last_push`
    how: np.ndarray             # (168, n) committed activity counts per local hour of week
    how_tot: np.ndarray         # (n,) how.sum(axis=0), kept up to date (a column sum is slow)
    cat: np.ndarray             # (n_cat, n) committed activity counts per category
    pend_bucket: np.ndarray     # (n,) bucket of pending activity
    pend_how: np.ndarray        # (n,) local hour of week of pending activity
    pend_n: np.ndarray          # (n,) pending activity count
    pend_cat: np.ndarray        # (n_cat, n) pending category counts
    how_ver: np.ndarray         # (n,) bumped whenever the user's `how` changes (profile cache)
    last_buy: np.ndarray        # (n,) bucket of the last purchase (organic or pushed)
    last_buy_before: np.ndarray  # (n,) bucket of the last purchase before `last_buy`
    extra: dict[str, Any] = field(default_factory=dict)


class _Views:
    """Flat memoryviews of one :class:`_Arrays` (the few-rows methods read single values
    through them: ``view[i]`` is the Python number ``array.item(i)`` gives, at a fraction of
    the cost of a method call). They share the arrays' memory, so they see every change;
    rebuilt when the state's arrays are replaced (:meth:`FeatureState._views`)."""

    __slots__ = (
        "a",
        "before",
        "cap",
        "clock",
        "how",
        "how_tot",
        "how_ver",
        "last_push",
        "pend_bucket",
        "pend_n",
        "ring",
        "tz",
    )

    def __init__(self, a: _Arrays) -> None:
        self.a = a
        self.cap = a.ring.shape[2]
        self.clock, self.tz = a.clock.data, a.tz_idx.data
        self.ring = a.ring.reshape(-1).data  # (kind, slot, user): (k*_RING+s)*cap+u
        self.last_push, self.before = a.last_push.data, a.last_push_before.data
        self.how = a.how.reshape(-1).data  # (hour of week, user): h*cap+u
        self.how_tot, self.how_ver = a.how_tot.data, a.how_ver.data
        self.pend_bucket, self.pend_n = a.pend_bucket.data, a.pend_n.data


class FeatureState:
    """Point-in-time feature state of many users (vectorised over users).

    Args:
        spec: Fitted pipeline parameters.
        timezones: IANA time zone of each user, length ``n_users``.
        start_bucket: Bucket at which the state starts (scalar or per user).
        tz_table: Share a :class:`TimezoneTable` between states.
    """

    SENDS, OPENS, ACTS = 0, 1, 2

    def __init__(self, spec: FeatureSpec, timezones: Sequence[str], start_bucket: int | np.ndarray,
                 *, tz_table: TimezoneTable | None = None) -> None:
        self.spec = spec
        self.tzt = tz_table or TimezoneTable([])
        self._prior_how = np.asarray(spec.prior_how, dtype=np.float64)
        self._k_prior_how = spec.shrink_how * self._prior_how  # (features' share numerator)
        self._k_prior_how_l: list[float] = self._k_prior_how.tolist()
        #: ``shrink_how`` as numpy adds it to a float32 total (NEP 50: rounded to float32)
        self._shrink_how32 = _f32(spec.shrink_how)
        #: engagement's pseudo-counts (opens, sends) as numpy adds them to float32 counts
        self._eng_shift = np.array([[spec.shrink_open * spec.prior_open_rate],
                                    [spec.shrink_open]], np.float32)
        self._eng_shift_l: list[float] = self._eng_shift[:, 0].tolist()
        self._prior_cat = np.asarray(spec.prior_cat, dtype=np.float64)
        self._prior_cat_l: list[float] = self._prior_cat.tolist()
        self.n = 0
        self.a = self._alloc(0)
        #: ``(key, user) -> (how_ver, value)`` (:meth:`how_cached`, :meth:`day_profile`).
        self._profiles: dict[tuple[Hashable, int], tuple[int, Any]] = {}
        self._view: _Views | None = None
        #: :meth:`decision_clock_few`'s ``(zone, bucket) -> (offset, (hour, dow, day) at the
        #: bucket start)``, or None where the zone changes offset inside the bucket
        self._starts: dict[tuple[int, int], tuple[int, tuple[int, int, int]] | None] = {}
        self.add_users(timezones, start_bucket)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_view": None}  # (memoryviews do not pickle)

    def _views(self) -> _Views:
        """:class:`_Views` of the current arrays."""
        v = self._view
        if v is None or v.a is not self.a:
            v = self._view = _Views(self.a)
        return v

    def _alloc(self, cap: int) -> _Arrays:
        nc = self.spec.n_categories
        return _Arrays(
            clock=np.zeros(cap, np.int64), tz_idx=np.zeros(cap, np.int32),
            cum=np.zeros((3, cap), np.int32), ring=np.zeros((3, _RING, cap), np.int32),
            last_push=np.full(cap, _NEVER, np.int64),
            last_push_before=np.full(cap, _NEVER, np.int64),
            how=np.zeros((168, cap), np.float32), how_tot=np.zeros(cap, np.float32),
            cat=np.zeros((nc, cap), np.float32),
            pend_bucket=np.full(cap, _NEVER, np.int64), pend_how=np.zeros(cap, np.int16),
            pend_n=np.zeros(cap, np.float32), pend_cat=np.zeros((nc, cap), np.float32),
            how_ver=np.zeros(cap, np.int64),
            last_buy=np.full(cap, _NEVER, np.int64),
            last_buy_before=np.full(cap, _NEVER, np.int64),
        )

    @property
    def capacity(self) -> int:
        """Allocated user slots (grows by doubling)."""
        return int(self.a.clock.shape[0])

    def add_users(self, timezones: Sequence[str], start_bucket: int | np.ndarray) -> np.ndarray:
        """Append users; returns their indices, shape ``(k,)``."""
        k = len(timezones)
        if self.n + k > self.capacity:
            new = self._alloc(max(2 * self.capacity, self.n + k, 16))
            for name in vars(new):
                if name == "extra":
                    continue
                src, dst = getattr(self.a, name), getattr(new, name)
                dst[..., : self.n] = src[..., : self.n]
            self.a = new
        idx = np.arange(self.n, self.n + k)
        self.n += k
        self.a.tz_idx[idx] = [self.tzt.index(str(t)) for t in timezones]
        self.a.clock[idx] = start_bucket
        return idx

    def copy_users(self, users: np.ndarray) -> FeatureState:
        """A new state holding copies of ``users`` (new indices ``0..k-1``), sharing the spec.

        Used to look ahead ("when would the policy send if nothing happens?") without moving
        the real users' clocks.
        """
        u = np.asarray(users, dtype=np.int64)
        out = FeatureState(self.spec, [], 0, tz_table=self.tzt)
        out.a = self._alloc(u.size)
        for name in vars(out.a):
            if name != "extra":
                getattr(out.a, name)[...] = getattr(self.a, name)[..., u]
        out.n = int(u.size)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole state of the ``n`` users as named arrays (a snapshot, e.g. for
        ``np.savez``); :meth:`from_arrays` restores it exactly. ``tz_names`` are the zones
        that ``tz_idx`` indexes."""
        out = {name: np.ascontiguousarray(v[..., : self.n]) for name, v in vars(self.a).items()
               if name != "extra"}
        out["tz_names"] = np.array(self.tzt.names, dtype=str)
        return out

    @classmethod
    def from_arrays(cls, spec: FeatureSpec, arrays: dict[str, np.ndarray]) -> FeatureState:
        """Inverse of :meth:`to_arrays` under ``spec`` (whose categories must be the ones the
        snapshot was taken with: ``cat`` and ``pend_cat`` are indexed by them).

        Raises:
            ValueError: The arrays do not fit ``spec`` or each other.
        """
        out = cls(spec, [], 0, tz_table=TimezoneTable([str(z) for z in arrays["tz_names"]]))
        n = int(arrays["clock"].shape[0])
        out.a = out._alloc(n)
        for name in vars(out.a):
            if name == "extra" or (name in _OPTIONAL_ARRAYS and name not in arrays):
                continue  # (a snapshot older than purchases: none recorded)
            dst, src = getattr(out.a, name), np.asarray(arrays[name])
            if src.shape != dst.shape:
                raise ValueError(f"feature state snapshot: `{name}` has shape {src.shape}, "
                                 f"expected {dst.shape} for {n} users and "
                                 f"{spec.n_categories} categories")
            dst[...] = src
        out.n = n
        return out

    def export_history(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """Lifetime counts of ``users`` (all recorded activity, sends, opens), e.g. to
        warm-start.

        Activity still pending in the user's current bucket (invisible to a decision of
        that bucket, committed at the user's next bucket) is counted too: the history of a
        log is every event in it, as a server given the same events holds it after the
        user's next decision (the sim's warm start used to drop it: 92-100 % match).

        Returns:
            ``how`` ``(k, 168)`` activity per local hour of week, ``cat`` ``(k, n_categories)``
            activity per category, ``sends`` and ``opens`` ``(k,)`` pushes sent and opened.
        """
        u = np.asarray(users, dtype=np.int64)
        a = self.a
        how, cat = a.how[:, u].T.copy(), a.cat[:, u].T.copy()
        pend = np.flatnonzero(a.pend_n[u] > 0)
        if pend.size:
            how[pend, a.pend_how[u[pend]].astype(np.int64)] += a.pend_n[u[pend]]
            cat[pend] += a.pend_cat[:, u[pend]].T
        return {"how": how, "cat": cat,
                "sends": a.cum[self.SENDS, u].copy(), "opens": a.cum[self.OPENS, u].copy()}

    def reset_users(self, users: np.ndarray, start_bucket: int | np.ndarray,
                    timezones: Sequence[str] | None = None,
                    history: dict[str, np.ndarray] | None = None) -> None:
        """Reuse the slots ``users`` for new users starting at ``start_bucket``.

        The slots are cleared (their clocks may move back); ``history`` (the output of
        :meth:`export_history`) seeds lifetime counts that lie before every feature window:
        rhythm, category mix and engagement carry over, while the 24 h / 7 day windows start
        empty and no push is remembered (``hours_since_push`` is capped).

        Args:
            users: Slot indices, shape ``(k,)`` without repeats.
            start_bucket: Bucket of the new users' first decision (scalar or ``(k,)``).
            timezones: New IANA time zones, length ``k``; None keeps the slots' zones.
            history: Optional ``how``/``cat``/``sends``/``opens`` arrays for the ``k`` users.
        """
        u = np.asarray(users, dtype=np.int64)
        a = self.a
        if u.size and u[-1] - u[0] + 1 == u.size and (np.diff(u) == 1).all():
            u = slice(int(u[0]), int(u[-1]) + 1)  # type: ignore[assignment]  # contiguous
        if timezones is not None:
            a.tz_idx[u] = [self.tzt.index(str(t)) for t in timezones]
        a.clock[u] = start_bucket
        for name in ("how", "cat", "pend_cat", "cum"):
            getattr(a, name)[:, u] = 0
        for name in ("how_tot", "pend_n", "pend_how"):
            getattr(a, name)[u] = 0
        a.how_ver[u] += 1
        for name in ("last_push", "last_push_before", "pend_bucket", "last_buy",
                     "last_buy_before"):
            getattr(a, name)[u] = _NEVER
        if history is not None:
            a.how[:, u] = np.asarray(history["how"], np.float32).T
            a.how_tot[u] = a.how[:, u].sum(axis=0)
            a.cat[:, u] = np.asarray(history["cat"], np.float32).T
            a.cum[self.SENDS, u] = history["sends"]
            a.cum[self.OPENS, u] = history["opens"]
            a.cum[self.ACTS, u] = np.rint(a.how_tot[u]).astype(np.int32)
        a.ring[:, :, u] = a.cum[:, None, u]

    # ----------------------------------------------------------------- time
    def advance(self, users: np.ndarray, bucket: int | np.ndarray) -> None:
        """Move ``users``' clocks forward to ``bucket``, committing pending events.

        Raises:
            ValueError: ``bucket`` is earlier than a user's clock (state cannot rewind).
        """
        u = np.asarray(users, dtype=np.int64)
        b = _buckets(bucket, u.shape)
        if u.size <= _ADVANCE_FEW:  # the server's passes: a few distinct users
            ul = u.tolist()
            if len(set(ul)) == len(ul):
                self.advance_few(ul, b.tolist())
                return
        a = self.a
        gap = b - a.clock[u]
        if np.count_nonzero(gap < 0):
            i = int(np.flatnonzero(gap < 0)[0])
            raise ValueError(f"decision time is {-int(gap[i])} h before the user's state; "
                             "features cannot be computed for the past, send times in order")
        moving = gap > 0
        n_moving = np.count_nonzero(moving)
        if not n_moving:
            return
        if n_moving < u.size:
            u, b, gap = u[moving], b[moving], gap[moving]
        if (u.size > 1 and not (u[1:] > u[:-1]).all()
                and (u.size > 64 or len(set(u.tolist())) < u.size)):
            # a user listed twice (several events in one call) must commit its pending
            # activity once: keep one row per user, the latest bucket (small distinct
            # batches, like the server's, skip the sort)
            order = np.lexsort((-b, u))
            su = u[order]
            first = order[np.concatenate(([True], su[1:] != su[:-1]))]
            u, b, gap = u[first], b[first], gap[first]
        # commit pending activity (it lies in a bucket < b now)
        pend = a.pend_bucket[u] < b
        pu = u[pend & (a.pend_n[u] > 0)]
        if pu.size:
            a.how[a.pend_how[pu].astype(np.int64), pu] += a.pend_n[pu]  # pu: no repeats
            a.how_tot[pu] += a.pend_n[pu]
            a.how_ver[pu] += 1
            a.cat[:, pu] += a.pend_cat[:, pu]
            a.pend_n[pu] = 0
            a.pend_cat[:, pu] = 0
        # snapshot cumulative counters at the start of every bucket in (clock, b]
        cum = a.cum[:, u]
        flat = a.ring.reshape(3, -1)  # a view; flat indices are much faster than (slot, user)
        cap = a.ring.shape[2]
        # user i fills slots b-gap+1 .. b (at most _RING of them, all holding the same value,
        # so the last _RING are the whole ring): one scatter for every (slot, user) pair
        g = np.minimum(gap, _RING)
        if not np.count_nonzero(g != 1):  # every clock moves one bucket (the server's passes)
            flat[:, (b % _RING) * cap + u] = cum
        else:
            row = np.repeat(np.arange(u.size), g)
            k = np.arange(row.size) - np.repeat(np.cumsum(g) - g, g) + 1  # 1..g_i per user
            flat[:, ((b[row] - gap[row] + k) % _RING) * cap + u[row]] = cum[:, row]
        a.clock[u] = b

    def advance_few(self, users: list[int], buckets: list[int]) -> None:
        """:meth:`advance` of a few distinct users, one user at a time: the same state
        changes (the same float32 additions, the same ring slots) without the ~20 array
        operations the vectorised form costs whatever the size (tests/data/
        test_features.py: both forms leave identical arrays)."""
        if len(users) != len(buckets):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError(f"{len(users)} users but {len(buckets)} buckets")
        a = self.a
        v = self._views()
        clock = v.clock
        moving = []
        for ui, bi in zip(users, buckets):  # noqa: B905 (lengths checked)
            gap = bi - clock[ui]
            if gap < 0:
                raise ValueError(f"decision time is {-gap} h before the user's state; "
                                 "features cannot be computed for the past, send times in "
                                 "order")
            if gap:
                moving.append((ui, bi, gap))
        for ui, bi, gap in moving:
            # commit pending activity (it lies in a bucket < bi now)
            if v.pend_bucket[ui] < bi and v.pend_n[ui] > 0:
                n = a.pend_n[ui]  # (float32: added as float32)
                a.how[int(a.pend_how[ui]), ui] += n
                a.how_tot[ui] += n
                a.how_ver[ui] += 1
                a.cat[:, ui] += a.pend_cat[:, ui]
                a.pend_n[ui] = 0
                a.pend_cat[:, ui] = 0
            # snapshot the cumulative counters at the start of every bucket in (clock, bi]
            hi = bi % _RING
            if gap == 1:
                a.ring[:, hi, ui] = a.cum[:, ui]
            else:  # slots bi-g+1 .. bi: one slice, or two where they wrap around the ring
                lo = (bi - min(gap, _RING) + 1) % _RING
                cum = a.cum[:, ui, None]
                if lo <= hi:
                    a.ring[:, lo:hi + 1, ui] = cum
                else:
                    a.ring[:, lo:, ui] = cum
                    a.ring[:, :hi + 1, ui] = cum
            clock[ui] = bi

    def _prepare(self, users: np.ndarray, bucket: int | np.ndarray,
                 *, late_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
        u = np.asarray(users, dtype=np.int64)
        b = _buckets(bucket, u.shape)
        if late_ok:
            # (the record_* methods place late events in their own hour before they get
            # here; this only guards direct callers: never seen earlier than it happened)
            b = np.maximum(b, self.a.clock[u])
        self.advance(u, b)
        return u, b

    def _split_late(self, users: np.ndarray, bucket: int | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users, buckets, late)``: ``late`` marks events in a bucket before the user's
        clock (a decision or a later event was already recorded), shape ``(k,)``."""
        u = np.asarray(users, dtype=np.int64)
        b = np.array(_buckets(bucket, u.shape))
        return u, b, b < self.a.clock[u]

    def _add_late(self, kind: int, u: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        """Add ``c`` events of ``kind`` that happened in buckets ``b`` < the users' clocks.

        A late event is placed in its own hour: the cumulative counter and every live ring
        slot of a bucket after ``b`` (up to the clock) include it, exactly as if it had been
        recorded on time. Decisions already made are not changed (their features were
        returned); every later decision (bucket >= clock > ``b``) sees it. Ring slots older
        than ``clock - _RING + 1`` are never read again (windows reach back 168 < _RING
        buckets from a decision at or after the clock), so any lateness is exact.
        """
        a = self.a
        np.add.at(a.cum[kind], u, c)
        clock = a.clock[u]
        g = np.minimum(clock - b, _RING)  # slots clock-g+1 .. clock
        row = np.repeat(np.arange(u.size), g)
        k = np.arange(row.size) - np.repeat(np.cumsum(g) - g, g)  # 0..g_i-1 per event
        cap = a.ring.shape[2]
        np.add.at(a.ring[kind].reshape(-1), ((clock[row] - k) % _RING) * cap + u[row], c[row])

    def _push_late(self, u: np.ndarray, b: np.ndarray, opened: np.ndarray | None) -> None:
        """Late sends (see :meth:`_add_late`); ``last_push`` keeps the two latest buckets."""
        a = self.a
        one = np.ones(u.size, np.int32)
        self._add_late(self.SENDS, u, b, one)
        if opened is not None:
            o = np.asarray(opened, dtype=bool)
            self._add_late(self.OPENS, u[o], b[o], one[o])
        for ui, bi in zip(u.tolist(), b.tolist(), strict=True):
            if bi > a.last_push[ui]:
                a.last_push_before[ui] = a.last_push[ui]
                a.last_push[ui] = bi
            elif a.last_push_before[ui] < bi < a.last_push[ui]:
                a.last_push_before[ui] = bi

    def _activity_late(self, u: np.ndarray, b: np.ndarray, cats: np.ndarray | None,
                       c: np.ndarray) -> None:
        """Late activity (see :meth:`_add_late`): committed at once in its own local hour of
        week and category (it lies in a bucket before every decision still to come)."""
        a = self.a
        self._add_late(self.ACTS, u, b, c.astype(np.int32))
        hour, dow, _ = self.local_time(u, b)
        np.add.at(a.how, ((dow * 24 + hour).astype(np.int64), u), c)
        np.add.at(a.how_tot, u, c)
        a.how_ver[u] += 1  # (cached profiles of these users are stale; repeats: once is enough)
        if cats is not None:
            ok = cats >= 0
            np.add.at(a.cat, (cats[ok], u[ok]), c[ok])

    # ----------------------------------------------------------------- events
    def record_push(self, users: np.ndarray, bucket: int | np.ndarray,
                    opened: np.ndarray | None = None) -> None:
        """Record sent pushes (one per listed user) in ``bucket`` and, optionally, opens.

        A push in a bucket before the user's clock is placed in its hour (:meth:`_add_late`).
        """
        u, b, late = self._split_late(users, bucket)
        if late.any():
            self._push_late(u[late], b[late], None if opened is None
                            else np.asarray(opened, dtype=bool)[late])
            on = ~late
            if not on.any():
                return
            u, b = u[on], b[on]
            opened = None if opened is None else np.asarray(opened, dtype=bool)[on]
        u, b = self._prepare(u, b, late_ok=True)
        a = self.a
        np.add.at(a.cum[self.SENDS], u, 1)
        newer = b > a.last_push[u]
        a.last_push_before[u[newer]] = a.last_push[u[newer]]
        a.last_push[u[newer]] = b[newer]
        if opened is not None:
            o = np.asarray(opened, dtype=bool)
            np.add.at(a.cum[self.OPENS], u[o], 1)

    def record_open(self, users: np.ndarray, bucket: int | np.ndarray) -> None:
        """Record opens (server feedback) in ``bucket``; one before the user's clock is placed
        in its hour (:meth:`_add_late`)."""
        u, b, late = self._split_late(users, bucket)
        if late.any():
            self._add_late(self.OPENS, u[late], b[late], np.ones(int(late.sum()), np.int32))
            u, b = u[~late], b[~late]
            if not u.size:
                return
        u, _ = self._prepare(u, b, late_ok=True)
        np.add.at(self.a.cum[self.OPENS], u, 1)

    def record_purchase(self, users: np.ndarray, bucket: int | np.ndarray) -> None:
        """Record purchases (organic ``purchase`` events or converted pushes), one per row.

        Only the two latest purchase buckets per user are kept (as for pushes), which is all
        :meth:`hours_since_purchase` needs; a purchase in any bucket (late or not) is placed
        in order, and none of the raw features change.

        Args:
            users: User indices, shape ``(k,)`` (repeats allowed).
            bucket: Bucket of each purchase, scalar or ``(k,)``.
        """
        u = np.asarray(users, dtype=np.int64).reshape(-1)
        b = np.broadcast_to(np.asarray(bucket, dtype=np.int64), u.shape)
        if u.size > 1 and np.unique(u).size != u.size:
            # repeats: the update below keeps a user's two latest distinct buckets, so rows
            # applied one at a time (in any order) end where applying just each user's latest
            # bucket, then its latest one below that, ends (tests/data/test_purchases.py)
            order = np.lexsort((-b, u))  # by user, latest bucket first
            su, sb = u[order], b[order]
            head = np.flatnonzero(np.concatenate(([True], su[1:] != su[:-1])))
            self._purchase(su[head], sb[head])
            top = np.repeat(sb[head], np.diff(np.append(head, su.size)))  # the user's latest
            below = np.flatnonzero(sb < top)
            if below.size:
                sub = su[below]
                nxt = below[np.concatenate(([True], sub[1:] != sub[:-1]))]
                self._purchase(su[nxt], sb[nxt])
            return
        self._purchase(u, b)

    def _purchase(self, u: np.ndarray, b: np.ndarray) -> None:
        """:meth:`record_purchase` of distinct users ``u`` (``(k,)``, buckets ``b``)."""
        a = self.a
        last, before = a.last_buy[u], a.last_buy_before[u]
        newer = b > last
        between = ~newer & (b < last) & (b > before)
        a.last_buy_before[u] = np.where(newer, last, np.where(between, b, before))
        a.last_buy[u] = np.where(newer, b, last)

    def hours_since_purchase(self, users: np.ndarray, bucket: int | np.ndarray) -> np.ndarray:
        """Hours from the user's last purchase in a bucket ``< bucket`` to ``bucket``
        (point in time: a purchase of the decision's own bucket is not seen), capped at
        ``HOURS_CAP`` (336, also when none is known); float64 ``(n,)``. Not a column of the
        raw features (their version is unchanged): the uplift gate's need-state input
        (:mod:`pushrl.rules.uplift`)."""
        u = np.asarray(users, dtype=np.int64)
        b = np.asarray(bucket, dtype=np.int64)
        a = self.a
        last = a.last_buy[u]
        lb = np.where(last < b, last, a.last_buy_before[u])
        return np.minimum(b - lb, HOURS_CAP).astype(np.float64)

    def record_activity(self, users: np.ndarray, bucket: int | np.ndarray,
                        categories: np.ndarray | None = None,
                        count: np.ndarray | None = None) -> None:
        """Record organic activity events (``count`` events each, in ``bucket``).

        Args:
            users: User indices, shape ``(k,)`` (repeats allowed).
            bucket: Bucket of each event, scalar or ``(k,)``.
            categories: Category id of each event's item, ``-1`` for none, shape ``(k,)``.
            count: Number of events per row, default 1.

        Events in a bucket before the user's clock are placed in their hour
        (:meth:`_activity_late`).
        """
        u, b, late = self._split_late(users, bucket)
        c = np.ones(u.shape, np.float32) if count is None else np.asarray(count, np.float32)
        cats_all = None if categories is None else np.asarray(categories, dtype=np.int64)
        if late.any():
            self._activity_late(u[late], b[late], None if cats_all is None else cats_all[late],
                                c[late])
            on = ~late
            if not on.any():
                return
            u, b, c = u[on], b[on], c[on]
            categories = None if cats_all is None else cats_all[on]
        u, b = self._prepare(u, b, late_ok=True)
        a = self.a
        hour, dow, _ = self.local_time(u, b)
        np.add.at(a.cum[self.ACTS], u, c.astype(np.int32))
        a.pend_bucket[u] = b
        a.pend_how[u] = (dow * 24 + hour).astype(np.int16)
        np.add.at(a.pend_n, u, c)
        if categories is not None:
            cats = np.asarray(categories, dtype=np.int64)
            ok = cats >= 0
            np.add.at(a.pend_cat, (cats[ok], u[ok]), c[ok])

    # ----------------------------------------------------------------- reads
    def local_time(self, users: np.ndarray, bucket: int | np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray,
                                                                              np.ndarray]:
        """Local ``(hour, dow, day)`` of ``users`` at the start of ``bucket``."""
        u = np.asarray(users, dtype=np.int64)
        b = _buckets(bucket, u.shape)
        off = self.tzt.offset_seconds(self.a.tz_idx[u], b)
        return local_clock(b * HOUR, off)

    def local_time_at(self, users: np.ndarray, unix_seconds: np.ndarray | int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local ``(hour, dow, day)`` of ``users`` at exact times ``unix_seconds`` (broadcast,
        e.g. users ``(n, 1)`` x times ``(1, T)``), DST-exact also when a zone changes offset
        inside an hour bucket (e.g. Australia/Lord_Howe at hh:30 UTC; zoneinfo for those)."""
        t = np.asarray(unix_seconds, dtype=np.int64)
        return local_clock(t, self._offsets_at(users, t)[0])

    def decision_clock(self, users: np.ndarray, unix_seconds: np.ndarray
                       ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                                  tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`local_time_at` of decisions at ``unix_seconds`` ``(n,)`` and
        :meth:`local_time` at the start of their buckets, from one offset lookup (the server's
        guardrails read the first, the features the second).

        Returns:
            ``((hour, dow, day) at the exact times, (hour, dow, day) at the bucket starts)``.
        """
        t = np.asarray(unix_seconds, dtype=np.int64)
        if t.ndim == 1 and 0 < t.size <= _CLOCK_FEW and np.shape(users) == t.shape:
            got = self._decision_clock_few(users, t)
            if got is not None:
                return got
        exact, start = self._offsets_at(users, t)
        # both clocks in one local_clock call over (2, n): row 0 the exact times, row 1 the
        # bucket starts
        times = t - _EXACT_START * (t % HOUR)
        hour, dow, day = local_clock(times, start if exact is start else np.stack([exact, start]))
        return (hour[0], dow[0], day[0]), (hour[1], dow[1], day[1])

    def _decision_clock_few(self, users: np.ndarray, t: np.ndarray
                            ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                                       tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """:meth:`decision_clock` of a few decisions through :meth:`decision_clock_few` (as
        arrays); None where that is None (the vectorised path handles those rows)."""
        cols = self.decision_clock_few(np.asarray(users, dtype=np.int64).tolist(), t.tolist())
        if cols is None:
            return None
        got = np.array(cols, np.int64).T  # (6, n): exact hour, dow, day; start hour, dow, day
        return (got[0], got[1], got[2]), (got[3], got[4], got[5])

    def decision_clock_few(self, users: list[int], ts: list[int]
                           ) -> list[tuple[int, int, int, int, int, int]] | None:
        """:meth:`decision_clock` of a few decisions with Python ints (the same offsets, the
        same :func:`~pushrl.data.timezones.local_clock_int`): per decision ``(hour, dow, day)``
        at the exact time then at the bucket start. None when an offset is not computed yet
        or a zone changes offset inside a decision's bucket (the vectorised path handles
        both; ``tests/serve/test_engine_few.py`` compares the server's passes). A zone's
        offset and clock at a bucket start are kept per ``(zone, bucket)`` (decisions of one
        hour share them)."""
        if len(users) != len(ts):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError(f"{len(users)} users but {len(ts)} times")
        tz, starts = self._views().tz, self._starts
        out = []
        for u, x in zip(users, ts):  # noqa: B905 (lengths checked)
            key = (tz[u], x // HOUR)
            got = starts.get(key, _UNSEEN)
            if got is _UNSEEN:
                got = self._start_clock(*key)
            if got is None:
                return None
            out.append(local_clock_int(x, got[0]) + got[1])
        return out

    def _start_clock(self, zone: int, b: int) -> tuple[int, tuple[int, int, int]] | None:
        """:meth:`decision_clock_few`'s ``(offset, local (hour, dow, day))`` of zone index
        ``zone`` at the start of bucket ``b`` (kept), None where the zone changes offset inside
        the bucket (kept) or an offset is not computed yet (not kept)."""
        off = self.tzt.offsets_few([zone, zone], [b, b + 1])
        if off is None:
            return None
        got = None if off[0] != off[1] else (off[0], local_clock_int(b * HOUR, off[0]))
        if len(self._starts) >= _STARTS_MAX:
            self._starts.clear()
        self._starts[(zone, b)] = got
        return got

    def behind_few(self, users: list[int], buckets: list[int]) -> bool:
        """Whether a decision in ``buckets[i]`` comes before user ``users[i]``'s state (its
        clock) for some ``i`` (the few-rows pass hands those to the array pass, which refuses
        them)."""
        if len(users) != len(buckets):  # (zip(strict=True)'s keyword call costs ~1.5k instructions)
            raise ValueError(f"{len(users)} users but {len(buckets)} buckets")
        clock = self._views().clock
        for u, b in zip(users, buckets):  # noqa: B905 (lengths checked)
            if b < clock[u]:
                return True
        return False

    def _offsets_at(self, users: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """UTC offsets of ``users`` at exact times ``t`` (broadcast) and at the start of the
        times' hour buckets (:meth:`local_time_at`)."""
        u = np.asarray(users, dtype=np.int64)
        tz = self.a.tz_idx[u]
        b = t // HOUR
        start, nxt = self.tzt.offset_seconds(tz, np.add.outer(_AT_NEXT, b))  # one lookup
        fix = start != nxt
        if not np.count_nonzero(fix):
            return start, start
        # the zone changes offset inside this bucket (exact at its start)
        fix &= t != b * HOUR
        tz_b, t_b = np.broadcast_arrays(tz, t)
        off = np.array(np.broadcast_to(start, fix.shape), np.int64)
        for i in zip(*np.nonzero(fix), strict=True):
            off[i] = utc_offset_seconds(int(t_b[i]), self.tzt.names[int(tz_b[i])])
        return off, start

    def clock(self, users: np.ndarray | int) -> np.ndarray:
        """Bucket each user's state is at (its latest event or decision), int64, shape of
        ``users``."""
        if type(users) is int:  # one user (the server's per-request check): a Python int
            return self._views().clock[users]  # type: ignore[return-value]  # (a Python int)
        return self.a.clock[np.asarray(users, dtype=np.int64)]

    def timezone(self, user: int) -> str:
        """IANA time zone of ``user``."""
        return self.tzt.names[int(self.a.tz_idx[int(user)])]

    def _window(self, kind: int, u: np.ndarray, b: np.ndarray, hours: int) -> np.ndarray:
        ring = self.a.ring[kind]
        return (ring[b % _RING, u] - ring[(b - hours) % _RING, u]).astype(np.float32)

    def features(self, users: np.ndarray, bucket: int | np.ndarray, *,
                 clock: tuple[np.ndarray, np.ndarray] | None = None,
                 advanced: bool = False) -> np.ndarray:
        """Raw features of ``users`` for decisions in ``bucket``.

        Args:
            users: ``(n,)`` user indices.
            bucket: Decision bucket, scalar or ``(n,)``.
            clock: The users' local ``(hour, dow)`` at the start of ``bucket`` when the
                caller already has them (:meth:`decision_clock`: the server looks the
                offsets up once for guardrails and features); None computes them.
            advanced: The caller has just moved the users' clocks to ``bucket``
                (:meth:`advance`; ``users`` int64, ``bucket`` int64 ``(n,)``), so this call
                does not check and advance them again.

        Returns:
            float32 array of shape ``(len(users), N_FEATURES)`` in :data:`FEATURE_NAMES` order.
        """
        u, b = (users, bucket) if advanced else self._prepare(users, bucket)
        a = self.a
        out = np.empty((u.size, N_FEATURES), np.float32)
        hour, dow = self.local_time(u, b)[:2] if clock is None else clock
        out[:, 0] = hour
        out[:, 1] = dow
        last = a.last_push[u]
        lp = np.where(last < b, last, a.last_push_before[u])
        out[:, 2] = np.minimum(b - lp, HOURS_CAP)
        # every ring slot the windows read, in ONE gather of the flat ring (kind, slot, user):
        # rows _WIN_NOW - rows _WIN_AGO are sends_24h, sends_7d, opens_7d, activity_7d, and
        # rows 1-2 hold the lifetime sends and opens now (engagement)
        cap = a.ring.shape[2]
        got = a.ring.reshape(-1).take(((b - _WIN_LAG) % _RING + _WIN_KIND) * cap + u)
        win = got[:4] - got[4:]  # (4 windows, n)
        out[:, 3:6] = win[:3].T
        out[:, 8] = win[3]
        # pending activity of bucket b is kept apart in pend_*, so it is invisible here
        how_idx = (dow * 24 + hour).astype(np.int64, copy=False)
        share = ((a.how[how_idx, u] + self._k_prior_how[how_idx])
                 / (a.how_tot[u] + self.spec.shrink_how))
        out[:, 6] = share * 168.0
        # (opens + ko * prior, sends + ko) in float32, as numpy adds the python floats to the
        # float32 counts (NEP 50: each constant rounded to float32 first)
        num, den = np.add(got[2:0:-1], self._eng_shift, dtype=np.float32)
        out[:, 7] = num / den
        return out

    def features_few(self, users: list[int], buckets: list[int], hour: list[int],
                     dow: list[int]) -> array:
        """:meth:`features` of a few users (already advanced to ``buckets``, local ``hour`` and
        ``dow`` at the bucket starts) with Python numbers: the same ring slots, the same
        integer windows and the same roundings (``activity_at_hour`` in doubles rounded once
        to float32, its denominator ``how_tot + shrink_how`` and ``engagement``'s terms in
        float32 as numpy adds and divides them: a float32 operation on float32 inputs done
        in doubles and rounded once gives the float32 result, 53 >= 2 * 24 + 2 bits).
        Returns the float32 rows flat (``n * N_FEATURES``; ``tobytes()`` equals the array's);
        the server's decision pass (``tests/serve/test_engine_few.py`` compares it with
        :meth:`features`)."""
        v = self._views()
        ring, how, how_tot, cap = v.ring, v.how, v.how_tot, v.cap
        last_push, before = v.last_push, v.before
        r1, r2 = _RING * cap, 2 * _RING * cap  # the opens and activity rings
        kp, k = self._k_prior_how_l, self._shrink_how32
        o_shift, s_shift = self._eng_shift_l
        pack, unpack, row = _F32X3.pack, _F32X3.unpack, _F32ROW.pack
        if not len(users) == len(buckets) == len(hour) == len(dow):  # (zip's strict=True
            raise ValueError("users, buckets, hour and dow differ in length")  # costs more)
        parts = []
        for u, b, h, d in zip(users, buckets, hour, dow):  # noqa: B905 (lengths checked)
            lp = last_push[u]
            if lp >= b:
                lp = before[u]
            gap = b - lp
            if gap > HOURS_CAP:  # (min(gap, HOURS_CAP) without the builtin call)
                gap = HOURS_CAP
            now, ago = b % _RING * cap + u, (b - 168) % _RING * cap + u
            sends, opens, acts = ring[now], ring[r1 + now], ring[r2 + now]
            i = d * 24 + h
            # the three float32 sums at once; the last rounding (of the row's values) is the
            # array's own (struct's native "f": the C cast of the double, as numpy's)
            den, num, n_sent = unpack(pack(how_tot[u] + k, opens + o_shift, sends + s_shift))
            parts.append(row(h, d, gap,
                             sends - ring[(b - 24) % _RING * cap + u], sends - ring[ago],
                             opens - ring[r1 + ago], (how[i * cap + u] + kp[i]) / den * 168.0,
                             num / n_sent, acts - ring[r2 + ago]))
        return array("f", parts[0] if len(parts) == 1 else b"".join(parts))

    def affinity(self, users: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """Item affinity for user/category pairs (broadcast), committed activity only.

        Args:
            users: ``(n,)`` user indices.
            categories: ``(n,)`` or ``(n, k)`` category ids (``-1`` = unknown -> 1.0).

        Returns:
            float32 array shaped like ``categories``; 1.0 means the population average.
        """
        u = np.asarray(users, dtype=np.int64)
        c = np.asarray(categories, dtype=np.int64)
        cat = self.a.cat
        tot = cat[:, u].sum(axis=0)
        uu = u if c.ndim == 1 else u[:, None]
        cc = np.where(c < 0, 0, c)
        k = self.spec.shrink_cat
        prior = self._prior_cat[cc]
        ratio = _affinity_ratio(cat[cc, uu], (tot if c.ndim == 1 else tot[:, None]) + k, prior, k)
        return np.where(c < 0, 1.0, ratio).astype(np.float32)

    def affinity_one(self, user: int, n_categories: int) -> list[float]:
        """:meth:`affinity` of ONE user to categories ``0..n_categories-1`` in plain Python
        floats (the server's one-decision path: a miss of its top-category cache), the same
        arithmetic: the total by :meth:`affinity`'s own numpy sum, ``total + k`` in float32
        as numpy adds it (NEP 50: ``k`` is rounded to float32 too), :func:`_affinity_ratio`
        in doubles, the result rounded to float32; equal bit for bit
        (``tests/data/test_affinity_one.py``)."""
        k = self.spec.shrink_cat
        cat = self.a.cat
        tot = cat[:, [user]].sum(axis=0).tolist()[0]  # float32, summed as affinity sums
        # numpy adds the Python float k to the float32 total in float32: k rounded to float32,
        # the sum (exact in doubles) rounded to float32
        den = array("f", [tot + array("f", [k])[0]])[0]
        counts, prior = cat[:n_categories, user].tolist(), self._prior_cat_l
        return array("f", [_affinity_ratio(counts[j], den, prior[j], k)
                           for j in range(n_categories)]).tolist()

    def hour_of_week_profile(self, users: np.ndarray) -> np.ndarray:
        """Shrunk activity share per local hour of week, shape ``(len(users), 168)``."""
        u = np.asarray(users, dtype=np.int64)
        how = self.a.how[:, u].T.astype(np.float64)
        k = self.spec.shrink_how
        return (how + self._k_prior_how) / (how.sum(axis=1, keepdims=True) + k)

    def day_profile(self, users: np.ndarray, dow: np.ndarray,
                    pool: str = "weekpart") -> np.ndarray:
        """The user's activity share per local hour of a day, from
        :meth:`hour_of_week_profile` pooled over days.

        Args:
            users: ``(n,)`` user indices.
            dow: ``(n,)`` local weekday of the day in question (Mon = 0).
            pool: ``"day"`` (that weekday only), ``"weekpart"`` (mean over weekdays, or over
                the weekend, as ``dow`` is) or ``"week"`` (mean over all seven days).

        Returns:
            float64 ``(n, 24)``.
        """
        if pool not in _POOLS:
            raise ValueError(f"`pool` must be 'day', 'weekpart' or 'week', got {pool!r}")
        u = np.asarray(users, dtype=np.int64)
        d = np.asarray(dow, dtype=np.int64)
        if u.size <= PROFILE_CACHE_USERS:  # the server's small passes: per-user cache
            return np.asarray(self._pooled_cached(u, pool)[np.arange(d.size),
                                                           pool_part(d, pool)])
        # Hour-major (7, 24, n) layout: the gather reads whole rows of the (168, cap) counts
        # and no (n, 168) transpose is copied. Every sum runs in the order of
        # hour_of_week_profile + weekpart_means (sequential over hours, then over days), so
        # the values are bit-identical to pooling that profile (tests/data/test_features.py).
        how = np.take(self.a.how, u, axis=1)  # (168, n) float32 counts
        k = self.spec.shrink_how
        tot = how.sum(axis=0, dtype=np.float64)
        tot += k
        prof = np.add(how, k * self._prior_how[:, None], dtype=np.float64)  # one pass, no copy
        np.divide(prof, tot, out=prof)
        prof = prof.reshape(7, 24, -1)
        if pool == "day":
            return np.asarray(prof[d, :, np.arange(d.size)])
        if pool == "week":
            return (np.add.reduce(prof, axis=0) / 7).T
        weekday, weekend = np.add.reduce(prof[:5], axis=0) / 5, np.add.reduce(prof[5:], axis=0) / 2
        return np.where(d >= 5, weekend, weekday).T

    def _pooled(self, users: np.ndarray, pool: str) -> np.ndarray:
        """``(n, P, 24)`` profiles per day (P = 7), day part (2: weekdays, weekend) or week
        (1), for :meth:`day_profile`."""
        prof = self.hour_of_week_profile(users).reshape(-1, 7, 24)
        if pool == "day":
            return prof
        if pool == "week":
            return (np.add.reduce(prof, axis=1) / 7)[:, None, :]  # == mean, without overhead
        return weekpart_means(prof)

    def pooled_profiles(self, users: np.ndarray, pool: str) -> np.ndarray:
        """Every day's :meth:`day_profile` of ``users`` at once: ``(n, P, 24)`` float64, one
        ``(24,)`` profile per day part :func:`pool_part` (P = 7, 2 or 1 for ``pool`` =
        ``"day"``, ``"weekpart"``, ``"week"``)."""
        if pool not in _POOLS:
            raise ValueError(f"`pool` must be 'day', 'weekpart' or 'week', got {pool!r}")
        return self._pooled(np.asarray(users, dtype=np.int64), pool)

    def how_cached(self, key: Hashable, users: np.ndarray | list[int],
                   compute: Callable[[np.ndarray], Any]) -> list[Any]:
        """Per-user values derived from the users' hour-of-week counts only, cached.

        ``compute(users[miss])`` returns one row per user (e.g. :meth:`pooled_profiles`);
        a row is kept per ``(key, user)`` until that user's hour-of-week counts change, so
        the server's small passes (a few users, most seen before) skip the profile work.
        ``key`` names what ``compute`` computes (and its parameters).

        Args:
            key: Hashable name of the derived value.
            users: ``(n,)`` user indices (int64, or a list of ints).
            compute: ``(k,) users -> (k, ...)`` values, computed for the users not cached.

        Returns:
            ``n`` rows, in the order of ``users``.
        """
        cache = self._profiles
        uids = users if isinstance(users, list) else users.tolist()
        how_ver = self._views().how_ver
        rows: list[Any] = []  # filled below where missing
        miss: list[int] = []
        for i, ui in enumerate(uids):
            hit = cache.get((key, ui))
            if hit is not None and hit[0] == how_ver[ui]:
                rows.append(hit[1])
            else:
                rows.append(None)
                miss.append(i)
        if miss:
            got = compute(np.array([uids[i] for i in miss], np.int64))
            if len(cache) + len(miss) > _PROFILE_CACHE_MAX:
                cache.clear()
            for j, i in enumerate(miss):
                rows[i] = got[j]
                cache[(key, uids[i])] = (how_ver[uids[i]], got[j])
        return rows

    def _pooled_cached(self, users: np.ndarray, pool: str) -> np.ndarray:
        """:meth:`_pooled` through the per-user cache (computed for the users whose
        hour-of-week counts changed since, in one call)."""
        rows = self.how_cached(pool, users, lambda us: self._pooled(us, pool))
        if not rows:
            return np.zeros((0, {"day": 7, "weekpart": 2, "week": 1}[pool], 24))
        return np.stack(rows)


def pool_part(dow: Any, pool: str) -> Any:
    """Index of local weekday ``dow`` in :meth:`FeatureState.pooled_profiles`' day parts:
    the weekday itself (``"day"``), 0 for Mon-Fri and 1 for the weekend (``"weekpart"``),
    0 (``"week"``); int64, shape of ``dow`` (a Python int for an int ``dow``)."""
    if type(dow) is int:  # one decision of the server's few-rows pass
        return dow if pool == "day" else int(dow >= 5) if pool == "weekpart" else 0
    d = np.asarray(dow, dtype=np.int64)
    if pool == "day":
        return d
    if pool == "weekpart":
        return (d >= 5).astype(np.int64)
    return np.zeros(d.shape, np.int64)


def weekpart_means(by_day: np.ndarray) -> np.ndarray:
    """Means over the weekdays (Mon-Fri) and over the weekend of a per-day array.

    Args:
        by_day: ``(n, 7, 24)``, e.g. an hour-of-week profile reshaped (Mon = day 0).

    Returns:
        float64 ``(n, 2, 24)``: index 0 the weekday mean, 1 the weekend mean (bit-identical to
        ``mean(axis=1)`` of each part, without its overhead).
    """
    x = np.asarray(by_day, dtype=np.float64)
    out = np.empty((x.shape[0], 2, x.shape[2]))
    week, end = out[:, 0], out[:, 1]
    np.add.reduce(x[:, :5], axis=1, out=week)  # (the sums of np.stack's former form, in place)
    np.add.reduce(x[:, 5:], axis=1, out=end)
    week /= 5
    end /= 2
    return out


def _f32(x: float) -> float:
    """``x`` rounded to float32 (a float32 operation on float32 inputs done in doubles and
    rounded once gives the float32 result: 53 >= 2 * 24 + 2 bits)."""
    return _F32.unpack(_F32.pack(x))[0]  # type: ignore[no-any-return]


_F32 = struct.Struct("f")
_F32X3 = struct.Struct("3f")
_F32ROW = struct.Struct(f"{N_FEATURES}f")  # one row of raw features (features_few)
_UNSEEN: Any = object()
_STARTS_MAX = 1 << 14  # (zone, bucket) clocks kept by decision_clock_few before starting anew


def _buckets(bucket: int | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``bucket`` as int64 of ``shape`` (a read-only broadcast of a scalar; arrays that
    already match are returned as they are: this sits on the server's per-request path)."""
    if isinstance(bucket, np.ndarray) and bucket.dtype == np.int64 and bucket.shape == shape:
        return bucket
    return np.broadcast_to(np.asarray(bucket, dtype=np.int64), shape)


def encode(raw: np.ndarray) -> np.ndarray:
    """Model-ready encoding of raw features (shared by the simulator, VW, PPO and OPE).

    Args:
        raw: ``(n, N_FEATURES)`` from :meth:`FeatureState.features`.

    Returns:
        float32 ``(n, N_ENCODED)`` in :data:`ENCODED_NAMES` order.
    """
    raw = np.asarray(raw, dtype=np.float32)
    out = np.empty((raw.shape[0], N_ENCODED), np.float32)
    ang = raw[:, 0] * (2 * np.pi / 24)
    out[:, 0] = np.sin(ang)
    out[:, 1] = np.cos(ang)
    out[:, 2] = raw[:, 1] >= 5
    out[:, 3] = np.log(raw[:, 2] + 1.0) / np.log(HOURS_CAP + 1.0)
    out[:, 4] = raw[:, 3]
    out[:, 5] = raw[:, 4] / 7.0
    out[:, 6] = raw[:, 5] / 7.0
    out[:, 7] = _log_activity(raw[:, 6])
    out[:, 8] = raw[:, 7]
    out[:, 9] = np.log1p(raw[:, 8])
    return out


#: Raw column (:data:`FEATURE_NAMES`) each :data:`ENCODED_NAMES` column of :func:`encode` is
#: a function of (every encoded column reads one raw column: what :func:`encode_row` caches).
ENCODE_SOURCE: tuple[int, ...] = (0, 0, 1, 2, 3, 4, 5, 6, 7, 8)
#: Raw columns :func:`encode_row` computes apart: ``activity_at_hour`` (continuous: its log
#: on a miss is :func:`_log_activity`, the same ufunc call as :func:`encode`'s, not a whole
#: ``encode``) and ``engagement`` (passed through).
_ROW_LOG, _ROW_PASS = F["activity_at_hour"], F["engagement"]
_ROW_MEMO_MAX = 4096  # cached values per raw column before its cache starts anew


def _encode_column(j: int, x: float) -> tuple[float, ...]:
    """The encoded value(s) of raw column ``j`` at value ``x``: ``encode`` itself on a one-row
    array (``_ROW_LOG``: :func:`_log_activity`, ``encode``'s expression for it)."""
    if j == _ROW_LOG:
        return (_log_activity(np.array([x], np.float32)).item(),)
    row = np.zeros((1, N_FEATURES), np.float32)
    row[0, j] = x
    return tuple(encode(row)[0, [k for k, src in enumerate(ENCODE_SOURCE) if src == j]]
                 .tolist())


#: Per raw column: value -> encoded value(s) (plain dicts: a lookup is one bytecode).
_MEMOS: list[dict[float, tuple[float, ...]] | None] = [
    {} if j != _ROW_PASS else None for j in range(N_FEATURES)]


def warm_encode_row(top: int = HOURS_CAP) -> None:
    """Fill :func:`encode_row`'s caches of the discrete columns for the values ``0..top``
    (hours, weekdays, capped hours, counts) with ONE ``encode`` call (a server binds its
    scorer with it: no decision pays a cache miss's ``encode`` for them)."""
    vals = np.arange(top + 1, dtype=np.float32)
    enc = encode(np.repeat(vals[:, None], N_FEATURES, axis=1)).tolist()
    xs = vals.tolist()
    for j, memo in enumerate(_MEMOS):
        if memo is None or j == _ROW_LOG:
            continue
        outs = [k for k, src in enumerate(ENCODE_SOURCE) if src == j]
        for x, e in zip(xs, enc, strict=True):
            memo.setdefault(x, tuple(e[k] for k in outs))


def encode_row(row: Sequence[float]) -> list[float]:
    """:func:`encode` of ONE row in plain Python floats (the server's one-decision path:
    each numpy call costs ~1 us there).

    ``encode`` is column-wise (:data:`ENCODE_SOURCE`), so each raw column's encoded values
    are cached by the column's value, computed by ``encode`` itself on a miss (the discrete
    columns: hour, weekday, capped hours, counts; ``activity_at_hour``, continuous, by
    ``encode``'s own numpy expression on a one-element array); ``engagement`` is passed
    through. Equal to ``encode(np.array([row]))[0]`` bit for bit
    (``tests/data/test_encode_row.py``; a signed zero reads as its cached twin).

    Args:
        row: ``N_FEATURES`` float32 values (``raw[i].tolist()`` of :meth:`FeatureState.features`).

    Returns:
        ``N_ENCODED`` floats, the float32 values of ``encode`` in :data:`ENCODED_NAMES` order.
    """
    out: list[float] = []
    for j, x in enumerate(row):
        memo = _MEMOS[j]
        if memo is None:
            out.append(x)
            continue
        try:
            out.extend(memo[x])
        except KeyError:
            if len(memo) >= _ROW_MEMO_MAX:
                memo.clear()
            v = memo[x] = _encode_column(j, x)
            out.extend(v)
    return out


def _log_activity(x: np.ndarray) -> np.ndarray:
    """``log_activity_at_hour`` of raw ``activity_at_hour`` values (float32 in and out)."""
    return np.log(np.maximum(x, 1e-3))


def _affinity_ratio(count: Any, den: Any, prior: Any, k: float) -> Any:
    """The category affinity's one formula, ``(count + k * prior) / den / prior`` with
    ``den = total + k``: the shrunk share over the population prior (numpy float64 arrays in
    :meth:`FeatureState.affinity`, Python doubles in :meth:`FeatureState.affinity_one`: the
    same IEEE double arithmetic)."""
    return ((count + k * prior) / den) / prior


# --------------------------------------------------------------------- log replay
@dataclass
class ReplayResult:
    """Features of every ``pushes`` row of a dataset, computed point-in-time.

    Attributes:
        features: ``(n_decisions, N_FEATURES)`` float32, row-aligned with ``ds.pushes``.
        affinity: ``(n_decisions,)`` affinity of the logged item (1.0 where not sent).
        user_index: ``(n_decisions,)`` index of the user in ``ds.users``.
        bucket: ``(n_decisions,)`` UTC hour bucket of the decision.
        state: The final :class:`FeatureState` (all events applied).
        category_affinity: ``(n_decisions, n_categories)`` float32 affinity of the user to
            every category at decision time (what an item policy scores candidates with),
            or None unless ``replay(..., category_affinity=True)``.
        rows: None (``features``, ``affinity`` and ``category_affinity`` have one row per
            ``pushes`` row), or, from ``iter_replay(..., need=, compact=True)``, the
            ``pushes`` rows they hold, ``np.flatnonzero(need)`` (their row ``i`` is pushes
            row ``rows[i]``; ``user_index`` and ``bucket`` keep one row per decision).
    """

    features: np.ndarray
    affinity: np.ndarray
    user_index: np.ndarray
    bucket: np.ndarray
    state: FeatureState
    category_affinity: np.ndarray | None = None
    rows: np.ndarray | None = None


def user_index(ds: Dataset, user_ids: pd.Series) -> np.ndarray:
    """Index of each ``user_id`` in ``ds.users`` (``-1`` if unknown), shape ``(n,)``."""
    cat = pd.Categorical(user_ids, categories=ds.users["user_id"].to_numpy())
    return np.asarray(cat.codes, dtype=np.int64)


def _id_array(s: pd.Series) -> np.ndarray:
    """Ids as an object array with ``""`` for missing (works for categorical columns too)."""
    return s.astype(object).where(s.notna(), "").to_numpy()


def _column_categories(spec: FeatureSpec, s: pd.Series) -> np.ndarray:
    """``spec.item_categories(_id_array(s))``, shape ``(len(s),)``: a categorical column (as
    the loader gives ids) looks up each distinct id once and gathers by code (missing: -1,
    as the ``""`` id)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        ids = np.asarray(s.cat.categories.astype(str), dtype=object)
        cats = np.append(spec.item_categories(ids) if ids.size else np.zeros(0, np.int64),
                         spec.item_categories([""]))
        return cats[s.cat.codes.to_numpy()]  # code -1 (missing) -> the appended last slot
    return spec.item_categories(_id_array(s))


def _bucket_set(b: np.ndarray) -> np.ndarray:
    """``np.unique(b)`` of hour buckets (a short range of int64): one bincount-like pass
    instead of a sort."""
    if b.size == 0:
        return np.unique(b)
    lo = int(b.min())
    seen = np.zeros(int(b.max()) - lo + 1, bool)
    seen[b - lo] = True
    return np.flatnonzero(seen).astype(np.int64) + lo


def replay(ds: Dataset, spec: FeatureSpec, *, with_affinity: bool = True,
           category_affinity: bool = False) -> ReplayResult:
    """Replay a dataset's events in time order and featurise every decision point-in-time.

    The loop runs once per hour bucket with vectorised updates inside; this is the same
    :class:`FeatureState` the simulator and the server use.

    Args:
        ds: The dataset.
        spec: Fitted pipeline parameters.
        with_affinity: Compute the affinity of the logged item (``ReplayResult.affinity``).
        category_affinity: Also compute every category's affinity at decision time
            (``ReplayResult.category_affinity``), e.g. to featurise all candidates of an
            item decision.
    """
    *_, (_, result) = iter_replay(ds, spec, with_affinity=with_affinity,
                                  category_affinity=category_affinity)
    return result


def iter_replay(ds: Dataset, spec: FeatureSpec, *, with_affinity: bool = True,
                category_affinity: bool = False, chunk_rows: int = 0,
                need: np.ndarray | None = None, compact: bool = False,
                ) -> Iterator[tuple[np.ndarray, ReplayResult]]:
    """:func:`replay` in time-ordered chunks, so a consumer can start on early decisions.

    Yields ``(rows, result)`` whenever at least ``chunk_rows`` decisions are done (and once
    at the end): ``rows`` are the ``ds.pushes`` rows featurised since the last yield, in time
    order; ``result`` is the one :class:`ReplayResult` being filled (its ``state`` is the
    live state, valid for the rows done so far). ``chunk_rows=0`` yields only at the end.

    ``need`` (bool, one per ``ds.pushes`` row; None = all) featurises only those decisions;
    the others keep zero features and affinity 1 (bandit rounds need the sent pushes only:
    ~2 % of a log's decisions). The needed rows' values are the same either way: a decision
    only reads the state, and the events advance their users' clocks by themselves.
    ``compact=True`` (with ``need``) allocates those arrays for the needed rows only
    (``result.rows``): one row per decision would be ~150 MB to zero on a 1.3M-decision log
    whose ~2 % are read.
    """
    p = ds.pushes
    d_sec = to_unix_seconds(p["ts"])
    d_bucket = d_sec // HOUR
    d_user = user_index(ds, p["user_id"])
    sent = p["sent"].fillna(False).to_numpy(bool)
    opened = p["opened"].fillna(False).to_numpy(bool)
    act = ds.activity
    a_sec = to_unix_seconds(act["ts"]) if len(act) else np.zeros(0, np.int64)
    a_bucket = a_sec // HOUR
    a_user = user_index(ds, act["user_id"]) if len(act) else np.zeros(0, np.int64)
    a_cat = (_column_categories(spec, act["item_id"]) if len(act)
             else np.zeros(0, np.int64))
    # purchases (the uplift gate's need state): purchase events and converted pushes
    a_buy = ((act["event"] == "purchase").to_numpy(bool, na_value=False) if len(act)
             and "event" in act.columns else np.zeros(len(act), bool))
    converted = (p["converted"].fillna(False).to_numpy(bool) if "converted" in p.columns
                 else np.zeros(len(p), bool))
    all_b = np.concatenate([d_bucket, a_bucket])
    start = int(all_b.min()) if all_b.size else 0
    state = FeatureState(spec, ds.users["timezone"].astype(str).tolist(), start)
    kept = slot = None
    if compact:
        if need is None:
            raise ValueError("compact=True needs need= (the rows to hold)")
        kept = np.flatnonzero(need)
        # slot[r]: the arrays' row of pushes row r (its rank among the needed rows)
        slot = np.cumsum(need.astype(np.int64)) - 1  # (not dtype=: a casting cumsum is ~20x slower)
    n_out = len(p) if kept is None else kept.size
    feats = np.zeros((n_out, N_FEATURES), np.float32)
    aff = np.ones(n_out, np.float32)
    item_cat = _column_categories(spec, p["item_id"]) if with_affinity else None
    all_cats = np.arange(spec.n_categories)[None, :]
    cat_aff = (np.ones((n_out, spec.n_categories), np.float32) if category_affinity
               else None)
    result = ReplayResult(feats, aff, d_user, d_bucket, state, cat_aff, kept)

    d_order = np.argsort(d_bucket, kind="stable")
    a_order = np.argsort(a_bucket, kind="stable")
    buckets = _bucket_set(all_b)
    d_edges = np.searchsorted(d_bucket[d_order], buckets, side="left")
    d_ends = np.searchsorted(d_bucket[d_order], buckets, side="right")
    a_edges = np.searchsorted(a_bucket[a_order], buckets, side="left")
    a_ends = np.searchsorted(a_bucket[a_order], buckets, side="right")
    done = 0  # decisions d_order[:done] are featurised and yielded
    for j, b in enumerate(buckets):
        rows = d_order[d_edges[j]:d_ends[j]]
        f_rows = rows if need is None else rows[need[rows]]
        if f_rows.size:
            out = f_rows if slot is None else slot[f_rows]
            feats[out] = state.features(d_user[f_rows], b)
            if item_cat is not None:
                is_sent = sent[f_rows]
                s = f_rows[is_sent]
                if s.size:
                    aff[out[is_sent]] = state.affinity(d_user[s], item_cat[s])
            if cat_aff is not None:
                cat_aff[out] = state.affinity(
                    d_user[f_rows], np.broadcast_to(all_cats, (f_rows.size, spec.n_categories)))
        arows = a_order[a_edges[j]:a_ends[j]]
        if arows.size:
            state.record_activity(a_user[arows], b, a_cat[arows])
            bought = arows[a_buy[arows]]
            if bought.size:
                state.record_purchase(a_user[bought], b)
        if rows.size:
            s = rows[sent[rows]]
            if s.size:
                state.record_push(d_user[s], b, opened[s])
                c = s[converted[s]]
                if c.size:
                    state.record_purchase(d_user[c], b)
        if chunk_rows and d_ends[j] - done >= chunk_rows:
            yield d_order[done:d_ends[j]], result
            done = int(d_ends[j])
    yield d_order[done:], result


# --------------------------------------------------------------------- items
class ItemCatalog:
    """Numeric item features from the ``items`` table (the one item featuriser).

    Numeric columns are standardised (``log1p`` first for ``price``); the category column is
    one-hot encoded with the :class:`FeatureSpec` vocabulary; other string columns are
    ignored here (VW hashes them itself from :attr:`raw`).

    Args:
        items: The ``items`` table.
        spec: Fitted feature spec (category vocabulary).
    """

    def __init__(self, items: pd.DataFrame, spec: FeatureSpec) -> None:
        self.raw = items.reset_index(drop=True)
        self.ids = self.raw["item_id"].astype(str).to_numpy(dtype=object)
        self.index = {i: j for j, i in enumerate(self.ids)}
        self.category = spec.item_categories(self.ids)
        cols, names = [], []
        for c in self.raw.columns:
            if c in ("item_id", spec.category_column):
                continue
            s = self.raw[c]
            if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
                v = s.to_numpy(float)
                if c == "price":
                    v = np.log1p(np.maximum(v, 0))
                sd = v.std()
                cols.append((v - v.mean()) / (sd if sd > 0 else 1.0))
                names.append(c)
        onehot = np.zeros((len(self.ids), spec.n_categories), np.float32)
        ok = self.category >= 0
        onehot[np.flatnonzero(ok), self.category[ok]] = 1.0
        num = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(self.ids), 0),
                                                                                np.float32)
        #: ``(n_items, d_item)`` standardised numeric features then category one-hot.
        self.features = np.concatenate([num, onehot], axis=1)
        self.feature_names: tuple[str, ...] = tuple(names) + tuple(
            f"cat={c}" for c in spec.categories)

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, item_ids: Sequence[Any]) -> np.ndarray:
        """Catalog index of each id, shape ``(n,)``; raises ``KeyError`` for unknown ids."""
        try:
            return np.array([self.index[str(i)] for i in item_ids], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"unknown item_id {exc.args[0]!r}; add it to the items table") from None


# --------------------------------------------------------------------- templates
#: Per-(user, template) recency features of a template decision (:func:`encode_template_recency`).
TEMPLATE_RECENCY_NAMES: tuple[str, ...] = ("tmpl_seen_24h", "tmpl_seen_7d")
#: Hours since a template was last shown are capped here (also "never shown").
TEMPLATE_HOURS_CAP = 336
_NEVER = np.iinfo(np.int64).min // 2


class TemplateRecency:
    """Hours since each user last saw each message template, point-in-time.

    The same rule as :class:`FeatureState`: a show recorded in bucket ``b`` is pending and
    visible to decisions in buckets ``> b`` only. Keeps the last two show buckets per (user,
    template), so a second show in the current bucket does not hide the previous one.

    Args:
        n_users: Users (indices ``0..n_users-1``).
        n_templates: Templates (arm indices ``0..n_templates-1``).
    """

    def __init__(self, n_users: int, n_templates: int) -> None:
        self.last = np.full((n_users, n_templates), _NEVER, np.int64)
        self.before = np.full((n_users, n_templates), _NEVER, np.int64)

    def add_users(self, n: int) -> None:
        """Append ``n`` users who never saw a template."""
        t = self.last.shape[1]
        self.last = np.concatenate([self.last, np.full((n, t), _NEVER, np.int64)])
        self.before = np.concatenate([self.before, np.full((n, t), _NEVER, np.int64)])

    def record(self, users: np.ndarray, bucket: int | np.ndarray, templates: np.ndarray) -> None:
        """Record that ``users[i]`` was shown template ``templates[i]`` in ``bucket``."""
        u = np.asarray(users, np.int64)
        t = np.asarray(templates, np.int64)
        b = np.broadcast_to(np.asarray(bucket, np.int64), u.shape)
        # the usual case: one show per pair, vectorised (one show: the loop below is cheaper)
        if u.size > 1 and np.unique(u * self.last.shape[1] + t).size == u.size:
            cur, bef = self.last[u, t], self.before[u, t]
            newer = b > cur
            mid = ~newer & (b < cur) & (b > bef)
            self.before[u[newer], t[newer]] = cur[newer]
            self.last[u[newer], t[newer]] = b[newer]
            self.before[u[mid], t[mid]] = b[mid]
            return
        # repeats of a (user, template) pair must apply in order (plain ints: cheap indexing)
        for ui, ti, bi in zip(u.tolist(), t.tolist(), b.tolist(), strict=True):
            self.record_one(ui, bi, ti)

    def record_one(self, user: int, bucket: int, template: int) -> None:
        """:meth:`record` of one show, on plain ints (the server's one-decision path)."""
        last, before = self.last, self.before
        prev = last.item(user, template)
        if bucket > prev:
            before[user, template] = prev
            last[user, template] = bucket
        elif prev > bucket > before.item(user, template):
            before[user, template] = bucket

    def hours(self, users: np.ndarray, bucket: int | np.ndarray) -> np.ndarray:
        """``(n, n_templates)`` hours since each template was last shown before ``bucket``
        (capped at :data:`TEMPLATE_HOURS_CAP`, which also means never)."""
        u = np.asarray(users, np.int64)
        if u.size == 1:  # one decision: the same rule on plain ints (~10x fewer numpy calls)
            return np.array([self.hours_one(int(u[0]), int(np.asarray(bucket).ravel()[0]))],
                            np.float32)
        b = np.broadcast_to(np.asarray(bucket, np.int64), u.shape)[:, None]
        last, before = self.last[u], self.before[u]
        seen = np.where(last < b, last, np.where(before < b, before, _NEVER))
        return np.minimum(b - seen, TEMPLATE_HOURS_CAP).astype(np.float32)

    def hours_one(self, user: int, bucket: int) -> list[int]:
        """:meth:`hours` of one user, as plain ints (the server's one-decision path)."""
        cap = TEMPLATE_HOURS_CAP
        row = [bucket - (x if x < bucket else (y if y < bucket else _NEVER)) for x, y in
               zip(self.last[user].tolist(), self.before[user].tolist(), strict=True)]
        return [cap if cap < h else h for h in row]  # min(h, cap)


#: Windows (hours) of :data:`TEMPLATE_RECENCY_NAMES`: shown less than this many hours ago.
TEMPLATE_RECENCY_WINDOWS: tuple[int, int] = (24, 168)


def encode_template_recency(hours: np.ndarray) -> np.ndarray:
    """``(..., n_templates, len(TEMPLATE_RECENCY_NAMES))`` features of
    :meth:`TemplateRecency.hours`: shown in the last 24 h, in the last 7 days."""
    h = np.asarray(hours, np.float32)
    out = np.empty((*h.shape, 2), np.float32)  # (no np.stack: this is on a decision's path)
    np.less(h, TEMPLATE_RECENCY_WINDOWS[0], out=out[..., 0])
    np.less(h, TEMPLATE_RECENCY_WINDOWS[1], out=out[..., 1])
    return out


def encode_template_recency_one(hours: Sequence[float]) -> list[tuple[float, float]]:
    """:func:`encode_template_recency` of one decision's :meth:`TemplateRecency.hours_one`
    (plain floats: 1.0 / 0.0 per arm and window)."""
    w24, w7d = TEMPLATE_RECENCY_WINDOWS
    return [(1.0 if h < w24 else 0.0, 1.0 if h < w7d else 0.0) for h in hours]


def template_recency_replay(users: np.ndarray, buckets: np.ndarray, templates: np.ndarray,
                            n_users: int, n_templates: int) -> np.ndarray:
    """:meth:`TemplateRecency.hours` at every logged decision, replayed in time order.

    Args:
        users: ``(n,)`` user index of each decision.
        buckets: ``(n,)`` UTC hour bucket of each decision.
        templates: ``(n,)`` arm index shown (-1 = no template: not sent or not an arm).
        n_users: Number of users.
        n_templates: Number of arms.

    Returns:
        ``(n, n_templates)`` float32 hours, row-aligned with the inputs.
    """
    u = np.asarray(users, np.int64)
    b = np.asarray(buckets, np.int64)
    t = np.asarray(templates, np.int64)
    out = np.zeros((u.size, n_templates), np.float32)
    state = TemplateRecency(n_users, n_templates)
    order = np.argsort(b, kind="stable")
    ub, starts = np.unique(b[order], return_index=True)
    ends = np.append(starts[1:], order.size)
    for bucket, lo, hi in zip(ub, starts, ends, strict=True):
        rows = order[lo:hi]
        out[rows] = state.hours(u[rows], bucket)
        shown = rows[t[rows] >= 0]
        if shown.size:
            state.record(u[shown], bucket, t[shown])
    return out
