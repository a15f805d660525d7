"""The server's template slot (issue 17): it chooses and renders a template for every sent
push as the offline policy would on the same state, logs it, exports it for the next round,
and refuses a catalog it could not render at load time (never at send)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.data.features import FeatureSpec, ItemCatalog, replay, template_recency_replay
from pushrl.data.features import user_index
from pushrl.data.io import to_unix_seconds, write_dataset
from pushrl.data.synth import generate
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import TEMPLATE_KNOBS, world_config
from pushrl.errors import TemplateError
from pushrl.policies.template_policy import TemplateArms, template_rounds, train_template_policy
from pushrl.policies.templates import load_catalog, save_catalog
from pushrl.policies.vw import VWConfig
from pushrl.serve.app import create_app
from pushrl.serve.export import export
from pushrl.units import HOUR
from tests.serve.conftest import CoinFlip, UniformItem, doubles, make_cfg

IDS = tuple(TEMPLATE_KNOBS["template_ids"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A synthetic template world's logs (also the server's --catalog) and a template policy
    trained on them."""
    tmp = tmp_path_factory.mktemp("tplworld")
    ds_raw, _, _ = generate(world_config("default", users=300, days=7, seed=3, templates=True))
    write_dataset(ds_raw, tmp / "logs")
    ds, _ = load_dataset(tmp / "logs", quarantine=False)
    rounds = template_rounds(ds, IDS, reward="clicked+0.01*revenue", catalog_ref="default@v1")
    pol = train_template_policy(rounds, VWConfig(learning_rate=0.05), new_min_shows=10)
    art = pol.save(tmp / "reg" / "tpl")
    return {"logs": tmp / "logs", "policy": art, "ds": ds}


def _client(tmp: Path, world: dict[str, Any], **kw: Any) -> TestClient:
    cfg = make_cfg(tmp, catalog=world["logs"], templates=Path("templates/default"),
                   template_policy=str(world["policy"]), **kw)
    c = TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.6), item=UniformItem())))
    c.__enter__()
    return c


