"""Nightly send plans: every user's sends for one local calendar day, decided in advance.

``pushrl plan --state DIR --date 2026-03-30 --out plan.parquet`` runs the promoted timing and
item policies over each user's hours of that day *in the user's own time zone* (so a plan for
"Monday" is Monday 00:00-23:59 local everywhere; the UTC buckets it spans differ by zone) and
writes one row per planned send (``--all-hours``: one per user-hour) with its probabilities.

What a plan assumes: no feedback and no new activity between now and the planned hours (a
plan is made before the day starts). Each planned send is recorded in a scratch copy of the
user's features before the next hour is decided, so caps, ``sends_24h``/``sends_7d`` and
``hours_since_push`` see the plan's own earlier sends exactly as the server would see the
sends it made. The pieces are the server's and the simulator's own definitions:

* features: :class:`~pushrl.data.features.FeatureState` (a copy of the served state);
* guardrails: :meth:`Guardrails.verdict <pushrl.rules.guardrails.Guardrails.verdict>` with
  :class:`~pushrl.rules.guardrails.DayCount` (sends today, started from the server's own
  counts) and the pipeline's ``sends_7d`` as the weekly window (one decision per bucket, as
  in the simulator), and the users' subscription status;
* the timing decision: the active policy's ``action_dist`` + ``sample`` on a
  :class:`~pushrl.policies.base.TimingContext`, like :class:`~pushrl.serve.engine.Engine`;
* the item: :func:`pushrl.serve.engine.choose_items` (the server's own item step).

Reproducibility: every random number is the server's own keyed draw
(:class:`~pushrl.serve.engine.KeyedDraws`: a hash of ``(seed, stream, ts, user)``, streams
``timing`` and ``item`` at the hour's start), so a plan made with the server's ``--seed``
decides every user-hour exactly as that server would, stochastic policies included, and
neither the shard size nor the number of workers changes a plan: a Ray run (``ray=True``, or
``ray_address`` to join a cluster) returns exactly the local run's plan
(``tests/serve/test_plan.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.compare.raytasks import shard_plan
from pushrl.data.features import F, FeatureSpec, FeatureState, ItemCatalog
from pushrl.errors import PushrlError
from pushrl.policies.base import SEND, TimingContext
from pushrl.policies.item_data import ContextEncoder
from pushrl.rules.guardrails import REASONS, DayCount, Guardrails
from pushrl.units import HOUR, HOURS_PER_DAY

#: Users per shard (a unit of work; the draws are keyed by user and hour, so any size gives
#: the same plan).
DEFAULT_SHARD = 50_000
#: Columns of a plan file, in order.
PLAN_COLUMNS = ("user_id", "ts", "local_hour", "send", "item_id", "pscore", "p_send",
                "pscore_item", "reason", "policy", "item_policy")
_DAY = 86_400
# a local calendar day spans these UTC buckets around its UTC date: zones are UTC-12..UTC+14
_BEFORE, _AFTER = 14, 12 + 1


@dataclass
class Shard:
    """What one shard needs to plan: its users' state and the shared policies.

    Attributes:
        index: Shard number (the draws are keyed by user and hour, not by shard).
        user_ids: ``(k,)`` opaque user ids.
        features: :meth:`FeatureState.to_arrays` of the shard's users (slots 0..k-1).
        affinity: ``(k, n_categories)`` category affinity (not changed by a plan: it comes
            from activity), or None without categories.
        today: ``(day, count, prev)`` of :class:`DayCount` for the shard's users.
        subscribed: ``(k,)`` bool.
        held_out: ``(k,)`` bool: in the state's live holdout (never sent).
    """

    index: int
    user_ids: np.ndarray
    features: dict[str, np.ndarray]
    affinity: np.ndarray | None
    today: tuple[np.ndarray, np.ndarray, np.ndarray]
    subscribed: np.ndarray
    held_out: np.ndarray | None = None


@dataclass
class Policies:
    """The timing and item policies a plan applies (picklable for Ray workers).

    Attributes:
        timing: The timing policy (``action_dist``/``sample``).
        timing_label: ``name@version``.
        item: The item policy.
        item_label: ``name@version``.
        catalog: The item policy's catalog and encoder
            (:meth:`pushrl.serve.engine.Engine.encoding`).
        encoder: Its context encoder.
        guardrails: The guardrails applied (the server's effective ones).
        spec: The feature spec of the state.
    """

    timing: Any
    timing_label: str
    item: Any
    item_label: str
    catalog: ItemCatalog
    encoder: ContextEncoder
    guardrails: Guardrails
    spec: FeatureSpec


@dataclass
class PlanResult:
    """A computed plan.

    Attributes:
        frame: One row per planned send (or per user-hour with ``all_hours``), columns
            :data:`PLAN_COLUMNS`; ``ts`` is the UTC start of the planned hour.
        meta: Date, users, shards, sends, seconds, mode, policies, guardrails.
    """

    frame: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


def parse_date(text: str) -> int:
    """Day number (days since 1970-01-01) of an ISO date ``YYYY-MM-DD``."""
    try:
        d = dt.date.fromisoformat(text)
    except ValueError:
        raise PushrlError(f"--date {text!r} is not a date; give YYYY-MM-DD, e.g. 2026-03-30"
                          ) from None
    return (d - dt.date(1970, 1, 1)).days


def plan_shard(shard: Shard, pol: Policies, day: int, seed: int,
               all_hours: bool = False) -> pd.DataFrame:
    """Plan local calendar day ``day`` for one shard (module docstring for the rules).

    Returns:
        The shard's plan rows (:data:`PLAN_COLUMNS`), ordered by hour then user.
    """
    from pushrl.serve.engine import KeyedDraws, choose_items

    bitgen = np.random.PCG64(seed)
    fs = FeatureState.from_arrays(pol.spec, shard.features)
    k = len(shard.user_ids)
    local = np.arange(k, dtype=np.int64)
    dc = DayCount(k)
    dc.day[:], dc.count[:], dc.prev[:] = shard.today
    lo = day * HOURS_PER_DAY - _BEFORE
    hi = (day + 1) * HOURS_PER_DAY + _AFTER
    out: list[dict[str, np.ndarray]] = []
    for b in range(lo, hi):
        hour, _, days = fs.local_time(local, b)
        m = np.flatnonzero(days == day)
        if not m.size:
            continue
        started = fs.clock(m) > b
        if started.any():
            raise PushrlError(
                f"{_date(day)} has already started for user {shard.user_ids[m[started][0]]} "
                f"(the state has activity or decisions after {_iso(b)}); plan a later --date")
        fs.advance(m, b)
        raw = fs.features(m, b)
        today = dc.get(m, days[m])
        code = pol.guardrails.verdict(hour[m], today, raw[:, F["sends_7d"]].astype(np.int64),
                                      shard.subscribed[m],
                                      None if shard.held_out is None else shard.held_out[m])
        allowed = code == 0
        ctx = TimingContext(raw, allowed, m, np.full(m.size, b, np.int64), fs, today)
        uids = shard.user_ids[m].tolist()
        at = [b * HOUR] * m.size
        td = pol.timing.sample(pol.timing.action_dist(ctx),
                               KeyedDraws(bitgen, seed, "timing", uids, at))
        send = np.asarray(td.action) == SEND
        p_send = np.asarray(td.action_dist)[:, SEND].astype(np.float64)
        items = np.full(m.size, None, dtype=object)
        p_item = np.ones(m.size)
        if send.any():
            s = np.flatnonzero(send)
            aff = None if shard.affinity is None else shard.affinity[m[s]]
            chosen, pi = choose_items(pol.item, pol.catalog, pol.encoder, raw[s], aff,
                                      KeyedDraws(bitgen, seed, "item", [uids[j] for j in s],
                                                 [b * HOUR] * s.size))
            items[s] = chosen
            p_item[s] = pi
            fs.record_push(m[s], b)
            dc.add(m[s], days[m[s]])
        keep = slice(None) if all_hours else send
        rows = m[keep]
        if not rows.size:
            continue
        reason = np.array([("policy" if c == 0 else f"guardrail:{REASONS[c]}")
                           for c in code[keep].tolist()], dtype=object)
        out.append({
            "user_id": shard.user_ids[rows], "ts": np.full(rows.size, b * HOUR, np.int64),
            "local_hour": hour[rows].astype(np.int8), "send": send[keep],
            "item_id": items[keep], "pscore": np.where(send, p_send * p_item, 1 - p_send)[keep],
            "p_send": p_send[keep], "pscore_item": np.where(send, p_item, np.nan)[keep],
            "reason": reason})
    if not out:
        return _frame({c: np.array([], dtype=object) for c in PLAN_COLUMNS}, pol)
    return _frame({c: np.concatenate([o[c] for o in out]) for c in out[0]}, pol)


def _frame(cols: dict[str, np.ndarray], pol: Policies) -> pd.DataFrame:
    df = pd.DataFrame({c: cols[c] for c in PLAN_COLUMNS if c in cols})
    df["ts"] = pd.to_datetime(df["ts"].astype(np.int64), unit="s", utc=True)
    df["send"] = df["send"].astype(bool)
    for c in ("pscore", "p_send", "pscore_item"):
        df[c] = df[c].astype(np.float64)
    df["local_hour"] = df["local_hour"].astype(np.int8)
    df["policy"] = pol.timing_label
    df["item_policy"] = df["send"].map({True: pol.item_label, False: None})
    return df[list(PLAN_COLUMNS)]


def _iso(bucket: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket * HOUR))


def _date(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def make_shards(state: Any, shard_size: int) -> list[Shard]:
    """Cut a :class:`~pushrl.serve.state.ServerState` into :class:`Shard` payloads."""
    n = len(state.users)
    ids = np.empty(n, dtype=object)
    for uid, i in state.users.items():
        ids[i] = uid
    ncat = state.spec.n_categories
    state.sends.today.resize(n)
    td = state.sends.today
    subs = state.subscriptions.get(np.arange(n, dtype=np.int64)) if n else np.ones(0, bool)
    held = state.held_out.mask(np.arange(n, dtype=np.int64)) if n else None
    out = []
    for k, (a, b) in enumerate(shard_plan(n, shard_size)):
        u = np.arange(a, b, dtype=np.int64)
        aff = (state.fs.affinity(u, np.broadcast_to(np.arange(ncat), (u.size, ncat)))
               if ncat else None)
        out.append(Shard(k, ids[a:b], state.fs.copy_users(u).to_arrays(),
                         None if aff is None else np.asarray(aff),
                         (td.day[a:b].copy(), td.count[a:b].copy(), td.prev[a:b].copy()),
                         subs[a:b].copy(), None if held is None else held[a:b].copy()))
    return out


def _scores(values: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: values


def open_state(state_dir: str | Path, registry: str | Path, *, timing: str | None = None,
               item: str | None = None, guardrails: Guardrails | None = None,
               overrides: dict[str, Any] | None = None) -> tuple[Any, Policies]:
    """A read-only :class:`~pushrl.serve.state.ServerState` of ``state_dir`` and the policies
    a server started on it would decide with (a running server may keep using the state:
    nothing is written).

    Policies: the registry's promoted ones (``_active.json``), or the ``timing``/``item``
    references (``name@vN``); when no item policy is promoted, the server's own default
    most-popular over the state's data. Feature spec: the active policies', else the state's
    ``feature_spec.json``, else flat priors over its items' categories. Guardrails as the
    server applies them (:func:`pushrl.serve.guardrails.effective`), with the state's live
    holdout (held-out users are never planned a send). ``overrides``: policy
    objects instead (keys ``timing``, ``item``; for tests and embedding, as
    :func:`~pushrl.serve.app.create_app`).
    """
    from pushrl.serve import guardrails as serve_guardrails
    from pushrl.serve import history, holdout
    from pushrl.serve.engine import encoding
    from pushrl.serve.holdout import HeldOut
    from pushrl.serve.policyset import CatalogPopular, Loaded, load_ref, load_set
    from pushrl.serve.state import ServerState, default_spec
    from pushrl.serve.store import ReadOnlyLog

    log = ReadOnlyLog(state_dir)
    popular = CatalogPopular(_scores(np.zeros(0)), "")
    ps = load_set(registry, overrides=overrides,
                  defaults={"item": Loaded(popular, "most-popular@server")})
    t = load_ref(registry, timing, "timing") if timing else ps.timing
    i = load_ref(registry, item, "item") if item else ps.item
    spec_file = Path(state_dir) / history.SPEC_FILE
    spec = i.spec or t.spec or (
        FeatureSpec.from_dict(json.loads(spec_file.read_text())) if spec_file.exists() else
        default_spec(log.query("SELECT item_id, category FROM items ORDER BY seq")))
    st = ServerState(log, spec)  # type: ignore[arg-type]
    st.held_out = HeldOut(holdout.check(state_dir, None))  # the state's live holdout, if any
    st.rebuild()
    ids = [it.item_id for it in st.item_list]
    kept = history.server_popularity(state_dir)
    if kept:
        popular.scores = _scores(history.popularity_scores(kept, ids))
        popular.source = "the state's imported data"
    else:
        counts = dict(log.query(history.ITEM_EVENTS_SQL))
        popular.scores = _scores(np.array([float(counts.get(x, 0)) for x in ids]))
        popular.source = "activity events in the state"
    catalog, enc, _ = encoding(st, i)
    g = serve_guardrails.effective(guardrails, t.policy, t.label)
    return st, Policies(t.policy, t.label, i.policy, i.label, catalog, enc, g, spec)


def plan(state_dir: str | Path, date: str, *, registry: str | Path = "policies",
         timing: str | None = None, item: str | None = None,
         guardrails: Guardrails | None = None, overrides: dict[str, Any] | None = None,
         seed: int = 0,
         shard_size: int = DEFAULT_SHARD, all_hours: bool = False, ray: bool = False,
         ray_address: str | None = None, workers: int | None = None,
         progress: Callable[[int, int], None] | None = None) -> PlanResult:
    """Plan every user's sends for local calendar day ``date`` (the Python API of
    ``pushrl plan``; module docstring for the rules).

    Args:
        state_dir: A server state (``pushrl state import`` or a running server's ``--state``).
        date: ``YYYY-MM-DD``: the local day to plan (must not have started for any user).
        registry: Policy registry; its promoted policies are used unless overridden.
        timing: Timing policy reference instead of the promoted one.
        item: Item policy reference instead of the promoted one.
        guardrails: Guardrails instead of the active timing policy's.
        overrides: Policy objects instead of the registry's (keys ``timing``, ``item``).
        seed: Seed of the keyed draws (the server's ``--seed`` reproduces its decisions).
        shard_size: Users per unit of work (rows come shard by shard, each by hour then
            user; the rows themselves do not depend on it).
        all_hours: Write every user-hour (with ``send`` False and ``1 - p_send``), not only
            the sends.
        ray: Run the shards as Ray tasks (local Ray with ``workers`` CPUs).
        ray_address: Join this Ray cluster instead.
        workers: CPUs of the local Ray (default: all).
        progress: ``progress(done, total)`` in shards.
    """
    t0 = time.perf_counter()
    day = parse_date(date)
    st, pol = open_state(state_dir, registry, timing=timing, item=item, guardrails=guardrails,
                         overrides=overrides)
    if not st.users:
        st.log.close()
        raise PushrlError(f"state {state_dir} has no users; import them with "
                          "`pushrl state import DATA --state DIR`")
    shards = make_shards(st, shard_size)
    st.log.close()
    if ray or ray_address:
        from pushrl.compare.raytasks import run_tasks

        frames = run_tasks(plan_shard, [(s, pol, day, seed, all_hours) for s in shards],
                           ray_address, workers, progress)
        mode = "ray"
    else:
        frames, mode = [], "local"
        for s in shards:
            frames.append(plan_shard(s, pol, day, seed, all_hours))
            if progress:
                progress(s.index + 1, len(shards))
    df = pd.concat(frames, ignore_index=True)
    n = len(st.users)
    sends = int(df["send"].sum())
    meta = {"date": _date(day), "users": n, "shards": len(shards), "shard_size": shard_size,
            "seed": seed, "sends": sends, "sends_per_user": round(sends / n, 4),
            "rows": len(df), "all_hours": all_hours, "mode": mode,
            "timing_policy": pol.timing_label, "item_policy": pol.item_label,
            "guardrails": pol.guardrails.to_dict(),
            "seconds": round(time.perf_counter() - t0, 2)}
    return PlanResult(df, meta)


def write_plan(result: PlanResult, out: str | Path) -> Path:
    """Write a plan as Parquet (its meta in the file's key-value metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(out)
    if p.suffix != ".parquet":
        raise PushrlError(f"--out {out} must end in .parquet")
    p.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(result.frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"pushrl_plan": json.dumps(result.meta).encode()})
    tmp = p.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, p)
    return p
