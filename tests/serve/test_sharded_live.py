"""Slow tests of `pushrl serve --shards 2` as a real process tree: kill -9 of one shard
under load loses no acknowledged write and fails none of the other shard's users; a hot
promote/rollback under load fails no request; `pushrl logs export` merges the shards."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from pushrl.policies.registry import save_artifact
from pushrl.serve.shards import shard_of
from tests.serve.conftest import bl
from tests.serve.live import LiveServer

pytestmark = pytest.mark.slow
N_USERS = 120


def _setup(base: str) -> None:
    with httpx.Client(base_url=base, timeout=60) as c:
        for j in range(5):
            c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2]}).raise_for_status()
        for i in range(N_USERS):
            c.put(f"/v1/users/u{i}", json={"timezone": "UTC"}).raise_for_status()


async def _load(base: str, seconds: float, acked: dict[str, set[str]],
                failures: dict[int, list[Any]], conns: int = 8) -> None:
    """Decide + feedback for every user until ``seconds`` pass; failures per user shard."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds

    async def worker(k: int, c: httpx.AsyncClient) -> None:
        i = k
        while loop.time() < stop:
            i += conns
            uid = f"u{i % N_USERS}"
            sh = shard_of(uid, 2)
            try:
                r = await c.post("/v1/decide", json={"user_id": uid})
                if r.status_code != 200:
                    failures[sh].append((r.status_code, r.text[:200]))
                    await asyncio.sleep(0.01)
                    continue
                did = r.json()["decision_id"]
                acked["decisions"].add(did)
                r = await c.post("/v1/feedback", json={"decision_id": did})
                if r.status_code != 200:
                    failures[sh].append((r.status_code, r.text[:200]))
                    continue
                acked["feedback"].add(did)
            except httpx.HTTPError as exc:
                failures[sh].append(("transport", repr(exc)))

    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=conns)) as c:
        await asyncio.gather(*(worker(k, c) for k in range(conns)))


def _export(tmp: Path) -> Path:
    import subprocess
    import sys

    out = tmp / "export"
    subprocess.run([sys.executable, "-m", "pushrl.cli.main", "logs", "export", "--state",
                    str(tmp / "state"), "--out", str(out)], check=True, capture_output=True)
    return out


def test_kill_9_of_one_shard_under_load(tmp_path: Path) -> None:
    srv = LiveServer(tmp_path, "--shards", "2")
    try:
        _setup(srv.base)
        pids = [s["pid"] for s in httpx.get(srv.base + "/v1/shards").json()["detail"]]
        acked: dict[str, set[str]] = {"decisions": set(), "feedback": set()}
        failures: dict[int, list[Any]] = {0: [], 1: []}

        async def run() -> None:
            task = asyncio.create_task(_load(srv.base, 8.0, acked, failures))
            await asyncio.sleep(2.0)
            os.kill(pids[1], signal.SIGKILL)  # shard 1, mid-load
            await task

        asyncio.run(run())
        assert failures[0] == [], failures[0][:3]  # the other shard's users: none failed
        assert all(f[0] == 503 for f in failures[1]), failures[1][:3]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the parent restarts the killed shard
            st = httpx.get(srv.base + "/v1/shards").json()["detail"][1]
            if st["up"] and st["restarts"] == 1:
                break
            time.sleep(0.2)
        assert st["up"] and st["restarts"] == 1 and st["exit_codes"] == [-9], st
        r = httpx.post(srv.base + "/v1/decide", json={"user_id": next(
            f"u{i}" for i in range(N_USERS) if shard_of(f"u{i}", 2) == 1)}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        srv.stop()
    out = _export(tmp_path)
    pushes = pd.read_parquet(out / "pushes.parquet")
    fb = pd.read_parquet(out / "feedback.parquet")
    assert pushes["decision_id"].is_unique
    have = set(pushes["decision_id"])
    assert len(acked["decisions"]) > 20
    assert acked["decisions"] <= have, len(acked["decisions"] - have)
    assert acked["feedback"] <= set(fb["decision_id"])
    assert {d[:3] for d in have} == {"s0.", "s1."}


def _artifact(reg: Path, name: str, baseline: str) -> None:
    save_artifact(reg / name, kind="timing", loader="baseline", files={},
                  card={"baseline": baseline, "params": {},
                        "ope": {"gate": {"passed": True, "failed_rules": []}}})


def test_hot_promote_and_rollback_across_shards_under_load(tmp_path: Path) -> None:
    reg = tmp_path / "policies"
    _artifact(reg, "never", bl("never-send"))
    _artifact(reg, "fixed", bl("fixed-hour"))
    srv = LiveServer(tmp_path, "--shards", "2")
    acked: dict[str, set[str]] = {"decisions": set(), "feedback": set()}
    failures: dict[int, list[Any]] = {0: [], 1: []}
    gens: list[int] = []

    async def flip() -> None:
        async with httpx.AsyncClient(base_url=srv.base, timeout=60) as c:
            for k in range(4):
                await asyncio.sleep(0.4)
                name = ("never", "fixed")[k % 2]
                r = await c.post(f"/v1/policies/{name}/promote", json={"reason": "load"})
                assert r.status_code == 200, r.text
                gens.append(r.json()["generation"])
                await asyncio.sleep(0.3)
                r = await c.post(f"/v1/policies/{name}/rollback", json={"reason": "load"})
                assert r.status_code == 200, r.text
                gens.append(r.json()["generation"])

    async def run() -> None:
        await asyncio.gather(_load(srv.base, 6.0, acked, failures), flip())

    try:
        _setup(srv.base)
        asyncio.run(run())
        assert failures == {0: [], 1: []}, failures
        assert gens == sorted(gens) and len(set(gens)) == 8
        st = httpx.get(srv.base + "/v1/shards").json()
        assert st["generation"] == gens[-1]
        assert len(st["pauses_ms"]) == 10  # the last 10 barrier changes (items included)
    finally:
        srv.stop()
    pushes = pd.read_parquet(_export(tmp_path) / "pushes.parquet")
    assert {"never@v1", "fixed@v1"} <= set(pushes["policy"])
