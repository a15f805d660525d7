"""One durable record per bulk write (issue 16: the due-sends pull of 10k users).

A pull that sends to thousands of users makes ~5 journal rows per send (the decision row,
``UPDATE triggers``, the feature ops and the tracker's op). Written row by row in the
answer's commit, they cost more than the pull itself. Here the pull's rows are committed as
ONE row of ``bulk_sends`` instead: their statements as ``(sql, rows)`` pieces (column-wise
when the request made them so, :class:`~pushrl.serve.store.Columns`), serialised with
:mod:`marshal` (ints, floats, str, bytes and None round-trip exactly) and guarded by a
SHA-256 of the blob. The answer leaves once that row is durable (same fsync as before); the
writer then *expands* the record into the normal tables (``decisions``, ``triggers``,
``ops``) with ``executemany`` of the same rows, a chunk of rows per transaction, between
request batches, and deletes it in the transaction of its last chunk (``done`` counts the
rows already written, so a crash between chunks resumes where it stopped). Since the
tables end up holding exactly the rows the direct path writes, the rebuilt state, the
tracker replay and ``pushrl logs export`` are the same.

Timing: the writer leaves the newest record alone while its answer is encoded and sent
(:meth:`Expander.delay`), so the expansion does not compete with it for the GIL.

Ordering: while records wait, the writer runs only batches of plain ``INSERT INTO``
statements (new rows with their own keys: they cannot depend on the records' rows); a
batch with anything else (an ``UPDATE decisions`` of a feedback, ``INSERT OR REPLACE``)
waits until every record is expanded, and readers of the log on the server wait for it too
(:meth:`Expander.wait_settled`). At start every record left is verified and expanded before
the state is rebuilt; a damaged one (digest, header or decoding) refuses the start.

Format: ``MAGIC_RAW`` + ``marshal.dumps(pieces, 4)`` (version 2: below
:data:`ZLIB_MIN_BYTES`; a 10k pull: 1.5 MB, whose fsync'd write costs ~1 ms more than
compressed, while zlib level 1 costs ~7 ms of CPU on the answer's path) or ``MAGIC`` +
``zlib.compress(marshal.dumps(pieces, 4), 1)`` (version 1: larger records; both are
read). ``pieces`` is a list of ``(sql, ("R", [row tuple, ...]))`` or
``(sql, ("C", n, [column, ...]))`` (a :class:`~pushrl.serve.store.Columns`; a column is
``("l", list)``, ``("r", start, stop, step)``, ``("s", value)`` or
``("b", bytes, width)``), in the order of the request's statements. Marshal's format is
stable for these types across Python 3 versions, and a record lives for well under a
second unless the server dies.
"""

from __future__ import annotations

import hashlib
import marshal
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from pushrl.errors import PushrlError
from pushrl.serve.rows import Chunks, Column, Columns, Many, Same, Statement

MAGIC = b"PUSHRL-BULK-1\n"
#: The header of an uncompressed record (format version 2).
MAGIC_RAW = b"PUSHRL-BULK-2\n"
#: Records whose marshalled pieces are at least this large are compressed (zlib level 1):
#: below it the CPU of compressing costs the answer more than writing the bytes.
ZLIB_MIN_BYTES = 8 << 20
#: A pull with at least this many sends takes the bulk path (fewer: rows as before).
BULK_MIN_SENDS = 64
#: Seconds the writer waits after a record's commit before expanding it (the answer's
#: encoding and sending first), unless a reader waits for the tables.
EXPAND_DELAY = 0.25
#: The longest the writer waits for a record's answer to be sent (a client gone away).
HOLD_MAX = 1.0
#: Rows written per expansion transaction (a request waits at most one chunk: ~20-40 ms).
CHUNK_ROWS = 8192
DDL = ("CREATE TABLE IF NOT EXISTS bulk_sends (id INTEGER PRIMARY KEY, blob BLOB NOT NULL, "
       "digest TEXT NOT NULL, n_rows INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0)")
#: The one statement of a record (``id`` = the largest journal seq among its rows).
BULK_SQL = "INSERT INTO bulk_sends(id, blob, digest, n_rows, done) VALUES (?,?,?,?,0)"
_DONE_SQL = "UPDATE bulk_sends SET done=? WHERE id=?"
_DELETE_SQL = "DELETE FROM bulk_sends WHERE id=?"

#: One statement's rows in a record: a list of row tuples or a :class:`Columns`.
Piece = tuple[str, "list[Sequence[Any]] | Columns"]


class BulkRecordError(PushrlError):
    """A ``bulk_sends`` record of the log is damaged (the start is refused)."""


class BulkRecord(tuple):  # type: ignore[type-arg]
    """The parameters of :data:`BULK_SQL` ``(id, blob, digest, n_rows)``, carrying the
    :attr:`pieces` in memory (the writer expands from them without decoding) and, when
    the request sets it once its answer is sent, :attr:`sent`."""

    pieces: list[Piece]
    sent: threading.Event | None = None


