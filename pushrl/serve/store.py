"""The server's durable log: SQLite in WAL mode, written by one group-committing thread.

Every state change the server makes (a user, an item, an activity event, a decision, a
feedback, a shadow decision) is a row here, and every change to the feature state is also an
*op* in the ``ops`` journal, in the order the server applied it. On restart the
:class:`~pushrl.data.features.FeatureState` is rebuilt by re-applying the ops through the same
methods, so it is identical to the state before the restart.

Durability: request handlers enqueue their rows and wait; a writer thread drains the queue,
writes everything queued in one transaction and commits it (group commit), then wakes the
waiters. Only then does the server answer. With ``synchronous=FULL`` a WAL commit is fsynced
(survives power loss); ``NORMAL`` skips that fsync (survives a process crash, such as
``kill -9``, because the WAL is already in the OS page cache). Group commit amortises the
fsync over every request that arrived while the previous one ran.

Checkpoints (copying the WAL back into the database file, with its own fsync) never run inside
a request's commit: the writer connection has SQLite's auto-checkpoint off, and a checkpointer
thread runs a ``PASSIVE`` checkpoint on its own connection every :data:`CHECKPOINT_SECONDS`
while there are new commits. A passive checkpoint never blocks the writer, so a checkpoint no
longer adds tens of milliseconds to the requests that happen to commit when the WAL fills up.

WAL reuse: SQLite starts writing the WAL from its beginning again (overwriting it in place)
only when a write transaction begins after a checkpoint that copied *every* frame. Under
steady commits a passive checkpoint on another thread never gets there (the writer adds frames
while it runs), so the WAL grew for as long as requests kept coming, and every commit's fsync
extended the file (a filesystem journal commit for its new size: more CPU and much more wall
time per commit than an fsync that overwrites blocks the file already has). So after each
checkpointer pass the writer checkpoints the few frames committed since, between two commits
(its waiters already answered), and its next commit restarts the WAL: the WAL stays at the
size of one checkpoint interval and commits overwrite it. Durability is unchanged: a
checkpoint only copies committed pages into the database file.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pushrl.errors import PushrlError
from pushrl.serve import bulk_sends
from pushrl.serve.rows import Columns, Many, Statement

log = logging.getLogger("pushrl.serve")

SCHEMA_VERSION = "pushrl/serve-log/v1"
LOG_FILE = "log.sqlite3"
LOCK_FILE = "server.lock"
#: Seconds between checkpoints of the WAL (only while there are new commits).
CHECKPOINT_SECONDS = 0.5

#: Ops of the feature-state journal. ``OP_SUBSCRIPTION`` (``arg`` 1 = subscribed, 0 =
#: unsubscribed) changes no feature: it is the subscription guardrail's journal.
OP_ADD_USER, OP_ACTIVITY, OP_ADVANCE, OP_PUSH, OP_OPEN, OP_SUBSCRIPTION = 0, 1, 2, 3, 4, 5
#: Ops of the trigger tracker's journal (:mod:`pushrl.serve.triggers`; no feature changes).
#: ``OP_TRIGGER_ADVANCE``: the tracker's clock moved to ``arg`` (unix s; user_idx -1);
#: ``OP_TRIGGER_SENT``: trigger ``tz`` (its id) of user ``user_idx`` was sent at ``arg``;
#: ``OP_TRIGGER_REQUEUE``: it was due but blocked, due again at ``arg``;
#: ``OP_ITEM_UPDATE``: the ``item_updates`` row of seq ``arg`` was applied (item index in
#: ``user_idx``). Activity events reach the tracker from the ``activity`` table (by seq).
OP_TRIGGER_ADVANCE, OP_TRIGGER_SENT, OP_TRIGGER_REQUEUE, OP_ITEM_UPDATE = 6, 7, 8, 9
TRIGGER_OPS = frozenset({OP_TRIGGER_ADVANCE, OP_TRIGGER_SENT, OP_TRIGGER_REQUEUE,
                         OP_ITEM_UPDATE})
#: Op kinds 10-14 are reserved for incrementality (#18); live holdouts need none (the arm is
#: a hash of the user id and the holdout is stored in ``meta``). ``OP_PURCHASE``: the user
#: bought in ``bucket`` (a ``purchase`` event or a converted push; the uplift gate's need
#: state, :meth:`pushrl.data.features.FeatureState.record_purchase`).
OP_PURCHASE = 10
#: ``OP_CHANNELS`` (#17, :mod:`pushrl.serve.channels`): user ``user_idx``'s channel opt-in is
#: now ``tz`` (comma-separated channel names, "" = none); ``arg`` 1 = set by ``PUT
#: /v1/users``, 0 = a channel removed by an unsubscribe. No feature changes.
OP_CHANNELS = 25
#: One journal row (``kind``, ``user_idx``, ``bucket``, ``arg``, ``tz``).
OP_SQL = "INSERT INTO ops(seq, kind, user_idx, bucket, arg, tz) VALUES (?,?,?,?,?,?)"

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  user_id TEXT PRIMARY KEY, idx INTEGER NOT NULL UNIQUE, timezone TEXT NOT NULL,
  features TEXT NOT NULL, start_bucket INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  item_id TEXT PRIMARY KEY, category TEXT, features TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ops (
  seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, user_idx INTEGER NOT NULL,
  bucket INTEGER NOT NULL, arg INTEGER NOT NULL DEFAULT 0, tz TEXT);
CREATE TABLE IF NOT EXISTS activity (
  seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, ts INTEGER NOT NULL, event TEXT NOT NULL,
  item_id TEXT, revenue REAL);
CREATE TABLE IF NOT EXISTS decisions (
  decision_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, user_id TEXT NOT NULL,
  ts INTEGER NOT NULL, sent INTEGER NOT NULL, item_id TEXT, pscore REAL NOT NULL,
  pscore_send REAL NOT NULL, pscore_item REAL, policy TEXT NOT NULL, item_policy TEXT,
  reason TEXT NOT NULL, candidates TEXT, context TEXT, features BLOB,
  opened INTEGER, clicked INTEGER, converted INTEGER, revenue REAL, unsubscribed INTEGER,
  holdout INTEGER, p_holdout REAL);
CREATE INDEX IF NOT EXISTS decisions_seq ON decisions(seq);
CREATE TABLE IF NOT EXISTS feedback (
  seq INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, ts INTEGER NOT NULL,
  late INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_decision ON feedback(decision_id);
CREATE TABLE IF NOT EXISTS shadow (
  decision_id TEXT PRIMARY KEY, policy TEXT NOT NULL, item_policy TEXT, send INTEGER NOT NULL,
  item_id TEXT, pscore REAL NOT NULL, pscore_send REAL NOT NULL);
CREATE TABLE IF NOT EXISTS item_updates (
  seq INTEGER PRIMARY KEY, item_id TEXT NOT NULL, ts INTEGER NOT NULL, price REAL,
  in_stock INTEGER);
CREATE TABLE IF NOT EXISTS triggers (
  trigger_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL,
  item_id TEXT, event_ts INTEGER NOT NULL, expires_ts INTEGER NOT NULL,
  priority INTEGER NOT NULL, decided_ts INTEGER NOT NULL, delay_h INTEGER,
  pscore REAL NOT NULL, policy TEXT NOT NULL, status TEXT NOT NULL, decision_id TEXT,
  holdout INTEGER, p_holdout REAL);
CREATE TABLE IF NOT EXISTS trigger_shadow (
  trigger_id TEXT PRIMARY KEY, policy TEXT NOT NULL, decided_ts INTEGER NOT NULL,
  delay_h INTEGER, pscore REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trigger_pulls (
  request_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
  response TEXT NOT NULL);
"""
#: Columns added after a table was first created (a log from an older server gains them).
_ADDED_COLUMNS = (("decisions", "trigger_id", "TEXT"), ("decisions", "template_id", "TEXT"),
                  ("decisions", "pscore_template", "REAL"), ("decisions", "channel", "TEXT"),
                  ("decisions", "pscore_channel", "REAL"),
                  # per-trigger-kind holdouts (#18, serve/trigger_holdout.py): arm of the kind
                  ("triggers", "holdout", "INTEGER"), ("triggers", "p_holdout", "REAL"))


