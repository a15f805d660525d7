"""Score policies THROUGH the real policy server, hour by hour, with a world's true response.

:func:`drive` starts ``pushrl serve`` as a real process on ``127.0.0.1`` (a free port, a fresh
``--state``), brings each user's history in (:func:`import_history`), then for every decision
hour of the evaluation:

1. asks ``POST /v1/decide/batch`` for every subscribed user (``ts`` = the hour);
2. applies the true response of the world to the served sends (the item the server chose):
   opens, clicks, conversions, revenue and unsubscribes, and posts them in one
   ``POST /v1/feedback/batch`` per hour (``ts`` = the decision's, so an open counts in the
   push's hour, exactly as the simulator records it; an unsubscribe makes the server's
   subscription guardrail block the user from then on);
3. posts the hour's organic activity (``POST /v1/events``, ``ts`` inside the hour): it happens
   before the next decision, which therefore sees it (point-in-time: a decision in hour ``b``
   sees events of hours ``< b``).

The true world is the one the batch rollout (:func:`pushrl.envs.rollout.rollout`) scores with
``truth = true``: the same :class:`~pushrl.sim.engine.PushSim` with the
:class:`~pushrl.sim.response.TruthResponse` (the synthetic world's
:class:`~pushrl.data.synth.TrueWorld` probabilities), the same users and episode keys
(:func:`~pushrl.envs.rollout.draw_users`) and the same counter-based random numbers keyed by
(seed, user, hour). Two policies served with the same seed therefore face the same users and
the same random draws (common random numbers), and a served run is comparable, user by user,
with the batch rollout of the same policies: any systematic difference is a training/serving
skew (or a difference in what the server was told about the users' past).

Organic activity: the engine draws events with an item category (or none); they are posted as
``view`` events of an item of that category (``session`` when none). The feature pipeline
uses only an event's time and its item's category, so this is exactly what the simulator's
own state records.

History (:func:`import_history`): ``"none"`` (users start empty, as ``warm_start = none``),
``"warm"`` (each user's logged activity of the first :data:`~pushrl.sim.population.WARM_DAYS`
days, what the simulator's default ``week`` warm start seeds) or ``"log"`` (all logged
activity), posted over HTTP to a running server: logged *pushes* cannot be brought in that
way (a push exists in the server only as its own decision), so those users start with no
push history. ``"import"`` (the default, the product's path) runs ``pushrl state import DATA
--state DIR`` (:func:`import_state`) before the server starts, which brings the whole log
(activity, sent pushes and opens, unsubscribes) in: :func:`import_drawn` writes the log of
the DRAWN users (each simulator slot a copy of its logged user's rows under the slot's own
id, so a user drawn twice is two served users with the same past: the rollout draws with
replacement) and imports it; the server's feature priors and default most-popular are then
set to those of the whole log (what ``pushrl state import`` of the log itself writes), so a
duplicated user does not weigh twice in them. The simulator's closest warm start is ``full``
(lifetime counts, where the import replays the timed events, so the last days' windows
differ, and the server counts the log's last pushes in its guardrails' windows).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureState
from pushrl.data.io import to_unix_seconds
from pushrl.envs.rollout import METRICS, RolloutResult, draw_users, tally, user_ids
from pushrl.envs.scenario import Scenario, load_scenario
from pushrl.envs.world import make_world
from pushrl.errors import PushrlError
from pushrl.sim import rng as R
from pushrl.sim.contexts import BatchDecision
from pushrl.sim.engine import PushSim
from pushrl.sim.population import WARM_DAYS
from pushrl.units import DAY, HOUR

HISTORY_MODES = ("none", "warm", "log", "import")
#: Largest batch the server takes (``ServeConfig.max_batch`` for decisions, 10,000 events
#: or feedback reports).
DECIDE_BATCH, EVENT_BATCH, FEEDBACK_BATCH = 1000, 10_000, 10_000
#: Stream id of the driver's own draws (item of a category, second inside the hour).
_EVENT_STREAM = 101


# --------------------------------------------------------------------------- the server
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerHandle:
    """A running ``pushrl serve`` process and an HTTP client bound to it."""

    proc: subprocess.Popen[bytes]
    url: str
    client: Any
    state: Path
    log_path: Path
    seconds_to_ready: float

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """``POST`` JSON; the answer's JSON (:class:`PushrlError` with the body on a 4xx/5xx)."""
        return self._check(self.client.post(path, json=body), path)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        """``PUT`` JSON; the answer's JSON."""
        return self._check(self.client.put(path, json=body), path)

    def _check(self, r: Any, path: str) -> Any:
        if r.status_code >= 400:
            raise PushrlError(f"server answered {r.status_code} to {path}: {r.text[:500]}")
        return r.json()


