"""Fixtures of the server tests: test-double policies and an app on a temporary state dir."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.policies.base import ItemContext, ItemPolicy, TimingContext, TimingPolicy
from pushrl.serve.app import create_app
from pushrl.rules.guardrails import Guardrails
from pushrl.serve.config import ServeConfig

T0 = 1_772_409_600  # 2026-03-02T00:00:00Z, a Monday


class AlwaysSend(TimingPolicy):
    """Wants to send at every slot (guardrails are the only brake)."""

    name = "always"
    version = "test"

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        return np.tile([0.0, 1.0], (len(ctx), 1))


class CoinFlip(TimingPolicy):
    """Sends with probability ``p``."""

    name = "coin"
    version = "test"

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        return np.tile([1 - self.p, self.p], (len(ctx), 1))


class UniformItem(ItemPolicy):
    """Uniform over the candidates."""

    name = "uniform"
    version = "test"

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        return np.asarray(ctx.mask, float)


def bl(name: str) -> str:
    """A baseline's registry name (hyphenated; older registries used underscores)."""
    from pushrl.policies.baselines import registry

    return name if name in registry() else name.replace("-", "_")


def doubles(**kw: Any) -> dict[str, Any]:
    """Overrides for :func:`create_app`."""
    return {"timing": kw.get("timing", AlwaysSend()), "item": kw.get("item", UniformItem()),
            **{k: v for k, v in kw.items() if k.startswith("shadow")}}


def make_cfg(tmp: Path, **kw: Any) -> ServeConfig:
    """A config on ``tmp`` (no auth, fixed seed, no pointer polling)."""
    base: dict[str, Any] = {"registry": tmp / "policies", "state": tmp / "state", "seed": 0,
                            "watch_seconds": 0, "guardrails": Guardrails()}
    base.update(kw)
    return ServeConfig(**base)


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``make_client(overrides=..., **cfg)`` -> started TestClient."""
    clients: list[TestClient] = []

    def make(overrides: dict[str, Any] | None = None, **kw: Any) -> TestClient:
        app = create_app(make_cfg(tmp_path, **kw), overrides=overrides if overrides is not None
                         else doubles())
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def seed_world(c: TestClient, n_users: int = 3, n_items: int = 4, ts: int = T0,
               tz: str = "UTC") -> None:
    """Users ``u0..`` and items ``i0..`` (categories a/b)."""
    for j in range(n_items):
        r = c.put(f"/v1/items/i{j}", json={"category": "ab"[j % 2], "features": {"price": j}})
        assert r.status_code == 200, r.text
    for i in range(n_users):
        r = c.put(f"/v1/users/u{i}", json={"timezone": tz, "ts": ts})
        assert r.status_code == 200, r.text


class FullDisk:
    """The writer's connection on a full disk: every COMMIT fails (the rest passes through)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self.conn.executemany(sql, rows)

    def close(self) -> None:
        self.conn.close()
