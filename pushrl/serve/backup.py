"""Backup and restore of a server's state dir (``pushrl logs backup`` / ``restore``).

A backup is one SQLite file: a consistent copy of ``log.sqlite3`` made with SQLite's online
backup API (safe while the server runs: it copies one committed snapshot, WAL included), with
``feature_spec.json`` and ``item_popularity.json`` stored in its ``meta`` table and the
imported history's snapshot files (:mod:`pushrl.serve.history`) in a ``history_files``
table. Restoring moves the current log (and its
WAL) aside, never deleting it, and installs the backup; the server then rebuilds its state
from it at start-up.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import sqlite3
from pathlib import Path
from typing import Any

from pushrl.serve.history import HISTORY_DIR, POPULAR_FILE, check_history
from pushrl.serve.store import LOCK_FILE, LOG_FILE, SPEC_FILE, StateError, check_log

_SPEC_KEY = "feature_spec"
_POPULAR_KEY = "item_popularity"
_FILES = "history_files"


def _copy(src: Path, dst: Path) -> None:
    """Copy the SQLite database ``src`` (with its WAL) to a new file ``dst``."""
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
        d.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        d.close()
        s.close()


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("users", "items", "decisions", "feedback")}


def _store_history(conn: sqlite3.Connection, d: Path) -> None:
    """Copy the imported history's snapshot files into the backup (checked first)."""
    hdir = d / HISTORY_DIR
    if not hdir.is_dir():
        return
    check_history(d)
    conn.execute(f"CREATE TABLE {_FILES} (name TEXT PRIMARY KEY, data BLOB NOT NULL)")
    for f in sorted(hdir.iterdir()):
        if f.is_file():
            conn.execute(f"INSERT INTO {_FILES} VALUES (?, ?)", (f.name, f.read_bytes()))


def backup(state_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write a consistent copy of the state dir's log (and feature spec) to ``out``.

    Raises:
        StateError: The log is missing or damaged (nothing to back up), or ``out`` exists.
    """
    d, dst = Path(state_dir), Path(out)
    if dst.exists():
        raise StateError(f"{dst} exists; choose a new backup file")
    if not (d / LOG_FILE).exists():
        raise StateError(f"no log to back up: {d / LOG_FILE} does not exist")
    check_log(d, accept_empty=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _copy(d / LOG_FILE, dst)
    conn = sqlite3.connect(dst, isolation_level=None)
    try:
        spec = d / SPEC_FILE
        if spec.exists():
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_SPEC_KEY,
                                                                      spec.read_text()))
        pop = d / POPULAR_FILE
        if pop.exists():
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_POPULAR_KEY,
                                                                      pop.read_text()))
        _store_history(conn, d)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise StateError(f"the backup {dst} fails PRAGMA integrity_check ({ok})")
        return {"out": str(dst), **_counts(conn)}
    finally:
        conn.close()


def restore(src: str | Path, state_dir: str | Path) -> dict[str, Any]:
    """Install the backup ``src`` as the state dir's log; the current log is moved aside.

    ``src`` may also be the state dir's own ``log.sqlite3``: that accepts what the database
    file holds (after a lost WAL).

    Raises:
        StateError: A server runs on the state dir, or ``src`` is not an intact pushrl log.
    """
    d, src = Path(state_dir), Path(src)
    if not src.is_file() or src.stat().st_size == 0:
        raise StateError(f"{src} is not a backup file (missing or empty)")
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StateError(f"a pushrl server runs on {d}; stop it before restoring") from None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        staged = d / f"{LOG_FILE}.restoring-{stamp}"
        _copy(src, staged)
        conn = sqlite3.connect(staged, isolation_level=None)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables or "ops" not in tables:
                raise StateError(f"{src} is not a pushrl log")
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise StateError(f"{src} fails PRAGMA integrity_check ({ok}); it cannot be "
                                 "restored (salvage it first: sqlite3 FILE .recover)")
            spec = conn.execute("SELECT value FROM meta WHERE key=?", (_SPEC_KEY,)).fetchone()
            pop = conn.execute("SELECT value FROM meta WHERE key=?", (_POPULAR_KEY,)).fetchone()
            files = (conn.execute(f"SELECT name, data FROM {_FILES}").fetchall()
                     if _FILES in tables else [])
            conn.execute(f"DROP TABLE IF EXISTS {_FILES}")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
            counts = _counts(conn)
        except BaseException:
            conn.close()
            staged.unlink()
            raise
        conn.close()
        aside = []
        for suffix in ("", "-wal", "-shm"):
            p = d / (LOG_FILE + suffix)
            if p.exists():
                moved = d / f"{LOG_FILE}{suffix}.replaced-{stamp}"
                p.rename(moved)
                aside.append(str(moved))
        staged.rename(d / LOG_FILE)
        if spec is not None:
            json.loads(spec[0])  # a spec that does not parse must not be installed
            (d / SPEC_FILE).write_text(spec[0])
        if pop is not None:
            json.loads(pop[0])
            (d / POPULAR_FILE).write_text(pop[0])
        if files:
            hdir = d / HISTORY_DIR
            if hdir.exists():
                moved = d / f"{HISTORY_DIR}.replaced-{stamp}"
                hdir.rename(moved)
                aside.append(str(moved))
            hdir.mkdir()
            for name, data in files:
                (hdir / Path(name).name).write_bytes(data)
    check_log(d)
    check_history(d)  # the restored snapshot files match the checksums of the restored log
    return {"state": str(d), "moved_aside": aside, **counts}