@contextmanager
def serve(registry: str | Path, scenario: str | Path, *, seed: int, state: str | Path | None = None,
          extra_args: Sequence[str] = (), timeout: float = 300.0) -> Iterator[ServerHandle]:
    """Run ``pushrl serve`` (this Python, this checkout) on a free loopback port until exit.

    Args:
        registry: Policy registry (an empty directory serves the defaults).
        scenario: Scenario (guardrails, and its data as the catalog).
        seed: The server's decision RNG seed (``--seed``).
        state: State directory (default: a fresh temporary one, removed afterwards).
        extra_args: More ``pushrl serve`` options.
        timeout: Seconds to wait for ``/readyz``.
    """
    import httpx

    tmp = None if state is not None else tempfile.mkdtemp(prefix="pushrl-served-")
    st = Path(state) if state is not None else Path(str(tmp)) / "state"
    port = free_port()
    log_path = st.parent / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pushrl", "serve", "--registry", str(registry), "--state",
           str(st), "--scenario", str(scenario), "--port", str(port), "--seed", str(seed),
           "--sync", "normal", *extra_args]
    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=600.0)
    try:
        while True:
            if proc.poll() is not None:
                raise PushrlError(f"`pushrl serve` exited with {proc.returncode} before it was "
                                  f"ready: {log_path.read_text()[-2000:]}")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise PushrlError(f"`pushrl serve` not ready after {timeout:.0f} s; see "
                                  f"{log_path}")
            time.sleep(0.1)
        yield ServerHandle(proc, url, client, st, log_path, time.perf_counter() - t0)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the world
class _RecordingState(FeatureState):
    """The world's feature state, remembering the organic activity the engine records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def record_activity(self, users: np.ndarray, bucket: int | np.ndarray,
                        categories: np.ndarray | None = None,
                        count: np.ndarray | None = None) -> None:
        u = np.asarray(users, np.int64)
        b = np.broadcast_to(np.asarray(bucket, np.int64), u.shape)
        c = (np.full(u.shape, -1, np.int64) if categories is None
             else np.asarray(categories, np.int64))
        k = np.ones(u.shape, np.int64) if count is None else np.asarray(count, np.int64)
        self.recorded.append((np.repeat(u, k), np.repeat(b, k), np.repeat(c, k)))
        super().record_activity(users, bucket, categories, count)

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(slots, buckets, categories)`` recorded since the last call."""
        got = self.recorded
        self.recorded = []
        if not got:
            z = np.zeros(0, np.int64)
            return z, z, z
        return tuple(np.concatenate([g[i] for g in got]) for i in range(3))  # type: ignore


class _ServedItems:
    """Item policy of the world engine: the item the server chose for each slot."""

    uses_candidate_features = False

    def __init__(self, n: int) -> None:
        self.item = np.zeros(n, np.int64)
        self.pscore = np.ones(n)

    def decide_batch(self, ctx: Any, rng: np.random.Generator) -> BatchDecision:
        slots = np.asarray(ctx.extra["user_index"], np.int64)
        act = self.item[slots]
        dist = np.zeros(np.asarray(ctx.candidates).shape)
        dist[np.arange(slots.size), act] = 1.0
        return BatchDecision(act, self.pscore[slots], dist)


@dataclass
class ServedRun:
    """Result of :func:`drive`.

    Attributes:
        result: Per-user totals (a :class:`RolloutResult`, like the batch rollout's).
        decisions: ``(n_users, horizon)`` int8: 1 sent, 0 waited, -1 not asked (unsubscribed).
        items: ``(n_users, horizon)`` int64 catalog index of each delivered item (-1 none).
        user_ids: Ids the users had in the server.
        timing: Seconds per phase (``start``, ``history``, ``decide``, ``feedback``,
            ``events``).
        served_blocked: Sends the server made where the true world's guardrail mask forbade
            them (a guardrail skew if > 0; counted as ``guardrail_blocks``).
        requests: HTTP requests made per endpoint.
        p_send: ``(n_users, horizon)`` float: the server's send probability of each decision
            (the response's ``p_send``; NaN where not asked).
    """

    result: RolloutResult
    decisions: np.ndarray
    items: np.ndarray
    user_ids: list[str]
    timing: dict[str, float] = field(default_factory=dict)
    served_blocked: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    p_send: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def _iso(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(sec)))