# Binding a parameter that is not an int, float or str makes sqlite3 look for an adapter (a
# tuple key built, two failed attribute lookups) for every NULL and BLOB of every row: a
# decision row has ~8 NULLs and a BLOB. Registered identity adapters (C callables: bytes(b) is
# b, {}.get(None) is None) bind the same values ~30 % faster per row (issue 20; the writer
# thread holds the GIL while it binds). They do not touch int/float/str, whose fast path
# stays on.
_none: dict[None, None] = {}
sqlite3.register_adapter(type(None), _none.get)  # type: ignore[arg-type]
sqlite3.register_adapter(bytes, bytes)


def _runs(batch: list[tuple[list[Statement], Any]]) -> Iterator[tuple[str, list[Any]]]:
    """Consecutive rows of one statement of a group commit's batch, as ``(sql, rows)``: one
    ``executemany`` each (a :class:`Many` adds all its rows)."""
    run_sql = ""
    run: list[Sequence[Any]] = []  # (not list[...](): a generic alias built per commit)
    for stmts, _ in batch:
        for sql, params in stmts:
            if sql is not run_sql and sql != run_sql:
                if run:
                    yield run_sql, run
                run_sql, run = sql, []
            if type(params) is Many:
                run.extend(params)
            elif type(params) is Columns:
                run.extend(params.rows())
            else:
                run.append(params)  # type: ignore[arg-type]
    if run:
        yield run_sql, run