def group(stmts: Iterable[Statement]) -> list[Piece]:
    """The statements as pieces in order: a :class:`Columns` stays one piece, consecutive
    plain rows and ``Many`` of one statement are merged into one list of rows."""
    out: list[Piece] = []
    last: list[Sequence[Any]] | None = None
    last_sql = ""
    for sql, params in stmts:
        t = type(params)
        if t is Columns:
            out.append((sql, params))  # type: ignore[arg-type]
            last = None
            continue
        if last is None or sql != last_sql:
            last, last_sql = [], sql
            out.append((sql, last))
        if t is Many:
            last.extend(params)  # type: ignore[arg-type]
        else:
            last.append(params)  # type: ignore[arg-type]
    return out


def _size(piece: list[Sequence[Any]] | Columns) -> int:
    return piece.n if type(piece) is Columns else len(piece)


def _col_spec(c: Column) -> tuple[Any, ...]:
    if type(c) is Same:
        return ("s", c.value)
    if type(c) is Chunks:
        return ("b", c.data, c.width)
    if type(c) is range:
        return ("r", c.start, c.stop, c.step)
    return ("l", c if type(c) is list else list(c))  # type: ignore[arg-type]


def _col(spec: Any) -> Column:
    tag = spec[0]
    if tag == "s":
        return Same(spec[1])
    if tag == "b":
        return Chunks(spec[1], spec[2])
    if tag == "r":
        return range(spec[1], spec[2], spec[3])
    if tag == "l" and isinstance(spec[1], list):
        return list(spec[1])
    raise ValueError(f"unknown column {tag!r}")


def pack(stmts: list[Statement], record_id: int) -> tuple[str, BulkRecord]:
    """The one statement that makes ``stmts`` durable as a bulk record.

    Args:
        stmts: Journal rows of one request (plain statements, ``Many`` and ``Columns``).
        record_id: A key larger than every earlier record's (the request's last seq).

    Raises:
        ValueError: A parameter marshal cannot store (e.g. a numpy scalar): write ``stmts``
            directly instead.
    """
    pieces = group(stmts)
    raw = marshal.dumps([
        (sql, ("C", p.n, [_col_spec(c) for c in p.cols]) if type(p) is Columns else ("R", p))
        for sql, p in pieces], 4)
    blob = (MAGIC_RAW + raw if len(raw) < ZLIB_MIN_BYTES
            else MAGIC + zlib.compress(raw, 1))
    rec = BulkRecord((record_id, blob, hashlib.sha256(blob).hexdigest(),
                      sum(_size(p) for _, p in pieces)))
    rec.pieces = pieces
    return BULK_SQL, rec


def unpack(record_id: int, blob: bytes, digest: str) -> list[Piece]:
    """The pieces of a stored record, verified.

    Raises:
        BulkRecordError: One line naming the record and what is wrong.
    """
    blob = bytes(blob)
    if hashlib.sha256(blob).hexdigest() != digest:
        raise BulkRecordError(f"bulk_sends record {record_id} is damaged (its SHA-256 does not "
                              "match the stored digest)")
    if not blob.startswith((MAGIC, MAGIC_RAW)):
        raise BulkRecordError(f"bulk_sends record {record_id} has an unknown format "
                              f"(header {blob[:len(MAGIC)]!r}, expected {MAGIC_RAW!r} or "
                              f"{MAGIC!r})")
    try:
        out: list[Piece] = []
        body = blob[len(MAGIC):]  # (both headers have the same length)
        for sql, spec in marshal.loads(body if blob.startswith(MAGIC_RAW)
                                       else zlib.decompress(body)):
            if not isinstance(sql, str):
                raise ValueError("a statement is not a string")
            if spec[0] == "C":
                cols = Columns(int(spec[1]), *map(_col, spec[2]))
                if any(len(c) != cols.n for c in cols.cols  # type: ignore[arg-type]
                       if type(c) in (list, range)):
                    raise ValueError("columns of unequal length")
                out.append((sql, cols))
            elif spec[0] == "R" and isinstance(spec[1], list):
                out.append((sql, spec[1]))
            else:
                raise ValueError(f"unknown piece {spec[0]!r}")
    except (ValueError, EOFError, TypeError, IndexError, zlib.error) as exc:
        raise BulkRecordError(f"bulk_sends record {record_id} cannot be decoded ({exc})") from None
    return out


def _write(conn: sqlite3.Connection, pieces: list[Piece], start: int, stop: int) -> None:
    """Write rows ``[start, stop)`` of the pieces' concatenation, in order."""
    pos = 0
    for sql, p in pieces:
        n = _size(p)
        a, b = max(start - pos, 0), min(stop - pos, n)
        if a < b:
            conn.executemany(sql, p.rows(a, b) if isinstance(p, Columns) else p[a:b])
        pos += n


