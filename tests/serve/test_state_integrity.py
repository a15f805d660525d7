"""#15 item 4: a missing, emptied or damaged log, or a lost WAL, stops the start-up with one
clear line and a recovery path; backup and restore bring the state back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pushrl.serve.backup import backup, restore
from pushrl.serve.server import Server
from pushrl.serve.store import LOG_FILE, StateError
from tests.serve.conftest import T0, doubles, make_cfg, seed_world

H = 3600


def _world(make_client: Any, tmp: Path) -> Path:
    """A state dir with users, decisions and a feature spec, shut down cleanly."""
    c = make_client()
    seed_world(c, n_users=5)
    for i in range(5):
        assert c.post("/v1/decide", json={"user_id": f"u{i}", "ts": T0 + 12 * H}).status_code \
            == 200
    spec = c.app.state.server.state.spec.to_dict()
    c.__exit__(None, None, None)
    state = tmp / "state"
    (state / "feature_spec.json").write_text(json.dumps(spec))
    return state


def _start(tmp: Path, **kw: Any) -> Server:
    return Server(make_cfg(tmp, **kw), overrides=doubles())


def _refused(tmp: Path, match: str) -> str:
    with pytest.raises(StateError, match=match) as err:
        _start(tmp)
    assert "pushrl logs restore" in str(err.value) and "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_missing_or_empty_log_beside_a_spec_is_refused(make_client: Any, tmp_path: Path,
                                                       damage: str) -> None:
    state = _world(make_client, tmp_path)
    if damage == "empty":
        (state / LOG_FILE).write_bytes(b"")
    else:
        (state / LOG_FILE).unlink()
    msg = _refused(tmp_path, "0 bytes" if damage == "empty" else "missing")
    assert "--accept-empty-state" in msg
    srv = _start(tmp_path, accept_empty_state=True)  # deliberately anew
    try:
        assert srv.state.users == {}
    finally:
        srv.close()


def test_a_fresh_state_dir_starts(tmp_path: Path) -> None:
    srv = _start(tmp_path)
    srv.close()
    _start(tmp_path).close()  # and restarts after a clean shutdown (no WAL left: fine)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_database_is_refused(make_client: Any, tmp_path: Path, damage: str) -> None:
    state = _world(make_client, tmp_path)
    db = state / LOG_FILE
    data = bytearray(db.read_bytes())
    assert not (state / (LOG_FILE + "-wal")).exists()
    if damage == "flip":
        for off in range(4096, len(data), 4096):  # the b-tree header of every page but the 1st
            data[off:off + 8] = bytes(b ^ 0x5A for b in data[off:off + 8])
    else:
        data = data[: len(data) // 2]
    db.write_bytes(bytes(data))
    _refused(tmp_path, "integrity_check|damaged|malformed|cannot be opened")


def _crash_after_writes(state: Path, seq: int) -> None:
    """A server process that commits and dies without closing (kill -9 alike)."""
    code = (
        "import os, sys\n"
        "from pushrl.serve.store import DurableLog\n"
        "log = DurableLog(sys.argv[1], sync='normal')\n"
        "log.write([('INSERT INTO activity VALUES (?,?,?,?,?,?)', (int(sys.argv[2]), 'u0', 1,"
        " 'view', None, None))])\n"
        "os._exit(0)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code, str(state), str(seq)], check=True, env=env,
                   timeout=120)


def test_lost_wal_after_a_crash_is_refused_and_restore_accepts_it(make_client: Any,
                                                                  tmp_path: Path) -> None:
    state = _world(make_client, tmp_path)
    _crash_after_writes(state, 10**9)
    assert (state / (LOG_FILE + "-wal")).exists()
    _start(tmp_path).close()  # a crash alone is fine: the WAL is there
    _crash_after_writes(state, 10**9 + 1)
    for suffix in ("-wal", "-shm"):
        (state / (LOG_FILE + suffix)).unlink()
    _refused(tmp_path, "-wal is missing")
    _refused(tmp_path, "-wal is missing")  # still (the check leaves no WAL that hides it)
    res = restore(state / LOG_FILE, state)  # go on with what the database file holds
    assert res["users"] == 5 and res["moved_aside"]
    srv = _start(tmp_path)
    try:
        assert len(srv.state.users) == 5
    finally:
        srv.close()


def test_backup_while_running_then_restore_into_a_new_dir(make_client: Any,
                                                          tmp_path: Path) -> None:
    c = make_client()
    seed_world(c, n_users=4)
    for i in range(4):
        c.post("/v1/events", json={"user_id": f"u{i}", "event": "view", "ts": T0 + i * H})
        c.post("/v1/decide", json={"user_id": f"u{i}", "ts": T0 + 12 * H})
    srv = c.app.state.server
    arrays = {k: v[..., :srv.state.fs.n].copy() for k, v in vars(srv.state.fs.a).items()
              if isinstance(v, np.ndarray)}
    res = backup(tmp_path / "state", tmp_path / "bk" / "log-backup.sqlite3")
    assert res["decisions"] == 4 and res["users"] == 4
    c.__exit__(None, None, None)
    other = tmp_path / "other"
    restore(tmp_path / "bk" / "log-backup.sqlite3", other / "state")
    srv2 = _start(other)
    try:
        assert sorted(srv2.state.users) == ["u0", "u1", "u2", "u3"]
        for k, v in arrays.items():
            np.testing.assert_array_equal(v, srv2.state.fs.a.__dict__[k][..., :srv2.state.fs.n])
    finally:
        srv2.close()


def test_serve_cli_refuses_with_one_line(make_client: Any, tmp_path: Path) -> None:
    state = _world(make_client, tmp_path)
    (state / LOG_FILE).unlink()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    r = subprocess.run([sys.executable, "-m", "pushrl.cli.main", "serve", "--state", str(state),
                        "--registry", str(tmp_path / "policies")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], lines
