"""The running server: durable log, state, engine and policies, and the request logic.

HTTP lives in :mod:`pushrl.serve.app`; this module is plain Python (async only where it
waits for durability), so it can be driven and tested without HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import FeatureSpec
from pushrl.errors import PushrlError, TemplateError
from pushrl.policies.base import Policy
from pushrl.serve import history, holdout, registry_ops, trigger_holdout
from pushrl.serve.auth import KeyChecker, load_keys
from pushrl.serve.config import ServeConfig
from pushrl.serve.batcher import DecisionBatcher
from pushrl.serve.engine import DecideRow, Engine
from pushrl.serve.holdout import HeldOut
from pushrl.serve.trigger_holdout import KindHeldOut
from pushrl.serve.errors import Conflict, NotFound, ServeError, Unprocessable
from pushrl.serve.metrics import ServeMetrics
from pushrl.serve.policyset import CatalogPopular, Loaded, PolicySet, catalog_mismatch, load_set
from pushrl.serve.profiles import LiveProfiles
from pushrl.serve.shards import check_owner
from pushrl.serve.schemas import DecideIn, Event, FeedbackIn, set_time_window
from pushrl.serve.state import ServerState, default_spec
from pushrl.serve.store import OP_ACTIVITY, OP_OPEN, OP_PURCHASE, DurableLog, Statement
from pushrl.serve.trigger_requests import TriggerRequests
from pushrl.serve.channels import ServerChannels
from pushrl.serve.templates import ServerTemplates
from pushrl.serve.triggers import ContextDelay, DelayPolicy, FixedDelay, ServerTriggers
from pushrl.units import HOUR

log = logging.getLogger("pushrl.serve")
SPEC_FILE = "feature_spec.json"
POPULAR_FILE = "item_popularity.json"
#: First and longest wait (s) between write probes of a failed durable log.
RECOVER_SECONDS = (0.1, 5.0)
OUTCOME_COLS = ("opened", "clicked", "converted", "revenue", "unsubscribed")
#: With triggers on, larger event batches are recorded in a worker thread.
LOOP_EVENTS = 64
#: A ``/v1/decide/batch`` of at most this many requests without look-ahead is decided on the
#: event loop (like a micro-batcher pass); a larger one in a worker thread.
INLINE_BATCH = 32


def _sec(ts: Any, now: int) -> int:
    return now if ts is None else int(ts.timestamp())


class Server(TriggerRequests):
    """Everything a running policy server holds (the behaviour-trigger requests:
    :class:`~pushrl.serve.trigger_requests.TriggerRequests`).

    Args:
        cfg: Configuration.
        overrides: Policies used instead of the registry's (tests, embedding).
    """

    def __init__(self, cfg: ServeConfig, *, overrides: dict[str, Policy] | None = None) -> None:
        self.cfg = cfg
        set_time_window(*cfg.time_window_days)
        #: Loaded plan files (``--plan``), None without any.
        self.plans = None
        if cfg.plans:
            from pushrl.serve.served_plans import ServedPlans

            self.plans = ServedPlans(cfg.plans)
        self.metrics = ServeMetrics()
        self.keys = KeyChecker(load_keys(cfg.api_keys)) if cfg.api_keys else None
        self.overrides = overrides
        self.log = DurableLog(cfg.state, sync=cfg.sync, on_commit=self.metrics.on_commit,
                              accept_empty=cfg.accept_empty_state)
        #: True when the spec is the flat default (no --catalog, no trained spec).
        self.default_spec = False
        #: The default item policy: most-popular over this server's own data (never the
        #: embedded synthetic data); its scores are read at decision time.
        self._item_scores: dict[str, float] = {}
        self._item_events = np.zeros(0)
        self._scores_cache = np.zeros(0)
        self._popular = CatalogPopular(self._popularity, "server")
        self.defaults = {"item": Loaded(self._popular, "most-popular@server")}
        self._own_delay: DelayPolicy = FixedDelay(cfg.trigger_delay_hours)
        policies = load_set(cfg.registry, overrides=overrides, defaults=self.defaults,
                            fallback=True)
        self.base_spec = self._base_spec(cfg.catalog)
        self._init_popularity()
        self.state = ServerState(self.log, policies.spec or self.base_spec,
                                 self._triggers(cfg, policies.delay))
        if self.state.triggers is not None:
            self.state.triggers.shadow = self._delay_shadow(policies.shadow_delay)
        try:
            self.state.held_out = HeldOut(holdout.bind(self.log, cfg.holdout))
            self.state.held_out_kinds = KindHeldOut(trigger_holdout.bind(
                self.log, dict(cfg.trigger_holdouts)))
        except Exception:
            self.log.close()
            raise
        self.state.rebuild()
        self.live_profiles = LiveProfiles.of(self.log)  # GET /v1/users/{id}/profile
        self._count_item_events()
        kill = self.log.get_meta("kill_switch") == "1"
        self.engine = Engine(self.state, cfg, policies, self.metrics, kill_switch=kill)
        if cfg.templates is not None:  # the template slot (#17): checked here, not at send
            try:
                self.engine.templates = ServerTemplates.load(cfg.templates, cfg.template_policy,
                                                             self.state, seed=cfg.seed)
                self.engine.templates.rebuild(self.state, self.log)
            except Exception:
                self.log.close()
                raise
        if cfg.channels is not None:  # the channel slot (#17, serve/channels.py)
            try:
                self.engine.channels = ServerChannels.load(cfg.channels, cfg.channel_policy,
                                                           self.state)
                self.engine.channels.rebuild(self.state, self.log)
            except Exception:
                self.log.close()
                raise
        self.metrics.kill_switch.set(int(kill))
        self.metrics.users.set(len(self.state.users))
        self._pending_fb: dict[str, dict[str, Any]] = {}
        self.batcher = DecisionBatcher(self)
        self._ptr_stat: tuple[int, int] | None = self._pointer_stat()
        self._swap_lock = asyncio.Lock()
        self._committing = 0  # commits submitted and not yet resolved
        #: Set while a worker thread works on the state (:meth:`decide_batch`); done after.
        self.busy: asyncio.Future[None] | None = None
        self._recovery: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ setup
    def _triggers(self, cfg: ServeConfig, promoted: Loaded | None) -> ServerTriggers | None:
        """The trigger tracker (None without ``--triggers``); its rules are kept in the
        log's meta row ``triggers`` (what `pushrl logs export` replays them with). Its delay
        policy is the promoted one (slot ``delay``), else ``--trigger-delay-policy``."""
        if cfg.triggers is None:
            return None
        self._own_delay = self._delay_policy(cfg)
        rules = json.dumps(cfg.triggers.to_dict(), sort_keys=True)
        if self.log.get_meta("triggers") not in (None, rules):
            log.warning("--triggers differs from the rules this state dir ran with: triggers "
                        "of past events are re-created under the new rules (those without a "
                        "logged delay arm are dropped, never sent)")
        self.log.write([("INSERT OR REPLACE INTO meta VALUES ('triggers', ?)", (rules,))])
        def count(kind: str, what: str, n: int) -> None:
            self.metrics.triggers.labels(kind, what).inc(n)

        return ServerTriggers(cfg.triggers, self._delay_for(promoted),
                              scheduled_priority=cfg.scheduled_priority, seed=cfg.seed,
                              count=count)

    def _delay_shadow(self, shadow: Loaded | None) -> DelayPolicy | None:
        """The shadow delay policy of a policy set's ``delay`` slot (None: no shadow)."""
        return None if shadow is None or self.cfg.triggers is None else self._delay_for(shadow)

    def _delay_for(self, promoted: Loaded | None) -> DelayPolicy:
        """The delay policy for a policy set's ``delay`` slot (None: the server's own)."""
        if promoted is None:
            return self._own_delay
        assert self.cfg.triggers is not None
        return ContextDelay(promoted.policy, self.cfg.triggers, self._trigger_guardrails)

    def _trigger_guardrails(self) -> Any:
        """The guardrails delay contexts skip quiet hours with (the engine's effective ones;
        the configured ones while the state is rebuilt, before the engine exists)."""
        eng = getattr(self, "engine", None)
        return self.cfg.guardrails if eng is None else eng.guardrails

    def check_delay(self, loaded: Loaded) -> None:
        """Refuse a delay policy whose arms are not this server's trigger arms.

        Raises:
            Conflict: ``delay_arms``.
        """
        from pushrl.serve.policyset import delay_arms
        from pushrl.sim.trigger_context import common_arms

        if self.cfg.triggers is None or not hasattr(loaded.policy, "trigger_arms"):
            return
        try:
            want = common_arms(self.cfg.triggers)
        except ValueError as exc:
            raise Conflict("delay_arms", f"refusing {loaded.label}: {exc}") from None
        if delay_arms(loaded) != want:
            raise Conflict("delay_arms", f"refusing {loaded.label}: it decides over the arms "
                           f"{list(delay_arms(loaded))}, this server's --triggers over "
                           f"{list(want)}; train it on logs of these rules; nothing was changed")

    def _delay_policy(self, cfg: ServeConfig) -> DelayPolicy:
        """``--trigger-delay-policy`` (a delay baseline or a trained artifact), else the
        fixed-delay heuristic."""
        ref = cfg.trigger_delay_policy
        if ref is None:
            return FixedDelay(cfg.trigger_delay_hours)
        from pushrl.policies.baselines import make_baseline, registry
        from pushrl.policies.registry import load_policy, resolve, verify_artifact

        if ref in registry():
            ok, pol = ref.startswith("delay-"), make_baseline(ref)
        else:
            ok = "trigger_policy" in verify_artifact(resolve(ref))
            pol = load_policy(ref)
        if not ok:
            raise PushrlError(f"--trigger-delay-policy {ref}: not a delay policy (a "
                              "delay-* baseline or a `pushrl train triggers` artifact)")
        assert cfg.triggers is not None
        try:
            return ContextDelay(pol, cfg.triggers, lambda: self.engine.guardrails)
        except ValueError as exc:
            raise PushrlError(f"--trigger-delay-policy {ref}: {exc}") from None

    def _popularity(self) -> np.ndarray:
        """``(n_items,)`` scores of the default most-popular item policy, in server item
        order: the smoothed logged mean reward per item of the --catalog data the state was
        seeded with (:data:`POPULAR_FILE`), else the activity events per item this server
        has recorded (all zero, so uniform, until it has seen some)."""
        items = self.state.item_list
        if self._item_scores:
            cached = self._scores_cache
            if cached.size != len(items):  # items are only ever appended
                cached = self._scores_cache = history.popularity_scores(
                    self._item_scores, [it.item_id for it in items])
            return cached
        ev = self._item_events
        if ev.size < len(items):
            ev = self._item_events = np.concatenate([ev, np.zeros(len(items) - ev.size)])
        return ev

    def _init_popularity(self) -> None:
        self._item_scores = history.server_popularity(self.cfg.state)
        if self._item_scores:
            self._popular.source = f"--catalog data ({self.cfg.state / POPULAR_FILE})"
        else:
            self._popular.source = "activity events seen by this server"

    def _seeded_from(self) -> Path | None:
        """The --catalog the state dir was seeded with (when it recorded popularity)."""
        p = self.cfg.state / POPULAR_FILE
        return Path(json.loads(p.read_text())["source"]) if p.exists() else None

    def _count_item_events(self) -> None:
        """Activity events per item, from the durable log (start-up)."""
        counts = dict(self.log.query(history.ITEM_EVENTS_SQL))
        self._item_events = np.array([float(counts.get(it.item_id, 0))
                                      for it in self.state.item_list])

    def _save_popularity(self, ds: Any, catalog: Path) -> None:
        """Fit the default most-popular on the --catalog data (first start) and keep its
        scores in the state dir, so later starts need neither the data nor a refit."""
        scores = history.popularity(ds)
        if scores is None:
            log.warning("--catalog %s: no item popularity (no sent pushes with a reward); "
                        "most-popular starts uniform and learns from the activity events it "
                        "sees", catalog)
            return
        (self.cfg.state / POPULAR_FILE).write_text(json.dumps(
            {"source": str(catalog), "scores": scores,
             **({"sample": ds.meta["catalog_sample"]} if "catalog_sample" in ds.meta else {})},
            sort_keys=True))

    def _base_spec(self, catalog: Path | None) -> FeatureSpec:
        """The spec fitted from --catalog on first start (kept in the state dir, items
        loaded too), else flat priors over the catalog's categories (:func:`default_spec`,
        refitted when a new category appears)."""
        p = self.cfg.state / SPEC_FILE
        if p.exists():
            if catalog is not None and catalog != self._seeded_from():
                log.warning("--catalog %s ignored: the state dir %s was already seeded (its "
                            "items and feature spec are kept; PUT /v1/items to add items)",
                            catalog, self.cfg.state)
            return FeatureSpec.from_dict(json.loads(p.read_text()))
        if catalog is not None:
            ds = history.catalog_dataset(catalog)  # the columns it needs, not the whole log
            if "catalog_sample" in ds.meta:
                sm = ds.meta["catalog_sample"]
                log.info("--catalog %s: feature priors and popularity from %d of %d users "
                         "(%s)", catalog, sm["users"], sm["of_users"], sm["method"])
            spec = FeatureSpec.fit(ds)
            if not self.log.query("SELECT 1 FROM items LIMIT 1"):
                self._load_items(ds.items, spec.category_column)
                self._save_popularity(ds, catalog)
            p.write_text(json.dumps(spec.to_dict()))
            return spec
        self.default_spec = True
        return default_spec(self.log.query("SELECT item_id, category FROM items ORDER BY seq"))

    def _load_items(self, items: Any, category_column: str) -> None:
        self.log.write(history.item_rows(items, category_column))

    def close(self) -> None:
        """Flush and close the durable log (and snapshot the trigger tracker, so the next
        start replays only what comes after)."""
        st = self.state
        if st.triggers is not None and self.ready:
            try:
                if st.pending:  # journal rows of failed requests: written before the snapshot
                    self.log.write(st.pending)
                    st.pending = []
                st.triggers.save_snapshot(st)
            except Exception as exc:  # the journal is complete without it
                log.warning("could not write the trigger snapshot: %s", exc)
        self.log.close()

    @property
    def ready(self) -> bool:
        """True while the durable log accepts writes (again after a recovery)."""
        return self.log.failed is None and self.state.frozen is None

    def not_ready(self) -> tuple[str, str] | None:
        """``(code, reason)`` while ``/v1/decide`` cannot answer, else None."""
        if not self.ready:
            return "log_failed", (f"durable log failed: {self.log.failed or self.state.frozen}"
                                  "; retrying and rebuilding the state by itself")
        if not self.state.item_list:
            return "no_items", ("the item catalog is empty, so no decision can be made; add "
                                "items with PUT /v1/items/{item_id} or start the server with "
                                "--catalog DIR")
        why = catalog_mismatch(self.engine.policies.item, self.state.items)
        return None if why is None else ("catalog_mismatch", why)

    def check_catalog(self, loaded: Loaded) -> None:
        """Refuse an item policy that cannot decide over this server's catalog.

        Raises:
            Conflict: ``catalog_mismatch``.
        """
        if hasattr(loaded.policy, "trigger_arms"):  # the delay slot
            self.check_delay(loaded)
            return
        if loaded.policy.kind != "item":
            return
        why = catalog_mismatch(loaded, self.state.items)
        if why is not None:
            raise Conflict("catalog_mismatch", f"refusing {loaded.label}: {why}; nothing "
                           "was changed")

    def now(self) -> int:
        """Unix seconds."""
        return int(time.time())

    async def commit(self, stmts: list[Statement]) -> None:
        """Make ``stmts`` durable (group commit) before the caller answers: :meth:`commit_cb`
        awaited (raises the commit's error)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(err: BaseException | None) -> None:
            if fut.done():  # the caller was cancelled
                return
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(err)

        self.commit_cb(stmts, done)
        await fut

    def commit_cb(self, stmts: list[Statement],
                  done: Callable[[BaseException | None], None]) -> None:
        """Make ``stmts`` durable (group commit; the state's pending rows first); ``done(error)``
        runs on the loop once they are (``error`` None) or their commit failed: the state
        then holds changes the log does not, so it is frozen and rebuilt from the log
        (:meth:`_recover`). Without a coroutine: the micro-batcher's path, one callback per
        pass instead of a task and a future (issue 20); :meth:`commit` awaits it."""
        if self.state.pending and self.busy is None:  # (a worker may add to it)
            stmts = self.state.pending + stmts
            self.state.pending = []
        self._committing += 1

        def committed(err: BaseException | None) -> None:
            self._committing -= 1
            if err is not None and self._recovery is None and isinstance(err, Exception):
                self.state.frozen = f"{type(err).__name__}: {err}"
                self._recovery = asyncio.ensure_future(self._recover())
            done(err)

        self.log.submit_cb(stmts, committed)

    async def _recover(self) -> None:
        """After a failed commit, with changes refused (``state.frozen``): wait for the
        commits in flight, retry a small write until the log takes it (disk space freed),
        then rebuild the state from the log, so it holds exactly what was acknowledged, and
        become ready again."""
        delay = RECOVER_SECONDS[0]
        while True:
            while self._committing or self.batcher._in_flight:
                await asyncio.sleep(0.01)
            try:
                await self.log.submit([("INSERT OR REPLACE INTO meta VALUES ('probe', ?)",
                                        (str(self.now()),))])
                break
            except Exception:
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECOVER_SECONDS[1])
        await self.idle()
        self.state.rebuild()  # on the loop: no request sees a half-built state
        if self.engine.templates is not None:
            self.engine.templates.rebuild(self.state, self.log)
        if self.engine.channels is not None:
            self.engine.channels.rebuild(self.state, self.log)
        self._pending_fb.clear()
        self.metrics.users.set(len(self.state.users))
        self.log.failed = None
        self.state.frozen = None
        self._recovery = None
        log.warning("durable log writable again: state rebuilt from the log; ready")

    # ------------------------------------------------------------------ requests
    def put_user(self, user_id: str, timezone: str, features: dict[str, Any],
                 ts: Any, subscribed: bool | None = None,
                 channels: list[str] | None = None) -> tuple[bool, list[Statement]]:
        """Create or update a user (``subscribed``: see
        :meth:`~pushrl.serve.state.ServerState.put_user`; ``channels``: the channels the
        user opted into, with ``--channels``).

        Raises:
            Conflict: ``wrong_shard`` when this server is a shard that does not own the user.
            Unprocessable: ``channels`` without ``--channels``, or an unknown channel.
        """
        why = check_owner(user_id, self.cfg.shard)
        if why is not None:
            raise Conflict("wrong_shard", why)
        ch = self.engine.channels
        if channels is not None:
            if ch is None:
                raise Unprocessable("no_channels", "`channels` needs a server started with "
                                    "--channels CONFIG; omit it or restart with --channels")
            bad = [c for c in channels if c not in ch.names]
            if bad:
                raise Unprocessable("unknown_channel", f"unknown channel(s) {bad}; this "
                                    f"server's channels: {list(ch.names)}")
        bucket = _sec(ts, self.now()) // HOUR
        created, stmts = self.state.put_user(user_id, timezone, features, bucket, subscribed)
        if channels is not None and ch is not None:
            stmts += ch.set_opt_in(self.state, self.state.users[user_id], channels, bucket)
        self.metrics.users.set(len(self.state.users))
        return created, stmts

    async def put_item(self, item_id: str, category: str | None,
                       features: dict[str, Any]) -> bool:
        """Create or update an item (durable on return)."""
        await self.idle()
        st = self.state
        if self.engine.templates is not None:  # an item the templates cannot render: 422
            try:
                self.engine.templates.check_item(st, item_id, category, features)
            except TemplateError as exc:
                raise Unprocessable("template_item", str(exc)) from None
        created, stmts = st.put_item(item_id, category, features)
        if st.triggers is not None:
            stmts += st.triggers.on_item_put(st, st.items[item_id], features, self.now())
        if not self.default_spec:
            await self.commit(stmts)
            return created
        spec = default_spec((it.item_id, it.category) for it in st.item_list)
        self.base_spec = spec
        if self.engine.policies.spec is not None:
            await self.commit(stmts)
        elif spec.categories != st.spec.categories:
            self._flush(stmts)
            st.set_spec(spec)  # a new category: affinities change, rebuild from the log
        else:
            st.spec = spec  # same categories and priors: the state is unchanged
            await self.commit(stmts)
        return created

    def _flush(self, stmts: list[Statement]) -> None:
        """Commit everything applied so far, blocking the loop (before a rebuild from the log:
        no request can change the state meanwhile, and the log then holds all of it)."""
        self.log.write(self.state.pending + stmts)
        self.state.pending = []

    def events(self, events: list[Event]) -> list[Statement]:
        """Record activity events (all validated before any is applied)."""
        st, now = self.state, self.now()
        u = np.array([st.user_index(e.user_id) for e in events], np.int64)
        item = np.array([-1 if e.item_id is None else st.item_index(e.item_id) for e in events],
                        np.int64)
        ts = np.array([_sec(e.ts, now) for e in events], np.int64)
        st.check_late(u, ts // HOUR, self.cfg.late_bound_hours)
        stmts: list[Statement] = []
        # vectorised runs of distinct users (a user's events apply in order)
        start, seen = 0, set[int]()
        for i, ui in enumerate([*u.tolist(), None]):
            if ui is None or ui in seen:
                sl = slice(start, i)
                stmts += st.op(OP_ACTIVITY, u[sl], ts[sl] // HOUR, item[sl])
                start, seen = i, set()
            seen.add(ui)
        self._note_item_events(item)
        buy = np.array([e.event == "purchase" for e in events], bool)
        if buy.any():  # the uplift gate's need state (hours since the last purchase)
            stmts += st.op(OP_PURCHASE, u[buy], ts[buy] // HOUR)
        trig = st.triggers
        for e, t, ui, it in zip(events, ts.tolist(), u.tolist(), item.tolist(), strict=True):
            stmts.append(("INSERT INTO activity VALUES (?,?,?,?,?,?)",
                          (st.next_seq(), e.user_id, t, e.event, e.item_id, e.revenue)))
            self.metrics.events.labels(e.event).inc()
            if trig is not None and (e.event == "session" or it >= 0):
                stmts += trig.on_activity(st, ui, e.user_id, t, e.event, None if it < 0 else it)
        return stmts

    async def in_worker(self, fn: Callable[[], tuple[Any, list[Statement]]],
                        done: Callable[[], None] | None = None,
                        encode: Callable[[Any], Any] | None = None) -> Any:
        """Run ``fn`` (state changes -> ``(answer, log rows)``) in a worker thread while no
        other request touches the state, then commit; runs to its commit even if the client
        goes away (the state has moved by then). ``done`` runs after the commit.
        ``encode(answer)`` (returned instead of the answer) runs while the commit is under
        way: a big answer is encoded during the fsync, still sent only once durable."""
        async def run() -> Any:
            await self.idle()
            self.busy = busy = asyncio.get_running_loop().create_future()
            try:
                out, stmts = await asyncio.to_thread(fn)
            finally:
                self.busy = None
                busy.set_result(None)
            try:
                if stmts and encode is not None:
                    task = asyncio.ensure_future(self.commit(stmts))
                    await asyncio.sleep(0)  # the commit is queued for the writer
                    try:
                        out = encode(out)
                    finally:
                        await task
                elif stmts:
                    await self.commit(stmts)
                elif encode is not None:
                    out = encode(out)
            finally:
                if done is not None:
                    done()
            return out
        return await asyncio.shield(asyncio.ensure_future(run()))

    async def record_events(self, events: list[Event]) -> None:
        """:meth:`events`, durable on return; with triggers on, a batch of more than
        :data:`LOOP_EVENTS` events runs in a worker thread (the tracker works per event)."""
        if self.state.triggers is not None and len(events) > LOOP_EVENTS:
            await self.in_worker(lambda: (None, self.events(events)))
            return
        await self.idle()
        await self.commit(self.events(events))

    def _note_item_events(self, item: np.ndarray) -> None:
        """Count activity events per item (the default most-popular's scores)."""
        n = len(self.state.item_list)
        if self._item_events.size < n:
            self._item_events = np.concatenate([self._item_events,
                                                np.zeros(n - self._item_events.size)])
        np.add.at(self._item_events, item[item >= 0], 1.0)

    def rows(self, reqs: list[DecideIn]) -> list[DecideRow]:
        """Validate decision requests (known users and items)."""
        now = self.now()
        return [self._row(r, i, now) for i, r in enumerate(reqs)]

    def _row(self, r: DecideIn, i: int, now: int) -> DecideRow:
        """One request's row (``now``: its time when it has none); ``i`` names it in
        messages."""
        st = self.state
        # the model's fields from its __dict__ (one attribute lookup: each field read through
        # the pydantic model costs its __getattr__ hook's type lookups, issue 20)
        f = r.__dict__
        uid, cands, ts = f["user_id"], f["candidates"], f["ts"]
        if cands is not None:
            cands = [st.item_index(c) for c in cands]
            if len(set(cands)) != len(cands):
                raise Unprocessable("duplicate_candidate", f"requests[{i}]: `candidates` "
                                    "lists an item twice")
        u = st.users.get(uid)  # (a known user; user_index raises the unknown one's error)
        return DecideRow(uid, st.user_index(uid) if u is None else u,
                         now if ts is None else ts, cands, f["context"], f["horizon_hours"])

    def pass_rows(self, reqs: list[DecideIn]) -> list[DecideRow | Exception]:
        """The rows of a micro-batcher pass (distinct users), each request validated on its
        own: what :meth:`rows` and :meth:`Engine.check_row` refuse it for alone (its
        ``requests[0]``) is its error, in its place, and the others still go (one clock
        reading for the pass)."""
        now, check, row = self.now(), self.engine.check_row, self._row
        out: list[DecideRow | Exception] = []
        for r in reqs:
            try:
                got = row(r, 0, now)
                check(got)
            except Exception as exc:
                out.append(exc)
                continue
            out.append(got)
        return out

    def decide(self, reqs: list[DecideIn]) -> tuple[list[dict[str, Any]], list[Statement]]:
        """Decisions and their log rows, in request order.

        A user listed several times is decided in order (later requests see the earlier
        decisions, e.g. for caps): the batch runs in passes of distinct users. Everything a
        request could be refused for is checked before the state changes.
        """
        rows = self.rows(reqs)
        last: dict[int, int] = {}
        for i, r in enumerate(rows):
            b = r.ts // HOUR
            if b < last.get(r.u, b):
                raise Conflict("time_before_state", f"requests[{i}]: an earlier request for "
                               f"user {r.user_id!r} is later in time; order a user's requests "
                               "by time")
            last[r.u] = b
            self.engine.check_row(r, i)
        outs: list[dict[str, Any]] = [{} for _ in rows]
        stmts: list[Statement] = []
        todo = list(range(len(rows)))
        try:
            while todo:
                now: list[int] = []
                later: list[int] = []
                seen: set[int] = set()
                for i in todo:
                    (later if rows[i].u in seen else now).append(i)
                    seen.add(rows[i].u)
                o, s = self.engine.decide([rows[i] for i in now])
                for i, d in zip(now, o, strict=True):
                    outs[i] = d
                stmts += s
                todo = later
        except BaseException:
            self.state.pending.extend(stmts)  # applied to the state: journal it anyway
            raise
        return outs, stmts

    async def idle(self) -> None:
        """Wait until no worker thread works on the state: call it before touching the state
        from the event loop (the loop itself never runs two requests' state code at once)."""
        while self.busy is not None:
            await self.busy

    async def decide_batch(self, reqs: list[DecideIn]) -> list[dict[str, Any]]:
        """:meth:`decide` in a worker thread (on the loop up to :data:`INLINE_BATCH` requests
        without look-ahead), then commit: a batch of 1,000 with look-ahead takes seconds, and
        the event loop keeps answering meanwhile (``/healthz``, other
        requests wait for the state in :meth:`idle`). Runs to its commit even if the client
        goes away (the state has moved by then)."""
        return await asyncio.shield(asyncio.ensure_future(self._decide_batch(reqs)))

    async def _decide_batch(self, reqs: list[DecideIn]) -> list[dict[str, Any]]:
        await self.idle()
        if len(reqs) <= INLINE_BATCH and all(r.horizon_hours is None for r in reqs):
            # as small as a micro-batcher pass: decided on the loop (a thread hop costs more)
            out, stmts = self.decide(reqs)
            await self.commit(stmts)
            return out
        self.busy = busy = asyncio.get_running_loop().create_future()
        try:
            out, stmts = await asyncio.to_thread(self.decide, reqs)
        finally:
            self.busy = None
            busy.set_result(None)
        await self.commit(stmts)
        return out

    async def decide_one(self, req: DecideIn) -> dict[str, Any]:
        """One decision, micro-batched with those arriving in the same loop tick."""
        return await self.batcher.submit(req)

    def _decision(self, decision_id: str) -> dict[str, Any]:
        got = self._pending_fb.get(decision_id)
        if got is not None:
            return got
        row = self.log.query("SELECT user_id, ts, sent, opened, clicked, converted, revenue, "
                             "unsubscribed FROM decisions WHERE decision_id=?", (decision_id,))
        if not row:
            raise NotFound("unknown_decision", f"unknown decision_id {decision_id!r}: it was "
                           "never returned by /v1/decide (or belongs to another state dir)")
        uid, ts, sent, *outs = row[0]
        return {"user_id": uid, "ts": ts, "sent": bool(sent),
                **{k: (None if v is None else (float(v) if k == "revenue" else bool(v)))
                   for k, v in zip(OUTCOME_COLS, outs, strict=True)}}

    def feedback(self, fb: FeedbackIn) -> tuple[dict[str, Any], list[Statement],
                                                dict[str, Any]]:
        """Join outcomes to their decision (merge: booleans OR, the revenue of the latest ``ts``).

        ``unsubscribed=true`` also unsubscribes the user (every later decision is a no-send
        with reason ``guardrail:unsubscribed``), even when reported after the attribution
        window: an opt-out is honoured whenever it arrives.

        Returns:
            The response body, the log rows, and a token for :meth:`feedback_done`.
        """
        return self._apply_feedback(fb, *self._check_feedback(fb))

    def feedback_batch(self, fbs: list[FeedbackIn]) -> tuple[
            list[dict[str, Any]], list[Statement], list[tuple[str, dict[str, Any]]]]:
        """:meth:`feedback` for several reports, applied in order, all or nothing: every
        report is checked before any is applied, and an error names its row
        (``feedback[i]: ...``, the row's own status and code).

        Returns:
            The response bodies, the log rows (one commit), and ``(decision_id, token)``
            pairs for :meth:`feedback_done`.
        """
        checked = []
        for i, fb in enumerate(fbs):
            try:
                checked.append(self._check_feedback(fb))
            except ServeError as exc:
                raise type(exc)(exc.code, f"feedback[{i}]: {exc.detail}") from None
        outs: list[dict[str, Any]] = []
        stmts: list[Statement] = []
        tokens: list[tuple[str, dict[str, Any]]] = []
        for fb, (dec, given, ts) in zip(fbs, checked, strict=True):
            # a decision reported twice in the batch merges into the first report's result
            dec = self._pending_fb.get(fb.decision_id, dec)
            out, st, token = self._apply_feedback(fb, dec, given, ts)
            outs.append(out)
            stmts += st
            tokens.append((fb.decision_id, token))
        return outs, stmts, tokens

    def _check_feedback(self, fb: FeedbackIn) -> tuple[dict[str, Any], dict[str, Any], int]:
        """The decision, the reported outcomes and the report's time; raises what a report
        is refused for (before anything changes)."""
        dec = self._decision(fb.decision_id)
        given = {k: getattr(fb, k) for k in OUTCOME_COLS if getattr(fb, k) is not None}
        ts = self._feedback_ts(fb.ts, dec)
        if given and not dec["sent"] and any(v for v in given.values()):
            raise Conflict("not_sent", f"decision {fb.decision_id!r} did not send a push "
                           "(send=false); outcomes only apply to sent pushes")
        if ts < dec["ts"]:
            raise Conflict("feedback_before_decision", f"feedback ts is {dec['ts'] - ts} s "
                                "before the decision; send the time the outcome happened")
        return dec, given, ts

    def _apply_feedback(self, fb: FeedbackIn, dec: dict[str, Any], given: dict[str, Any],
                        ts: int) -> tuple[dict[str, Any], list[Statement], dict[str, Any]]:
        late = ts - dec["ts"] > self.cfg.attribution_hours * HOUR
        st = self.state
        stmts: list[Statement] = [("INSERT INTO feedback VALUES (?,?,?,?,?)", (
            st.next_seq(), fb.decision_id, ts, int(late), json.dumps(given, sort_keys=True)))]
        if given.get("unsubscribed") and not dec["unsubscribed"]:
            ch = self.engine.channels  # with channels: leave that channel only
            got = (None if ch is None else ch.unsubscribe(
                st, self.log, fb.decision_id, st.user_index(dec["user_id"]), ts // HOUR))
            stmts += (got if got is not None else
                      st.set_subscribed(st.user_index(dec["user_id"]), False, ts // HOUR))
        merged = dict(dec)
        if not late and dec["sent"]:
            for k, v in given.items():
                if k == "revenue":  # the report of the latest `ts` wins, whatever the arrival
                    if ts >= self._revenue_ts(fb.decision_id, dec):
                        merged[k], merged["revenue_ts"] = v, ts
                else:
                    merged[k] = bool(merged[k]) or bool(v)
            changed = [k for k in OUTCOME_COLS if merged[k] != dec[k]]
            if changed:
                sets = ", ".join(f"{k}=?" for k in changed)
                stmts.append((f"UPDATE decisions SET {sets} WHERE decision_id=?",
                              (*[merged[k] for k in changed], fb.decision_id)))
            if merged["opened"] and not dec["opened"]:
                u = st.user_index(dec["user_id"])
                b = ts // HOUR  # in its hour; beyond the late bound at the user's clock
                if int(st.fs.clock(u)) - b > self.cfg.late_bound_hours:
                    b = int(st.fs.clock(u))
                stmts += st.op(OP_OPEN, np.array([u]), np.array([b]))
            if merged["converted"] and not dec["converted"]:  # a purchase (need state)
                u = st.user_index(dec["user_id"])
                stmts += st.op(OP_PURCHASE, np.array([u]), np.array([ts // HOUR]))
            self._pending_fb[fb.decision_id] = merged
        self.metrics.feedback.labels("late" if late else "joined").inc()
        out = {"decision_id": fb.decision_id, "late": late,
               "outcomes": {k: merged[k] for k in OUTCOME_COLS}}
        return out, stmts, merged

    def _feedback_ts(self, ts: Any, dec: dict[str, Any]) -> int:
        """The time of a feedback report: its ``ts``; without one the wall clock when the
        decision is within the attribution window of it, else (history or simulated time,
        or a report that really is late) the user's own clock: the time its state has
        reached (never before the decision). So a report without ``ts`` is late only when
        the user's state moved past the window, never merely because the decision's
        ``ts`` is not the wall clock's."""
        if ts is not None:
            return int(ts.timestamp())
        now, t = self.now(), int(dec["ts"])
        if 0 <= now - t <= self.cfg.attribution_hours * HOUR:
            return now
        u = self.state.users.get(dec["user_id"])
        return t if u is None else max(t, int(self.state.fs.clock(u)) * HOUR)

    def _revenue_ts(self, decision_id: str, dec: dict[str, Any]) -> int:
        """``ts`` of the report that set the decision's revenue (-1: none yet)."""
        if dec["revenue"] is None:
            return -1
        if "revenue_ts" in dec:
            return int(dec["revenue_ts"])
        row = self.log.query("SELECT max(ts) FROM feedback WHERE decision_id=? AND late=0 AND "
                             "payload LIKE '%\"revenue\": %'", (decision_id,))
        return -1 if row[0][0] is None else int(row[0][0])

    def feedback_done(self, decision_id: str, token: dict[str, Any]) -> None:
        """Forget the in-memory merge once it is durable, unless a later report replaced it."""
        if self._pending_fb.get(decision_id) is token:
            del self._pending_fb[decision_id]

    # ------------------------------------------------------------------ policies
    def _pointer_stat(self) -> tuple[int, int] | None:
        p = Path(self.cfg.registry) / registry_ops.ACTIVE
        try:
            s = p.stat()
        except OSError:
            return None
        return s.st_mtime_ns, s.st_size

    async def reload(self, *, force: bool = False) -> bool:
        """Load the registry's pointer (in a thread) and swap policies if it changed."""
        async with self._swap_lock:
            stat = self._pointer_stat()
            if stat == self._ptr_stat and not force:
                return False
            self._ptr_stat = stat
            new = await asyncio.to_thread(self._load_set)
            if new.generation == self.engine.policies.generation and not force:
                return False
            await self.idle()
            self.swap(new)
            return True

    async def apply_pointer(self) -> None:
        """Swap to what the registry's pointer names now (after a promote or rollback)."""
        new = await asyncio.to_thread(self._load_set)
        async with self._swap_lock:
            await self.idle()
            self.swap(new)
            self._ptr_stat = self._pointer_stat()

    def _load_set(self) -> PolicySet:
        """The pointer's policies, refused when an item policy cannot use this catalog."""
        new = load_set(self.cfg.registry, overrides=self.overrides,
                       current=self.engine.policies, defaults=self.defaults)
        for loaded in (new.item, new.shadow_item):
            if loaded is not None and loaded is not self.engine.policies.item:
                self.check_catalog(loaded)
        for d, was in ((new.delay, self.engine.policies.delay),
                       (new.shadow_delay, self.engine.policies.shadow_delay)):
            if d is not None and d is not was:
                self.check_delay(d)
        return new

    def swap(self, new: PolicySet) -> None:
        """Start deciding with ``new`` (between two requests: no request sees a mix)."""
        spec = new.spec or self.base_spec
        if spec.to_dict() != self.state.spec.to_dict():
            log.info("policy feature spec differs; rebuilding the state from the log")
            self._flush([])
            self.state.set_spec(spec)
        self.engine.policies = new
        self.engine._ctx_cache.clear()
        if self.state.triggers is not None:  # the delay slot: new triggers only
            self.state.triggers.policy = self._delay_for(new.delay)
            self.state.triggers.shadow = self._delay_shadow(new.shadow_delay)
        self.metrics.promotions.labels("swap").inc()
        log.info("policies now timing=%s item=%s delay=%s (generation %d)", new.timing.label,
                 new.item.label, new.delay.label if new.delay else "server default",
                 new.generation)

    async def watch(self) -> None:
        """Poll the registry pointer (``pushrl policies promote`` from another process)."""
        while self.cfg.watch_seconds > 0:
            await asyncio.sleep(self.cfg.watch_seconds)
            try:
                await self.reload()
            except Exception as exc:  # keep serving the current policies
                log.error("could not load the promoted policies: %s", exc)

    async def set_kill_switch(self, enabled: bool, reason: str,
                              user: str | None = None) -> None:
        """Turn the global kill switch on or off (durable, audited as ``user``)."""
        await self.commit([("INSERT OR REPLACE INTO meta VALUES ('kill_switch', ?)",
                            ("1" if enabled else "0",))])
        self.engine.kill_switch = enabled
        self.metrics.kill_switch.set(int(enabled))
        registry_ops.audit(self.cfg.registry, "kill_switch", enabled=enabled, reason=reason,
                           **({"user": user} if user else {}))