def independent(stmts: list[Statement]) -> bool:
    """True when ``stmts`` only add rows with their own keys (plain ``INSERT INTO``): safe to
    commit before waiting records are expanded."""
    return all(s[0].startswith("INSERT INTO ") and s[0] is not BULK_SQL for s in stmts)


def recover(conn: sqlite3.Connection) -> int:
    """Expand every record left in the log (a server stopped before expanding it), each in
    one transaction; returns how many. Call before the state is read.

    Raises:
        BulkRecordError: A record is damaged (nothing is expanded from it).
    """
    conn.execute(DDL)
    ids = [r[0] for r in conn.execute("SELECT id FROM bulk_sends ORDER BY id")]
    for rid in ids:
        blob, digest, n_rows, done = conn.execute(
            "SELECT blob, digest, n_rows, done FROM bulk_sends WHERE id=?", (rid,)).fetchone()
        runs = unpack(rid, blob, digest)
        total = sum(_size(p) for _, p in runs)
        if total != n_rows or not 0 <= done <= total:
            raise BulkRecordError(f"bulk_sends record {rid} is inconsistent ({total} rows "
                                  f"stored, n_rows={n_rows}, done={done})")
        conn.execute("BEGIN")
        try:
            _write(conn, runs, done, total)
            conn.execute(_DELETE_SQL, (rid,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(ids)


def unexpanded(conn: sqlite3.Connection) -> int:
    """Records not yet expanded in a log (0 when the table does not exist)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                       "name='bulk_sends'").fetchone()
    return int(conn.execute("SELECT count(*) FROM bulk_sends").fetchone()[0]) if has else 0


class Expander:
    """The writer thread's queue of committed records to expand (in commit order)."""

    def __init__(self, chunk_rows: int | None = None) -> None:
        self.chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
        self._todo: deque[list[Any]] = deque()  # [id, runs, total, done]
        self._cond = threading.Condition()
        self._since = 0.0  # when the newest record was committed (monotonic s)
        self._urgent = False  # a reader waits
        self._sent: threading.Event | None = None  # the newest record's answer was sent

    @property
    def pending(self) -> bool:
        """Records committed but not fully expanded."""
        return bool(self._todo)

    def note(self, batch: Iterable[tuple[list[Statement], Any]]) -> None:
        """Queue the records of a committed batch (call after its COMMIT)."""
        for stmts, _ in batch:
            for sql, params in stmts:
                if sql is BULK_SQL:
                    rec = params
                    assert isinstance(rec, BulkRecord)
                    with self._cond:
                        self._todo.append([rec[0], rec.pieces, rec[3], 0])
                        self._since = time.monotonic()
                        self._sent = getattr(rec, "sent", None)

    def delay(self) -> float:
        """Seconds the writer should still leave the newest record alone: its answer is
        being encoded and sent (expansion would compete with it for the GIL). Until the
        request's ``sent`` event is set (at most :data:`HOLD_MAX` s), else
        :data:`EXPAND_DELAY` s after its commit; 0 once a reader waits for the tables."""
        if self._urgent:
            return 0.0
        sent = self._sent
        if sent is not None:
            if sent.is_set():
                return 0.0
            left = self._since + HOLD_MAX - time.monotonic()
            return min(max(left, 0.0), 0.005)  # polled: set from the event loop
        return max(self._since + EXPAND_DELAY - time.monotonic(), 0.0)

    def step(self, conn: sqlite3.Connection) -> None:
        """Expand the next chunk of the oldest record in one transaction."""
        rec = self._todo[0]
        rid, runs, total, done = rec
        stop = min(done + self.chunk_rows, total)
        conn.execute("BEGIN")
        try:
            _write(conn, runs, done, stop)
            if stop == total:
                conn.execute(_DELETE_SQL, (rid,))
            else:
                conn.execute(_DONE_SQL, (stop, rid))
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        rec[3] = stop
        if stop == total:
            with self._cond:
                self._todo.popleft()
                if not self._todo:
                    self._cond.notify_all()

    def finish(self, conn: sqlite3.Connection) -> None:
        """Expand every queued record."""
        while self._todo:
            self.step(conn)

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Block until every record is expanded (a reader of the expanded tables).

        Raises:
            TimeoutError: Still not expanded after ``timeout`` s (the writer keeps failing).
        """
        if not self._todo:
            return
        with self._cond:
            self._urgent = True
            try:
                done = self._cond.wait_for(lambda: not self._todo, timeout)
            finally:
                self._urgent = False
            if not done:
                raise TimeoutError(f"the log's bulk send records are still not expanded after "
                                   f"{timeout:.0f} s (the durable log keeps failing)")