def logged_activity(data: str | Path) -> pd.DataFrame:
    """The dataset's activity table with ``user_id``, ``sec`` (unix seconds), ``event``,
    ``item_id`` and ``revenue``."""
    from pushrl.data.io import read_tables

    act = read_tables(data)["activity"]
    out = pd.DataFrame({"user_id": act["user_id"].astype(str).to_numpy(),
                        "sec": to_unix_seconds(act["ts"]) if len(act) else np.zeros(0, np.int64),
                        "event": act["event"].astype(str).to_numpy(),
                        "item_id": [None if pd.isna(i) else str(i) for i in act["item_id"]],
                        "revenue": act["revenue"].to_numpy(float)})
    return out


def import_state(data: str | Path, state: str | Path) -> dict[str, Any]:
    """``pushrl state import DATA --state DIR`` as a user runs it (a fresh process); its
    JSON report.

    Raises:
        PushrlError: The import failed (its last output lines).
    """
    import json

    cmd = [sys.executable, "-m", "pushrl", "state", "import", str(data), "--state", str(state),
           "--sync", "normal", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        raise PushrlError(f"`pushrl state import` exited with {r.returncode}: "
                          f"{(r.stderr or r.stdout)[-2000:]}")
    return dict(json.loads(r.stdout))


def drawn_log(data: str | Path, logged_ids: Sequence[str], slot_ids: Sequence[str],
              out: str | Path) -> Path:
    """Write the pushlog v1 log of the drawn users to ``out``: slot ``i`` is a copy of the
    logged user ``logged_ids[i]`` (its users, pushes and activity rows) under the id
    ``slot_ids[i]``; decision ids get the suffix ``.i``; the items table and ``meta.json``
    are the log's.

    Raises:
        PushrlError: ``slot_ids`` not unique, or a logged id not in the log's users.
    """
    import json

    from pushrl.data.contract import TABLES
    from pushrl.data.io import read_meta, read_raw, write_table

    if len(set(slot_ids)) != len(slot_ids) or len(slot_ids) != len(logged_ids):
        raise PushrlError("drawn_log needs one unique slot id per drawn user")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    src = pd.DataFrame({"user_id": [str(u) for u in logged_ids],
                        "_slot": np.arange(len(slot_ids)),
                        "_sid": [str(u) for u in slot_ids]})
    for name in TABLES:
        raw = read_raw(data, name)
        if raw is None:
            continue
        if "user_id" not in raw.columns:  # items
            write_table(raw, d / f"{name}.parquet")
            continue
        raw = raw.assign(user_id=raw["user_id"].astype(str))
        if name == "users":
            missing = set(src["user_id"]) - set(raw["user_id"])
            if missing:
                raise PushrlError(f"drawn users not in {data}: {sorted(missing)[:5]}")
        # one copy of a logged user's rows per slot drawn from it, in slot order
        rows = src.merge(raw, on="user_id", how="inner", sort=False)
        rows = rows.sort_values("_slot", kind="stable")
        rows["user_id"] = rows["_sid"]
        if "decision_id" in rows.columns:
            rows["decision_id"] = (rows["decision_id"].astype(str) + "."
                                   + rows["_slot"].astype(str))
        write_table(rows[list(raw.columns)].reset_index(drop=True), d / f"{name}.parquet")
    (d / "meta.json").write_text(json.dumps(
        {**read_meta(data), "drawn_from": str(Path(data).resolve()),
         "drawn_users": len(slot_ids)}, indent=2, sort_keys=True, default=str))
    return d


def import_drawn(data: str | Path, logged_ids: Sequence[str], slot_ids: Sequence[str],
                 state: str | Path) -> dict[str, Any]:
    """``pushrl state import`` of the drawn users (:func:`drawn_log`) into the fresh
    ``state``; then the state's feature spec and default most-popular (its top-level
    ``*.json`` files) are replaced by those ``pushrl state import DATA`` writes for the whole
    log, so the copies change only who is served. Returns the import's JSON report (+
    ``drawn_log``).

    Raises:
        PushrlError: an import failed.
    """
    st = Path(state)
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-drawn-"))
    try:
        rep = import_state(drawn_log(data, logged_ids, slot_ids, tmp / "log"), st)
        import_state(data, tmp / "whole")  # the whole log's defaults, as a user imports it
        for f in (tmp / "whole").glob("*.json"):
            shutil.copyfile(f, st / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**rep, "drawn_log": {"users": len(slot_ids),
                                 "distinct_logged": len(set(logged_ids))}}


def _import_cached(data: str | Path, logged: list[str], uids: list[str], state: Path,
                   cache: str | Path | None) -> None:
    """:func:`import_drawn` into ``state``, or a copy of the same import kept in ``cache``
    (keyed by the log's path and the drawn users)."""
    if cache is None:
        import_drawn(data, logged, uids, state)
        return
    import hashlib
    import json

    key = hashlib.sha256(json.dumps([str(Path(data).resolve()), logged, uids]).encode()
                         ).hexdigest()[:16]
    kept = Path(cache) / key
    if not (kept / "done").is_file():
        shutil.rmtree(kept, ignore_errors=True)
        import_drawn(data, logged, uids, kept / "state")
        (kept / "done").write_text("")
    shutil.copytree(kept / "state", state)


def import_history(srv: ServerHandle, sc: Scenario, logged_ids: Sequence[str],
                   user_ids: Sequence[str], timezones: Sequence[str], mode: str) -> int:
    """Bring the users' past into the server: the ONE function to replace by
    ``pushrl state import DATA --state DIR`` (or ``serve --history DATA``) when it exists.

    Args:
        srv: The running server.
        sc: The scenario (its ``data`` holds the logs; decisions start at ``sc.start_bucket``).
        logged_ids: The logged user each served user is (a logged user may be drawn twice).
        user_ids: The served users' ids (unique).
        timezones: Their IANA zones.
        mode: ``"none"``, ``"warm"`` (logged activity of the log's first
            :data:`WARM_DAYS` days: the simulator's ``week`` warm start) or ``"log"`` (all of
            it). Logged pushes are not brought in (no endpoint takes them).

    Returns:
        Number of events posted.
    """
    if mode not in HISTORY_MODES:
        raise PushrlError(f"history must be one of {HISTORY_MODES}, got {mode!r}")
    if mode == "import":  # imported by `pushrl state import` before the server started
        return 0
    start = sc.start_bucket * HOUR
    events = pd.DataFrame()
    if mode != "none":
        act = logged_activity(sc.data)
        if mode == "warm":
            from pushrl.data.io import read_tables

            p0 = int(to_unix_seconds(read_tables(sc.data)["pushes"]["ts"]).min())
            cut = (p0 // HOUR) * HOUR + WARM_DAYS * DAY
            if cut > start - 7 * DAY:
                raise PushrlError(f"history='warm': the log's first {WARM_DAYS} days end less "
                                  "than 7 days before the evaluation starts, so they would "
                                  "fall in the 7-day feature windows the simulator's warm "
                                  "start leaves empty; use a longer log or history='log'")
            act = act[act["sec"] < cut]
        act = act[act["sec"] < start]
        first = dict(act.groupby("user_id", sort=False)["sec"].min())
        by_logged: dict[str, list[int]] = {}
        for i, lid in enumerate(logged_ids):
            by_logged.setdefault(str(lid), []).append(i)
        act = act[act["user_id"].isin(by_logged)]
        # one copy of a logged user's events per served user drawn from it
        reps = act["user_id"].map(lambda u: by_logged[u])
        events = act.assign(slot=reps).explode("slot")
        events["slot"] = events["slot"].astype(np.int64)
        events = events.sort_values(["sec", "slot"], kind="stable")
    else:
        first = {}
    for i, (uid, tz) in enumerate(zip(user_ids, timezones, strict=True)):
        t0 = min(int(first.get(str(logged_ids[i]), start)), start)
        srv.put(f"/v1/users/{uid}", {"timezone": str(tz), "ts": _iso((t0 // HOUR) * HOUR)})
    n = 0
    if len(events):
        uids = np.asarray(user_ids, dtype=object)[events["slot"].to_numpy()]
        secs = events["sec"].to_numpy()
        kinds = events["event"].to_numpy()
        items = events["item_id"].to_numpy()
        rev = events["revenue"].to_numpy()
        for a in range(0, len(events), EVENT_BATCH):
            batch = []
            for j in range(a, min(a + EVENT_BATCH, len(events))):
                e: dict[str, Any] = {"user_id": uids[j], "event": kinds[j], "ts": int(secs[j])}
                if isinstance(items[j], str):
                    e["item_id"] = items[j]
                if kinds[j] == "purchase" and np.isfinite(rev[j]):
                    e["revenue"] = float(rev[j])
                batch.append(e)
            srv.post("/v1/events", {"events": batch})
            n += len(batch)
    return n


def drive(registry: str | Path, scenario: str | Path, *, users: int, days: int | None = None,
          seed: int = 0, history: str = "import", label: str = "served",
          server_seed: int | None = None, state: str | Path | None = None,
          progress: Callable[[int, int], None] | None = None,
          serve_args: Sequence[str] = (), import_cache: str | Path | None = None,
          **overrides: Any) -> ServedRun:
    """Serve ``registry``'s policies through ``pushrl serve`` to ``users`` true-world users.

    Args:
        registry: Policy registry whose promoted policies serve (empty: the defaults,
            most-active-hour + most-popular of the scenario's data).
        scenario: The scenario (``pushrl init``'s); its data must carry ground truth.
        users: Users (drawn as the batch rollout draws them for ``seed``).
        days: Days (default: the scenario's horizon).
        seed: Seed of the users and their random numbers (common random numbers).
        history: What the server is told of the users' past (:func:`import_history`).
        label: Policy label of the result.
        server_seed: The server's decision RNG seed (default: ``seed``).
        state: Server state directory (default: a temporary one).
        progress: ``progress(hour, hours)``.
        serve_args: More ``pushrl serve`` options (e.g. ``--holdout 0.1``; the users' ids are
            :func:`pushrl.envs.rollout.user_ids`, so a holdout assigns them as the batch
            rollout's ``holdout=`` does).
        import_cache: ``history="import"``: a directory keeping the fresh imported state of
            these drawn users (same log, same seed and count): the first run imports into it,
            later runs copy it instead of importing again (e.g. several policy sets served
            to the same users).
        **overrides: Scenario overrides (``truth`` is always true), e.g. ``warm_start``.

    Returns:
        A :class:`ServedRun`; ``result.to_frame()`` pairs with the batch rollout's per-user
        frame of the same seed.
    """
    if users < 1:
        raise PushrlError(f"users must be >= 1, got {users}")
    if days is not None:
        overrides["horizon_days"] = int(days)
    sc = load_scenario(scenario, **{**overrides, "truth": True})
    world = make_world(sc)
    pop = world.model.population
    assert pop is not None
    items = _ServedItems(users)
    sim = PushSim(world.model, world.response, sc.sim_config(), users, items,
                  item_rng=np.random.default_rng([seed, 1]))
    sim.state = _RecordingState(world.model.spec, ["UTC"] * users, sc.sim_config().start_bucket)
    rows, keys = draw_users(seed, users, len(pop))
    sim.reset(np.arange(users), rows, keys)
    logged = [str(u) for u in np.asarray(pop.user_id)[rows]]
    uids = user_ids(np.asarray(pop.user_id), rows)
    tmp = None
    imported = 0.0
    if history == "import":
        if state is None:
            tmp = tempfile.mkdtemp(prefix="pushrl-served-")
            state = Path(tmp) / "state"
        t1 = time.perf_counter()
        _import_cached(sc.data, logged, uids, Path(state), import_cache)
        imported = time.perf_counter() - t1
    tzs = [str(t) for t in np.asarray(pop.timezone)[rows]]
    item_ids = [str(i) for i in world.model.item_ids]
    item_index = {i: j for j, i in enumerate(item_ids)}
    cat = world.model.item_category.astype(np.int64)
    by_cat = [np.flatnonzero(cat == c) for c in range(int(cat.max()) + 1)]
    acc = {m: np.zeros(users) for m in METRICS}
    by_hour = np.zeros((users, 24), np.int32)
    unsub_step = np.full(users, -1, np.int64)
    dec = np.full((users, sc.horizon), -1, np.int8)
    chosen = np.full((users, sc.horizon), -1, np.int64)
    p_send = np.full((users, sc.horizon), np.nan)
    timing = dict.fromkeys(("start", "history", "decide", "feedback", "events"), 0.0)
    nreq = dict.fromkeys(("decide", "feedback", "events"), 0)
    blocked_total = 0
    t0 = time.perf_counter()
    try:
        with serve(registry, scenario, seed=seed if server_seed is None else server_seed,
                   state=state, extra_args=serve_args) as srv:
            timing["start"] = srv.seconds_to_ready
            t1 = time.perf_counter()
            import_history(srv, sc, logged, uids, tzs, history)
            timing["history"] = (time.perf_counter() - t1 if history != "import"
                                 else imported)
            for step in range(sc.horizon):
                obs = sim.observe()
                ask = np.flatnonzero(sim.alive)
                send = np.zeros(users, bool)
                ids: dict[int, str] = {}
                t1 = time.perf_counter()
                ts = int(obs.bucket[0]) * HOUR
                for a in range(0, ask.size, DECIDE_BATCH):
                    part = ask[a:a + DECIDE_BATCH]
                    out = srv.post("/v1/decide/batch", {"requests": [
                        {"user_id": uids[s], "ts": ts} for s in part.tolist()]})["decisions"]
                    nreq["decide"] += 1
                    for s, d in zip(part.tolist(), out, strict=True):
                        ids[s] = d["decision_id"]
                        p_send[s, step] = d["p_send"]
                        if d["send"]:
                            send[s] = True
                            items.item[s] = item_index[d["item_id"]]
                            items.pscore[s] = d["pscore"] / d["p_send"]  # the item's own
                timing["decide"] += time.perf_counter() - t1
                dec[ask, step] = send[ask]
                hour = obs.raw[:, 0].astype(np.int64)
                res = sim.step(send)
                blocked_total += int(res.blocked.sum())
                r = res.reward(sc.reward)
                tally(acc, res, r)
                d = np.flatnonzero(res.delivered)
                np.add.at(by_hour, (d, hour[d]), 1)
                chosen[d, step] = res.item[d]
                unsub_step[res.unsubscribed] = step
                t1 = time.perf_counter()
                fbs: list[dict[str, Any]] = []
                for s in d.tolist():
                    fb: dict[str, Any] = {"decision_id": ids[s], "opened": bool(res.opened[s]),
                                          "clicked": bool(res.clicked[s]),
                                          "converted": bool(res.converted[s]),
                                          "unsubscribed": bool(res.unsubscribed[s]), "ts": ts}
                    if res.converted[s]:
                        fb["revenue"] = float(res.revenue[s])
                    fbs.append(fb)
                for a in range(0, len(fbs), FEEDBACK_BATCH):
                    srv.post("/v1/feedback/batch", {"feedback": fbs[a:a + FEEDBACK_BATCH]})
                    nreq["feedback"] += 1
                timing["feedback"] += time.perf_counter() - t1
                t1 = time.perf_counter()
                nreq["events"] += _post_activity(srv, sim, uids, item_ids, by_cat)
                timing["events"] += time.perf_counter() - t1
                if progress is not None:
                    progress(step + 1, sc.horizon)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = RolloutResult(sc, label, seed, sc.horizon_days, rows, acc["objective"],
                           acc["sends"].astype(np.int64), acc["opens"].astype(np.int64),
                           acc["clicks"].astype(np.int64), acc["conversions"].astype(np.int64),
                           acc["revenue"], acc["guardrail_blocks"].astype(np.int64),
                           unsub_step >= 0, unsub_step, by_hour, time.perf_counter() - t0)
    timing = {k: round(v, 2) for k, v in timing.items()}
    return ServedRun(result, dec, chosen, uids, timing, blocked_total, nreq, p_send)


def _post_activity(srv: ServerHandle, sim: PushSim, uids: Sequence[str],
                   item_ids: Sequence[str], by_cat: list[np.ndarray]) -> int:
    """Post the organic events the world drew in the step just taken; returns requests."""
    state = sim.state
    assert isinstance(state, _RecordingState)
    s, b, c = state.take()
    if not s.size:
        return 0
    # an item of the event's category and a second inside the hour: counter-based draws
    j = np.arange(s.size)
    h = R.step_hash(sim.key[s], b)
    u_item = R.uniform(h, _EVENT_STREAM, j)
    u_sec = R.uniform(h, _EVENT_STREAM + 1, j)
    secs = b * HOUR + (u_sec * HOUR).astype(np.int64)
    order = np.lexsort((s, secs))
    reqs, batch = 0, []
    for i in order.tolist():
        ci = int(c[i])
        e: dict[str, Any] = {"user_id": uids[int(s[i])], "ts": int(secs[i])}
        pool = by_cat[ci] if 0 <= ci < len(by_cat) else by_cat[0][:0]
        if not pool.size:
            e["event"] = "session"
        else:
            e["event"], e["item_id"] = "view", item_ids[int(pool[int(u_item[i] * pool.size)])]
        batch.append(e)
        if len(batch) == EVENT_BATCH:
            srv.post("/v1/events", {"events": batch})
            reqs, batch = reqs + 1, []
    if batch:
        srv.post("/v1/events", {"events": batch})
        reqs += 1
    return reqs


class _Recorder:
    """Wraps the timing and item policies of a batch rollout and records, per step, what
    was sent (where allowed), the timing policy's send probability and the item chosen."""

    def __init__(self, policy: Any, item: Any, n: int) -> None:
        self.policy, self.item_policy = policy, item
        self.name = getattr(policy, "name", type(policy).__name__)
        self.sent: list[np.ndarray] = []
        self.p_send: list[np.ndarray] = []
        self.items: list[np.ndarray] = []
        self.n = n
        self.uses_candidate_features = getattr(item, "uses_candidate_features", True)

    def decide_batch(self, ctx: Any, rng: np.random.Generator) -> Any:
        d = self.policy.decide_batch(ctx, rng)
        self.sent.append((np.asarray(d.action) == 1) & np.asarray(ctx.allowed, bool))
        self.p_send.append(np.asarray(d.action_dist, np.float64)[:, 1].copy())
        self.items.append(np.full(self.n, -1, np.int64))
        return d

    def item_decide(self, ctx: Any, rng: np.random.Generator) -> Any:
        d = self.item_policy.decide_batch(ctx, rng)
        slots = np.asarray(ctx.extra["user_index"], np.int64)
        cand = np.asarray(ctx.candidates)
        self.items[-1][slots] = cand[np.arange(slots.size), np.asarray(d.action)]
        return d


class _ItemView:
    """The item side of a :class:`_Recorder` (the engine calls ``decide_batch``)."""

    def __init__(self, rec: _Recorder) -> None:
        self.rec = rec
        self.uses_candidate_features = rec.uses_candidate_features

    def decide_batch(self, ctx: Any, rng: np.random.Generator) -> Any:
        return self.rec.item_decide(ctx, rng)


@dataclass
class BatchTwin:
    """The batch rollout of :func:`batch_twin`.

    Attributes:
        result: Per-user totals.
        sent: ``(n_users, horizon)`` bool, sent where allowed.
        p_send: ``(n_users, horizon)`` the timing policy's probability of sending.
        items: ``(n_users, horizon)`` catalog index of each delivered item (-1 none).
    """

    result: RolloutResult
    sent: np.ndarray
    p_send: np.ndarray
    items: np.ndarray


def batch_twin(timing: str, item: str | None, scenario: str | Path, *, users: int,
               days: int | None = None, seed: int = 0, **overrides: Any) -> BatchTwin:
    """The batch rollout of the same policies for the same users and random numbers as
    :func:`drive` with the same ``seed`` (``truth = true``).

    Args:
        timing: Timing policy spec (baseline name or artifact path, as ``pushrl compare``).
        item: Item policy spec (None: ``most-popular`` of the scenario's data, the server's
            default).
        scenario, users, days, seed, overrides: As :func:`drive`.
    """
    from pushrl.compare.runner import PolicySpec
    from pushrl.envs.rollout import rollout

    if days is not None:
        overrides["horizon_days"] = int(days)
    sc = load_scenario(scenario, **{**overrides, "truth": True})
    item_spec = item if item is not None else f"most-popular:data={Path(sc.data).resolve()}"
    rec = _Recorder(PolicySpec.parse(timing).load(), PolicySpec.parse(item_spec).load(), users)
    res = rollout(rec, sc, n_users=users, seed=seed, item_policy=_ItemView(rec),
                  policy_name=timing)
    return BatchTwin(res, np.stack(rec.sent, axis=1), np.stack(rec.p_send, axis=1),
                     np.stack(rec.items, axis=1))