def _traffic(c: TestClient, world: dict[str, Any], hours: int, seed: int,
             batch: bool = False, start_h: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    users = world["ds"].users["user_id"].astype(str).tolist()[:12]
    items = world["ds"].items["item_id"].astype(str).tolist()
    t0 = int(to_unix_seconds(world["ds"].pushes["ts"]).max()) + 3600
    for u in users:
        assert c.put(f"/v1/users/{u}", json={"timezone": "UTC", "ts": t0}).status_code == 200
    out = []
    for h in range(start_h, start_h + hours):
        t = t0 + h * 3600
        for u in users:
            if rng.random() < 0.4:
                c.post("/v1/events", json={"user_id": u, "ts": t, "event": "view",
                                           "item_id": items[int(rng.integers(len(items)))]})
        reqs = [{"user_id": u, "ts": t + 60} for u in users]
        if batch:
            r = c.post("/v1/decide/batch", json={"requests": reqs})
            assert r.status_code == 200, r.text
            out += r.json()["decisions"]
        else:
            for q in reqs:
                r = c.post("/v1/decide", json=q)
                assert r.status_code == 200, r.text
                out.append(r.json())
    return out


def test_served_template_equals_offline_policy_and_round_trips(
        tmp_path: Path, world: dict[str, Any]) -> None:
    c = _client(tmp_path, world)
    try:
        got = _traffic(c, world, 30, 0)
        got += _traffic(c, world, 6, 2, batch=True, start_h=31)
    finally:
        c.__exit__(None, None, None)
    sent = [d for d in got if d["send"]]
    assert len(sent) > 30
    cat = load_catalog("templates/default")
    for d in sent:
        assert d["template_id"] in IDS and 0 < d["pscore_template"] <= 1
        assert d["template_policy"] == f"tpl@{world['policy'].name}"
        assert d["template_text"] and len(d["template_text"]) <= cat.channels["push"]
    assert all(d.get("template_id") is None for d in got if not d["send"])
    assert len({d["template_id"] for d in sent}) >= 2

    # export: the next round trains on what the server did
    export(tmp_path / "state", tmp_path / "out")
    ds, _ = load_dataset(tmp_path / "out", quarantine=False)
    p = ds.pushes
    by_id = {d["decision_id"]: d for d in got}
    s = p[p["sent"]]
    assert s["template_id"].notna().all() and p.loc[~p["sent"], "template_id"].isna().all()
    for did, tid, ps in zip(s["decision_id"], s["template_id"], s["pscore_template"],
                            strict=True):
        if did in by_id:
            assert by_id[did]["template_id"] == tid
            assert by_id[did]["pscore_template"] == pytest.approx(ps, rel=1e-12)
    rounds = template_rounds(ds, IDS, reward="clicked")
    assert rounds.n_rounds == int(p["sent"].sum())

    # parity: the offline policy on the replayed state (features, recency, item) gives the
    # logged probability of the logged template (VW text vs the server's closed form)
    from pushrl.policies.registry import load_policy

    pol = load_policy(world["policy"])
    spec = FeatureSpec.from_dict(json.loads((tmp_path / "state" / "feature_spec.json")
                                            .read_text()))
    rep = replay(ds, spec, with_affinity=False)
    arm = np.array([IDS.index(t) if isinstance(t, str) else -1 for t in p["template_id"]])
    arm[~p["sent"].to_numpy(bool)] = -1
    hours = template_recency_replay(user_index(ds, p["user_id"]),
                                    to_unix_seconds(p["ts"]) // HOUR, arm, len(ds.users),
                                    len(IDS))
    rows = np.flatnonzero(arm >= 0)
    cat_items = ItemCatalog(ds.items, spec)
    arms = TemplateArms(IDS, spec, cat_items)
    items = cat_items.indices(p["item_id"].to_numpy()[rows])
    # the policy's item columns in its training order (the server sorts an item's features)
    order = [cat_items.feature_names.index(n[5:]) for n in pol.vw.layout.shared_names
             if n.startswith("item_")]
    cat_items.features = cat_items.features[:, order]
    cat_items.feature_names = tuple(cat_items.feature_names[j] for j in order)
    dist = pol.action_dist(arms.context(rep.features[rows], items, hours[rows]))
    logged = p["pscore_template"].to_numpy(float)[rows]
    np.testing.assert_allclose(dist[np.arange(rows.size), arm[rows]], logged, atol=2e-5)
    assert (hours[rows] < 24).any()  # the recency (fatigue) was live in these decisions


def test_restart_rebuilds_template_recency(tmp_path: Path, world: dict[str, Any]) -> None:
    c = _client(tmp_path, world)
    try:
        sent = [d for d in _traffic(c, world, 24, 0) if d["send"]]
        srv = c.app.state.server  # type: ignore[attr-defined]
        n, b = len(srv.state.users), srv.state.fs.clock(np.arange(len(srv.state.users))).max()
        before = srv.engine.templates.recency.hours(np.arange(n), b + 1)
    finally:
        c.__exit__(None, None, None)
    assert sent and (before < 24).sum() >= len({d["decision_id"] for d in sent[-5:]})
    c = _client(tmp_path, world)
    try:
        after = c.app.state.server.engine.templates.recency  # type: ignore[attr-defined]
        np.testing.assert_array_equal(after.hours(np.arange(n), b + 1), before)
    finally:
        c.__exit__(None, None, None)


def test_bad_catalog_is_refused_at_load(tmp_path: Path, world: dict[str, Any]) -> None:
    cat = load_catalog("templates/default")
    # a template that renders the item name twice: over the push limit for long names
    long = "{{ item_name }} {{ item_name }} {{ item_name }} {{ item_name }} {{ item_name }}"
    bad = [t if t.id != IDS[0] else type(t)(**{**t.__dict__, "text": long})
           for t in cat.templates]
    with pytest.raises(TemplateError, match="limit"):
        type(cat).from_dict({**cat.to_dict(), "templates": [t.__dict__ for t in bad]})
    # an arm of the policy that the catalog does not approve
    shutil.copytree(Path("templates/default"), tmp_path / "cat", dirs_exist_ok=True)
    save_catalog(cat.with_status(IDS[1], "rejected"), tmp_path / "cat")
    app = create_app(make_cfg(tmp_path, catalog=world["logs"], templates=tmp_path / "cat",
                              template_policy=str(world["policy"])), overrides=doubles())
    with pytest.raises(TemplateError, match="not approved"):
        TestClient(app).__enter__()


def test_item_the_templates_cannot_render_is_refused(tmp_path: Path,
                                                     world: dict[str, Any]) -> None:
    c = _client(tmp_path, world)
    try:
        limit = load_catalog("templates/default").slot_max_chars["item_name"]
        r = c.put("/v1/items/long", json={"category": "shoes", "features": {
            "name": "x" * (limit + 1), "price": 10.0, "quality": 0.0, "discount_pct": 10.0}})
        assert r.status_code == 422 and "item_name" in r.text, r.text
        r = c.put("/v1/items/noname", json={"category": "shoes", "features": {
            "price": 10.0, "quality": 0.0}})
        assert r.status_code == 422 and "noname" in r.text, r.text
        r = c.put("/v1/items/noquality", json={"category": "shoes", "features": {
            "name": "Shoe", "price": 10.0, "discount_pct": 10.0}})
        assert r.status_code == 422 and "quality" in r.text, r.text
        ok = c.put("/v1/items/fine", json={"category": "shoes", "features": {
            "name": "Fine shoe", "price": 10.0, "quality": 0.0, "discount_pct": 10.0}})
        assert ok.status_code == 200, ok.text
    finally:
        c.__exit__(None, None, None)


def test_uniform_default_logs_the_recommendation_arms(tmp_path: Path,
                                                      world: dict[str, Any]) -> None:
    """Without --template-policy: uniform over the approved recommendation templates of the
    catalog's first locale (the exploring logger of the first round)."""
    cfg = make_cfg(tmp_path, catalog=world["logs"], templates=Path("templates/default"))
    c = TestClient(create_app(cfg, overrides=doubles(timing=CoinFlip(0.6), item=UniformItem())))
    c.__enter__()
    try:
        sent = [d for d in _traffic(c, world, 20, 5) if d["send"]]
    finally:
        c.__exit__(None, None, None)
    assert sent
    assert {d["template_id"] for d in sent} <= set(IDS)
    assert all(d["pscore_template"] == pytest.approx(1 / len(IDS)) for d in sent)
    assert all(d["template_policy"].startswith("uniform-template@") for d in sent)


def test_one_decision_step_equals_the_vectorised_step(tmp_path: Path,
                                                      world: dict[str, Any]) -> None:
    """The request path's template step (plain floats, cached encodings and top categories)
    vs the vectorised step (numpy ``encode``, ``action_dist`` + ``sample``, ``affinity``) on
    the same live state and generator: the same arm, probability (==), copy and log update
    for every decision, and the same recency after, while users keep generating activity."""
    import dataclasses
    import datetime as dt

    from pushrl.serve.schemas import Event
    from pushrl.serve.server import Server
    from pushrl.serve.templates import ServerTemplates

    cfg = make_cfg(tmp_path, catalog=world["logs"], templates=Path("templates/default"),
                   template_policy=str(world["policy"]))
    srv = Server(cfg, overrides=doubles())
    try:
        st = srv.state
        fast = srv.engine.templates
        assert fast is not None and fast.linear is not None and not fast.linear.has_new
        t0 = int(to_unix_seconds(world["ds"].pushes["ts"]).max()) + HOUR
        for i in range(40):
            srv.put_user(f"p{i}", "UTC", {}, dt.datetime.fromtimestamp(t0, dt.UTC))
        vec = ServerTemplates(fast.catalog, fast.policy, fast.label, st, seed=0)
        vec.rng.bit_generator.state = fast.rng.bit_generator.state
        live, rend, bound, arms = vec._bound  # type: ignore[misc]
        assert bound is not None  # has_new: the one-row path declines, the vectorised decides
        vec._bound = (live, rend, dataclasses.replace(bound, has_new=True), arms)
        rng = np.random.default_rng(21)
        items = [it.item_id for it in st.item_list]
        b0 = t0 // HOUR + 1
        got = []
        for k in range(1200):
            b = b0 + k // 12
            user = f"p{int(rng.integers(40))}"
            if rng.random() < 0.3:
                srv.events([Event(user_id=user, ts=b * HOUR + 5, event="view",
                                  item_id=items[int(rng.integers(len(items)))])])
            u = np.array([st.users[user]])
            bb = np.array([b], np.int64)
            raw = st.fs.features(u, bb)
            item = items[int(rng.integers(len(items)))]
            o1 = [{"decision_id": f"d{k}", "item_id": item}]
            o2 = [{"decision_id": f"d{k}", "item_id": item}]
            s1 = fast.apply(st, o1, u, bb, raw, np.ones(1, bool))
            s2 = vec.apply(st, o2, u, bb, raw, np.ones(1, bool))
            assert o1 == o2 and s1 == s2
            got.append(o1[0]["template_text"])
        np.testing.assert_array_equal(fast.recency.last, vec.recency.last)
        np.testing.assert_array_equal(fast.recency.before, vec.recency.before)
        assert len(set(got)) > 50  # many arms x items x top categories
        assert fast._top_memo  # the cached top category was used
    finally:
        st.pending.clear()
        srv.log.close()
