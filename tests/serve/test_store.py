"""The durable log: group commit, and WAL checkpoints off the commit path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pushrl.serve import store
from pushrl.serve.store import DurableLog

_ROW = "INSERT INTO activity VALUES (?,?,?,?,?,?)"


def test_writes_are_durable_and_the_wal_is_checkpointed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "CHECKPOINT_SECONDS", 0.05)
    log = DurableLog(tmp_path, sync="normal")
    try:
        # autocheckpoint is off on the writer: only the checkpointer thread empties the WAL
        assert log._writer_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        blob = "x" * 2000

        def burst(k0: int) -> None:  # 20 commits x 100 rows x 2 kB: ~4 MB of WAL
            for k in range(k0, k0 + 20):
                log.write([(_ROW, (k * 100 + i, "u", 0, "session", blob, None))
                           for i in range(100)])

        wal = tmp_path / (store.LOG_FILE + "-wal")
        burst(0)
        first = wal.stat().st_size
        assert first > 3_000_000
        time.sleep(1.0)  # the checkpointer copies the WAL into the database meanwhile
        burst(20)
        # after a complete checkpoint the writer restarts the WAL from its start: it stays
        # the size of one burst instead of growing to two
        assert wal.stat().st_size < 1.5 * first
        assert log.query("SELECT count(*) FROM activity")[0][0] == 4000
    finally:
        log.close()
    # a fresh open sees everything (nothing lived only in memory)
    again = DurableLog(tmp_path, sync="normal")
    try:
        assert again.query("SELECT count(*) FROM activity")[0][0] == 4000
    finally:
        again.close()


def test_identity_adapters_bind_nulls_and_blobs_unchanged(tmp_path: Path) -> None:
    """The store's identity adapters (#20: NULL and BLOB parameters without the adapter
    search) bind exactly what sqlite3 binds without them: NULL, BLOB, and the base types."""
    import sqlite3

    import pushrl.serve.store as store_mod

    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is not None
    conn = store_mod.connect(tmp_path / "x.sqlite3")
    conn.execute("CREATE TABLE t (a, b, c)")
    conn.executemany("INSERT INTO t VALUES (?,?,?)", [
        (None, b"\x00\x01", 1), (None, bytearray(b"ab"), "x"), (1.5, memoryview(b"zz"), None)])
    got = conn.execute("SELECT a, typeof(a), b, typeof(b), c, typeof(c) FROM t").fetchall()
    assert got == [(None, "null", b"\x00\x01", "blob", 1, "integer"),
                   (None, "null", b"ab", "blob", "x", "text"),
                   (1.5, "real", b"zz", "blob", None, "null")]
    conn.close()


def _wal_restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: +1 each time SQLite restarts the WAL."""
    with open(wal, "rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_the_wal_is_reused_under_steady_commits(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits that never pause still restart the WAL after checkpointer passes (the writer
    checkpoints the frames committed since, between two commits), so the WAL is overwritten
    in place instead of growing by every frame since the start."""
    monkeypatch.setattr(store, "CHECKPOINT_SECONDS", 0.05)
    log = DurableLog(tmp_path, sync="normal")
    wal = tmp_path / (store.LOG_FILE + "-wal")
    n = 0
    try:
        log.write([(_ROW, (n, "u", 0, "session", None, None))])
        n, first = 1, _wal_restarts(wal)
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:  # back to back: no pause for the checkpointer
            log.write([(_ROW, (n, "u", 0, "session", "x" * 3000, None))])
            n += 1
        restarts = _wal_restarts(wal) - first
    finally:
        log.close()
    assert n > 200
    assert restarts >= 5, f"the WAL restarted {restarts} times in 1.5 s of commits"
    again = DurableLog(tmp_path, sync="normal")
    try:
        assert again.query("SELECT count(*), max(seq) FROM activity")[0] == (n, n - 1)
    finally:
        again.close()
