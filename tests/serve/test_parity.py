"""Train/serve parity: the server builds exactly the timing observation the environment built,
and the simulator, bandit training and the server build the same item context.

One simulated user's history (the environment's organic activity, sends and opens) is fed
to a running server through its API; the server's timing policy records the observation it
gets (:class:`~pushrl.envs.observation.TimingObservation`, as the served PPO actor builds
it) and sends exactly where the environment delivered; its item policy records the item
context. Then the server's log is exported and featurised by bandit training
(:func:`~pushrl.policies.item_data.build_rounds`) and by the simulator's builder
(:func:`pushrl.sim.items.build_item_context`) on the replayed feature state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from pushrl.data.features import ItemCatalog, iter_replay, user_index
from pushrl.data.validate import load_dataset
from pushrl.envs import PushTimingEnv
from pushrl.envs.observation import TimingObservation
from pushrl.policies.base import ItemContext, ItemPolicy, TimingContext, TimingPolicy
from pushrl.policies.item_data import ContextEncoder, build_rounds
from pushrl.serve.app import create_app
from pushrl.serve.export import export
from pushrl.sim.items import build_item_context
from tests.serve.conftest import make_cfg

H = 3600
USER = 4  # a population user who opens some of the pushes
DAYS = 5  # < 7: the 7-day windows of features and server guardrails agree inside a week


class ScriptedTiming(TimingPolicy):
    """Sends at the buckets in ``send_at``; records the agent observation of the context the
    server built (before ``action_dist_unguarded`` lifts its mask to ask what the policy
    would have done where a guardrail decided)."""

    name = "scripted"
    version = "test"

    def __init__(self, obs: TimingObservation, send_at: set[int]) -> None:
        self.obs, self.send_at = obs, send_at
        self.seen: dict[int, np.ndarray] = {}

    def _record(self, ctx: TimingContext) -> None:
        for b, row in zip(np.asarray(ctx.bucket).reshape(-1), self.obs.from_context(ctx),
                          strict=True):
            self.seen.setdefault(int(b), row)

    def action_dist(self, ctx: TimingContext) -> np.ndarray:
        self._record(ctx)
        return super().action_dist(ctx)

    def action_dist_unguarded(self, ctx: TimingContext) -> tuple[np.ndarray, np.ndarray]:
        self._record(ctx)
        return super().action_dist_unguarded(ctx)

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        send = np.array([int(b) in self.send_at for b in np.asarray(ctx.bucket).reshape(-1)],
                        float)
        return np.stack([1 - send, send], axis=1)


class RecordingItem(ItemPolicy):
    """Always the first candidate; records every item context."""

    name = "first"
    version = "test"

    def __init__(self) -> None:
        self.seen: list[ItemContext] = []

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        self.seen.append(ctx)
        d = np.zeros(ctx.mask.shape)
        d[:, 0] = 1.0
        return d


def _simulate(env: PushTimingEnv) -> tuple[list[tuple[int, np.ndarray]], list[dict[str, Any]]]:
    """Step the environment; returns ``[(bucket, observation)]`` and its events in order."""
    state, events = env.sim.state, []
    rec_act, rec_push = state.record_activity, state.record_push

    def record_activity(users: Any, bucket: Any, categories: Any = None,
                        count: Any = None) -> None:
        assert count is None
        for b, c in zip(np.broadcast_to(bucket, np.shape(users)), categories, strict=True):
            events.append({"kind": "activity", "bucket": int(b), "cat": int(c)})
        rec_act(users, bucket, categories)

    def record_push(users: Any, bucket: Any, opened: Any = None) -> None:
        for b, o in zip(np.broadcast_to(bucket, np.shape(users)), opened, strict=True):
            events.append({"kind": "push", "bucket": int(b), "opened": bool(o)})
        rec_push(users, bucket, opened)

    state.record_activity, state.record_push = record_activity, record_push  # type: ignore[method-assign]
    obs, _ = env.reset(seed=4, options={"user": USER})
    steps = [(int(env.sim.bucket()[0]), obs)]
    rng = np.random.default_rng(0)
    for _ in range(DAYS * 24 - 1):
        want = bool(env.action_masks()[1]) and rng.random() < 0.25
        obs, _, term, trunc, _ = env.step(int(want))
        if term or trunc:
            break
        steps.append((int(env.sim.bucket()[0]), obs))
    return steps, events


def test_server_builds_the_env_observation_and_the_same_item_context(tmp_path: Path) -> None:
    env = PushTimingEnv("default", horizon_days=DAYS, warm_start="none")
    g, spec, model = env.scenario.guardrails, env.world.model.spec, env.world.model
    steps, events = _simulate(env)
    pushes = [e for e in events if e["kind"] == "push"]
    assert len(pushes) >= 4 and any(e["opened"] for e in pushes)
    assert sum(e["kind"] == "activity" for e in events) > 20

    timing = ScriptedTiming(TimingObservation(g), {e["bucket"] for e in pushes})
    item = RecordingItem()
    # the server started on the scenario's data (--catalog): its spec and items are the ones
    # the simulator was fitted on
    cfg = make_cfg(tmp_path, catalog=Path(env.scenario.data), guardrails=g)
    app = create_app(cfg, overrides={"timing": timing, "item": item})
    tz = str(model.population.timezone[USER])  # type: ignore[union-attr]
    first = steps[0][0]
    with TestClient(app) as c:
        srv = app.state.server
        assert srv.state.spec == spec
        of_cat = {}
        for it in srv.state.item_list:
            of_cat.setdefault(it.category, it.item_id)
        assert c.put("/v1/users/u", json={"timezone": tz, "ts": first * H}).status_code == 200
        by_bucket: dict[int, list[dict[str, Any]]] = {}
        for e in events:
            by_bucket.setdefault(e["bucket"], []).append(e)
        for b, _ in steps:
            d = c.post("/v1/decide", json={"user_id": "u", "ts": b * H}).json()
            todo = by_bucket.get(b, [])
            sent = [e for e in todo if e["kind"] == "push"]
            assert d["send"] == bool(sent), (b, d)
            if sent and sent[0]["opened"]:
                c.post("/v1/feedback", json={"decision_id": d["decision_id"], "opened": True,
                                             "ts": b * H + 60})
            acts = [{"user_id": "u", "event": "view", "ts": b * H + 120,
                     "item_id": of_cat[spec.categories[e["cat"]]]} if e["cat"] >= 0 else
                    {"user_id": "u", "event": "session", "ts": b * H + 120}
                    for e in todo if e["kind"] == "activity"]
            if acts:
                assert c.post("/v1/events", json={"events": acts}).status_code == 200
        served_catalog = srv.state.catalog

    # 1. the timing observation, column for column, at every decision of the episode
    assert sorted(timing.seen) == [b for b, _ in steps]
    for b, env_obs in steps:
        np.testing.assert_array_equal(timing.seen[b], env_obs, err_msg=f"bucket {b}")

    # 2. the item context: server == bandit training on the exported log == simulator
    export(tmp_path / "state", tmp_path / "out")
    ds, _ = load_dataset(tmp_path / "out")
    catalog = ItemCatalog(ds.items, spec)
    np.testing.assert_array_equal(catalog.features, served_catalog.features)
    enc = ContextEncoder(spec, tuple(map(str, catalog.ids)), catalog.feature_names)
    rounds = build_rounds(ds, encoder=enc)
    order = np.argsort(ds.pushes["ts"].to_numpy()[rounds.row], kind="stable")
    served = [ctx for ctx in item.seen]
    assert rounds.n_rounds == len(served) == len(pushes)

    sim: list[ItemContext] = []
    users = user_index(ds, ds.pushes["user_id"])
    sent = ds.pushes["sent"].fillna(False).to_numpy(bool)
    for rows, rep in iter_replay(ds, spec, with_affinity=False, chunk_rows=1):
        for r in rows[sent[rows]]:
            sim.append(build_item_context(
                rep.state, users[[r]], rep.features[[r]], catalog.features.astype(np.float32),
                catalog.category, catalog.feature_names, candidates=None, with_features=True,
                extra={}))
    assert len(sim) == len(served)
    for i, j in enumerate(order):
        for a, b in ((served[i], sim[i]), (served[i], rounds.context)):
            k = j if b is rounds.context else 0
            assert a.shared_names == b.shared_names
            assert a.candidate_feature_names == b.candidate_feature_names
            np.testing.assert_array_equal(a.shared[0], b.shared[k])
            np.testing.assert_array_equal(a.candidate_features[0], b.candidate_features[k])
            np.testing.assert_array_equal(np.asarray(a.candidates)[0],
                                          np.asarray(b.candidates)[k])