class RateLimited:
    """Logs an error at most once per ``interval`` seconds per key, then says how many were
    left out (a full disk fails every commit and every request: tens of thousands of lines).

    Args:
        logger: Where the lines go.
        interval: Seconds between two lines of one key.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def error(self, key: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` s ago."""
        now = time.monotonic()
        with self._lock:
            last, left_out = self._seen.get(key, (-float("inf"), 0))
            if now - last < self.interval:
                self._seen[key] = (last, left_out + 1)
                return
            self._seen[key] = (now, 0)
        if left_out:
            msg += f" ({left_out} more like it in the last {now - last:.0f} s not logged)"
        self.logger.error(msg, *args)


#: The server's rate-limited error lines (the writer thread and the HTTP error handler).
errors = RateLimited(log)


SPEC_FILE = "feature_spec.json"
_TABLES = frozenset({"meta", "users", "items", "ops", "activity", "decisions", "feedback",
                     "shadow"})
RECOVERY = ("see README, 'State recovery': `pushrl logs restore BACKUP --state DIR`, or start "
            "anew deliberately with `pushrl serve --accept-empty-state`")


class StateError(PushrlError):
    """The state dir's log is missing, damaged or inconsistent: the server refuses to start."""


def check_log(state_dir: str | Path, *, accept_empty: bool = False,
              had_lock: bool | None = None) -> None:
    """Refuse a state dir whose durable log is missing, damaged or lost its WAL.

    Checks, without writing anything (the database is opened read-only, so its WAL stays):
    a server ran here (``feature_spec.json``, a WAL or the lock file) but ``log.sqlite3`` is
    missing or empty; the file is not a pushrl log (tables, schema); ``PRAGMA
    integrity_check`` fails; the last server did not shut down cleanly and the WAL is gone
    (the changes acknowledged since its last checkpoint are lost); ``feature_spec.json``
    exists but the log holds no items.

    Args:
        state_dir: The state directory.
        accept_empty: Allow a missing or empty log (``--accept-empty-state``).
        had_lock: Whether the lock file existed before this process created it (None: look).

    Raises:
        StateError: With what is wrong and the recovery path.
    """
    d = Path(state_dir)
    db, wal = d / LOG_FILE, d / (LOG_FILE + "-wal")
    ran = (d / SPEC_FILE).exists() or wal.exists() or (
        (d / LOCK_FILE).exists() if had_lock is None else had_lock)
    # before opening: a read-only connection creates an empty WAL (0 bytes counts as lost)
    wal_ok = wal.exists() and wal.stat().st_size > 0
    if not db.exists() or db.stat().st_size == 0:
        if ran and not accept_empty:
            what = "missing" if not db.exists() else "empty (0 bytes)"
            raise StateError(f"{db} is {what}, but a server ran in {d} before: its decisions "
                             f"and users are gone; {RECOVERY}")
        return
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateError(f"{db} cannot be opened ({exc}); {RECOVERY}") from None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not _TABLES <= tables:
            raise StateError(f"{db} is not a pushrl log (missing tables "
                             f"{sorted(_TABLES - tables)}); {RECOVERY}")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        bad = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
        if bad != ["ok"]:
            raise StateError(f"{db} fails PRAGMA integrity_check ({'; '.join(bad)}); {RECOVERY}")
        if meta.get("clean") == "0" and not wal_ok:
            raise StateError(f"{wal.name} is missing although the last server in {d} did not "
                             "shut down cleanly: the changes it acknowledged after its last "
                             "checkpoint are lost; to go on with what the database holds, "
                             f"`pushrl logs restore {db} --state {d}`; {RECOVERY}")
        if (d / SPEC_FILE).exists() and not accept_empty and not conn.execute(
                "SELECT 1 FROM items LIMIT 1").fetchall():
            raise StateError(f"{d / SPEC_FILE} shows this state dir was started with a catalog, "
                             f"but {db} holds no items (a replaced or emptied log); {RECOVERY}")
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{db} is damaged ({exc}); {RECOVERY}") from None
    finally:
        conn.close()


def connect(path: str | Path, *, sync: str = "full", readonly: bool = False) -> sqlite3.Connection:
    """Open the log database in WAL mode (autocommit; transactions are explicit)."""
    uri = f"file:{path}?mode=ro" if readonly else str(path)
    conn = sqlite3.connect(uri, uri=readonly, isolation_level=None, check_same_thread=False,
                           timeout=30.0)
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


#: Tables whose rows carry a journal ``seq`` (:meth:`LogReads.max_seq`).
_SEQ_TABLES = ("ops", "activity", "decisions", "feedback", "items", "item_updates", "triggers",
               "trigger_pulls")


class LogReads:
    """The read queries of the log database (on :attr:`reader`)."""

    reader: sqlite3.Connection

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query on the reader connection."""
        return self.reader.execute(sql, params).fetchall()

    def iter_rows(self, sql: str, params: Sequence[Any] = (), *,
                  chunk: int = 65536) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a read query (constant memory)."""
        cur = self.reader.execute(sql, params)
        while rows := cur.fetchmany(chunk):
            yield from rows

    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table."""
        row = self.reader.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def max_seq(self) -> int:
        """Largest sequence number in the log (0 when empty)."""
        have = {r[0] for r in self.reader.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        union = " UNION ALL ".join(f"SELECT max(seq) m FROM {t}" for t in _SEQ_TABLES
                                   if t in have)  # a read-only older log lacks newer tables
        row = self.reader.execute(f"SELECT max(m) FROM ({union})").fetchone()
        return int(row[0] or 0)



class ReadOnlyLog(LogReads):
    """A read-only view of a state dir's log (``pushrl plan``): no lock, no writer, so a
    running server keeps its state; the log must pass :func:`check_log` like at start-up.

    Args:
        state_dir: Directory of ``log.sqlite3``.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LOG_FILE
        if not self.path.exists():
            raise PushrlError(f"{self.path} does not exist; import a log first with "
                              f"`pushrl state import DATA --state {self.dir}`")
        check_log(self.dir)
        self.reader = connect(self.path, readonly=True)

    def close(self) -> None:
        """Close the connection."""
        self.reader.close()


class DurableLog(LogReads):
    """The log database plus its group-commit writer thread.

    Args:
        state_dir: Directory of ``log.sqlite3`` (created if missing).
        sync: ``"full"`` or ``"normal"`` (see the module docstring).
        on_commit: Called on the writer thread with ``(n_requests, seconds)`` after each
            group commit (metrics).
    """

    def __init__(self, state_dir: str | Path, *, sync: str = "full",
                 on_commit: Callable[[int, float], None] | None = None,
                 accept_empty: bool = False) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        had_lock = (self.dir / LOCK_FILE).exists()
        # one server per state dir: a second one would keep a diverging user state
        self._lock = open(self.dir / LOCK_FILE, "a+")  # held for our lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise PushrlError(f"state dir {self.dir} is in use by another pushrl server; stop "
                              "it or pass another --state") from None
        self.path = self.dir / LOG_FILE
        self._sync = sync
        try:
            check_log(self.dir, accept_empty=accept_empty, had_lock=had_lock)
        except StateError:
            self._lock.close()
            raise
        w = connect(self.path, sync=sync)
        w.executescript(_DDL)
        for table, col, kind in _ADDED_COLUMNS:
            have_cols = {r[1] for r in w.execute(f"PRAGMA table_info({table})")}
            if col not in have_cols:
                w.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
        w.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        # live holdouts (#18) added two columns: logs written before get them (NULL)
        cols = {r[1] for r in w.execute("PRAGMA table_info(decisions)")}
        for col, kind in (("holdout", "INTEGER"), ("p_holdout", "REAL")):
            if col not in cols:
                w.execute(f"ALTER TABLE decisions ADD COLUMN {col} {kind}")
        have = w.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        if have != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: log schema {have!r}, expected {SCHEMA_VERSION!r}")
        # bulk records (a big pull's rows, serve/bulk_sends.py) left by a stopped server go
        # into their tables before anything reads them; a damaged one refuses the start
        try:
            bulk_sends.recover(w)
        except bulk_sends.BulkRecordError as exc:
            w.close()
            self._lock.close()
            raise StateError(f"{self.path}: {exc}; {RECOVERY}") from None
        self._bulk = bulk_sends.Expander()
        self._bulk_independent = bulk_sends.independent
        # 'clean' = 0 until close(): a later start that finds no WAL then knows it was lost;
        # checkpointed now so that the database file itself says so
        w.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '0')")
        w.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
        w.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        self._writer_conn = w
        #: Connection for reads on the event-loop thread (WAL: never blocked by the writer).
        self.reader = connect(self.path, sync=sync)
        self._queue: queue.SimpleQueue[tuple[list[Statement], Any] | None] = queue.SimpleQueue()
        self._on_commit = on_commit
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pushrl-log-writer", daemon=True)
        self._thread.start()
        self._commits = 0  # group commits so far (the checkpointer's cue)
        #: Set by the checkpointer after a pass: the writer checkpoints the few frames
        #: committed since, between two commits, so that its next commit restarts the WAL
        #: (module docstring, "WAL reuse").
        self._catch_up = False
        self._stop = threading.Event()
        self._ckpt_conn = connect(self.path, sync=sync)
        self._ckpt = threading.Thread(target=self._checkpoints, name="pushrl-log-checkpoint",
                                      daemon=True)
        self._ckpt.start()
        self._closed = False

    def query(self, sql: str, params: Sequence[Any] = (), *,
              settled: bool = True) -> list[tuple[Any, ...]]:
        """Run a read query on the reader connection (after waiting bulk records are
        expanded into their tables; ``settled=False``: a table no record writes)."""
        if settled:
            self._bulk.wait_settled()
        return super().query(sql, params)

    def iter_rows(self, sql: str, params: Sequence[Any] = (), *,
                  chunk: int = 65536) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a read query (after waiting bulk records are expanded)."""
        self._bulk.wait_settled()
        return super().iter_rows(sql, params, chunk=chunk)

    # ------------------------------------------------------------------ writes
    def submit(self, stmts: list[Statement]) -> asyncio.Future[None]:
        """Queue ``stmts`` for the next group commit; await the result to know it is durable.

        Must be called on the running event loop's thread.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put((stmts, (loop, fut)))
        return fut

    def submit_cb(self, stmts: list[Statement],
                  done: Callable[[BaseException | None], None]) -> None:
        """Queue ``stmts`` for the next group commit; ``done(error)`` runs on the running
        event loop once they are durable (``error`` None) or the commit failed. No future and
        no task per commit: the micro-batcher's hand-off (issue 20). The commit (and its
        fsync) always runs on the writer thread, never on the loop's, even for a lone request:
        the loop must never wait on the disk.

        Must be called on the running event loop's thread.
        """
        self._queue.put((stmts, (asyncio.get_running_loop(), done)))

    def write(self, stmts: list[Statement]) -> None:
        """Queue ``stmts`` and block until they are durable (for code off the event loop)."""
        fut: Future[None] = Future()
        self._queue.put((stmts, fut))
        fut.result()

    def _next(self) -> tuple[list[Statement], Any] | None:
        """The next queued request; while bulk records wait, expand them a chunk at a time
        when nothing is queued."""
        bulk = self._bulk
        while bulk.pending:
            try:
                wait = bulk.delay()
                return self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            except queue.Empty:
                pass
            if bulk.delay():
                continue
            try:
                bulk.step(self._writer_conn)
            except Exception as exc:  # disk trouble: retried; readers wait meanwhile
                errors.error("expand", "expanding a bulk send record failed: %s", exc)
                try:
                    return self._queue.get(timeout=0.5)
                except queue.Empty:
                    pass
        return self._queue.get()

    def _run(self) -> None:
        while True:
            first = self._next()
            if first is None:
                self._finish_bulk()
                return
            batch = [first]
            stop = False
            q = self._queue
            while len(batch) < 4096 and not q.empty():  # (this thread is the only reader;
                nxt = q.get_nowait()                      # no queue.Empty raised per commit)
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            err = self._commit(batch)
            self._resolve(batch, err)
            if self._catch_up:  # after the answers (module docstring, "WAL reuse")
                self._checkpoint(self._writer_conn)
                self._catch_up = False
            if stop:
                self._finish_bulk()
                return

    def _commit(self, batch: list[tuple[list[Statement], Any]]) -> BaseException | None:
        """Write ``batch`` in one transaction and commit it (on the writer thread);
        returns the error that failed it, None when it is durable."""
        t0 = time.perf_counter()
        err: BaseException | None = None
        conn = self._writer_conn  # per batch: a test swaps in a connection that fails
        try:
            if self._bulk.pending and not all(self._bulk_independent(s) for s, _ in batch):
                self._bulk.finish(conn)  # e.g. an UPDATE of a row still in a record
            conn.execute("BEGIN")
            for sql, rows in _runs(batch):
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
            self._bulk.note(batch)
        except BaseException as exc:  # resolve every waiter, whatever happened
            err = exc
            self.failed = exc
            errors.error("commit", "durable log commit failed: %s", exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._commits += 1
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - t0)
        return err

    def _finish_bulk(self) -> None:
        """Expand what is left before the writer stops (a clean close leaves no record)."""
        try:
            self._bulk.finish(self._writer_conn)
        except Exception as exc:  # the records stay in the log: the next start expands them
            self.failed = exc
            errors.error("expand", "expanding a bulk send record failed: %s", exc)

    def _checkpoints(self) -> None:
        """Checkpoint the WAL off the commit path (``PASSIVE``: never blocks the writer)."""
        seen = 0
        while not self._stop.wait(CHECKPOINT_SECONDS):
            if self._commits == seen:
                continue
            seen = self._commits
            if self._checkpoint(self._ckpt_conn):
                self._catch_up = True

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> bool:
        """A ``PASSIVE`` checkpoint on ``conn``; False when it failed (logged; retried at
        the next tick: the WAL keeps every frame until then)."""
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            return True
        except sqlite3.Error as exc:  # busy or I/O trouble
            log.warning("WAL checkpoint failed: %s", exc)
            return False

    @staticmethod
    def _resolve(batch: list[tuple[list[Statement], Any]], err: BaseException | None) -> None:
        by_loop: dict[Any, list[Any]] = {}
        for _, waiter in batch:
            if isinstance(waiter, Future):
                if err is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(err)
            else:
                loop, fut = waiter
                by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_wake, futs, err)
            except RuntimeError:  # loop closed: nobody is waiting any more
                pass

    def close(self) -> None:
        """Flush queued writes and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._stop.set()
        self._ckpt.join(timeout=30)
        self._ckpt_conn.close()
        if self.failed is None:  # the last close checkpoints the WAL and removes it
            try:
                self._writer_conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
            except sqlite3.Error as exc:
                errors.error("commit", "could not mark the log closed cleanly: %s", exc)
        self._writer_conn.close()
        self.reader.close()
        self._lock.close()  # releases the flock

def _wake(futs: list[Any], err: BaseException | None) -> None:
    """On the loop: resolve the futures of :meth:`DurableLog.submit` and call the callbacks
    of :meth:`DurableLog.submit_cb`, in commit order."""
    for f in futs:
        if not isinstance(f, asyncio.Future):
            f(err)  # a submit_cb callback
        elif f.done():
            continue
        elif err is None:
            f.set_result(None)
        else:
            f.set_exception(err)
