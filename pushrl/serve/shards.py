"""Sharded serving: which shard owns a user, a decision, and a sharded state directory.

``pushrl serve --shards N`` (:mod:`pushrl.serve.supervisor`, :mod:`pushrl.serve.router`)
runs N ordinary servers, shard ``k`` with its own state ``STATE/shard-k`` (durable log,
feature state, guardrail counters of the users it owns). A user belongs to shard
``floor(N * key_uniform(user_id))``: the ONE blake2b user hash of :mod:`pushrl.data.split`
under its own salt, so stable across processes, machines and restarts, and independent of the
training split and of live holdouts. A decision id starts with ``s{k}.`` (the shard that
made it), so feedback is routed without a lookup.

``STATE/shards.json`` records the layout (number of shards, the decision seed every shard
uses): the same state directory is refused with another ``--shards`` (users would move to a
shard that does not hold their history; resharding is not supported).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pushrl.data.split import key_uniform
from pushrl.errors import PushrlError

#: Salt of the shard hash (another salt than the training split's and the holdouts').
SHARD_SALT = "pushrl-shard:"
LAYOUT_FILE = "shards.json"
FORMAT = "pushrl/shards/v1"


def shard_prefix(k: int) -> str:
    """The start of shard ``k``'s decision ids (``s1.``): what routes feedback to it."""
    return f"s{k}."


def shard_of(user_id: str, n: int) -> int:
    """The shard (0..n-1) that owns ``user_id``."""
    if n <= 1:
        return 0
    return min(n - 1, int(key_uniform([user_id], SHARD_SALT)[0] * n))


def shards_of(user_ids: list[str], n: int) -> np.ndarray:
    """:func:`shard_of` of many users, int64 ``(len(user_ids),)``."""
    if n <= 1:
        return np.zeros(len(user_ids), np.int64)
    return np.minimum(n - 1, (key_uniform(user_ids, SHARD_SALT) * n).astype(np.int64))


def shard_of_decision(decision_id: str, n: int) -> int | None:
    """The shard a decision id names (``s{k}.``...), None when it names none of ``n``."""
    if not decision_id.startswith("s"):
        return None
    head, dot, _ = decision_id[1:].partition(".")
    if not dot or not head.isdigit():
        return None
    k = int(head)
    return k if k < n else None


@dataclass(frozen=True)
class Layout:
    """A sharded state directory's ``shards.json``.

    Attributes:
        shards: Number of shards.
        seed: Decision seed of every shard (keyed draws: the same decisions as one process).
        format: File format tag.
    """

    shards: int
    seed: int
    format: str = FORMAT

    def shard_dir(self, state: Path, k: int) -> Path:
        """Shard ``k``'s state directory."""
        return Path(state) / f"shard-{k}"


def read_layout(state: str | Path) -> Layout | None:
    """The layout of ``state`` (None: not a sharded state directory)."""
    p = Path(state) / LAYOUT_FILE
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text())
        return Layout(int(d["shards"]), int(d["seed"]), str(d.get("format", FORMAT)))
    except (ValueError, KeyError, TypeError) as exc:
        raise PushrlError(f"{p} is not a shard layout ({exc}); it is written by `pushrl serve "
                          "--shards N`") from None


def init_layout(state: str | Path, shards: int, seed: int | None) -> Layout:
    """Create or check the layout of ``state`` for ``--shards shards`` (``seed``: ``--seed``;
    None keeps the stored one, or draws one on the first start).

    Raises:
        PushrlError: another number of shards, another seed, or a state directory of a
            plain server.
    """
    state = Path(state)
    if shards < 1:
        raise PushrlError(f"--shards must be at least 1, got {shards}; leave it out for one "
                          "plain server")
    got = read_layout(state)
    if got is not None:
        if got.shards != shards:
            raise PushrlError(f"{state} holds {got.shards} shards, not {shards}: users are "
                              "hashed to shards, so their state would not be where they are "
                              f"routed; pass --shards {got.shards} (resharding is not "
                              "supported: export the log and import it into a new state)")
        if seed is not None and seed != got.seed:
            raise PushrlError(f"--seed {seed} differs from the seed {got.seed} {state} was "
                              f"started with; pass --seed {got.seed} or leave it out")
        return got
    if (state / "log.sqlite3").exists():
        raise PushrlError(f"{state} holds a plain server's log; sharded serving needs its "
                          "own state directory (pass another --state)")
    import secrets

    lay = Layout(shards, secrets.randbits(63) if seed is None else int(seed))
    state.mkdir(parents=True, exist_ok=True)
    (state / LAYOUT_FILE).write_text(json.dumps(asdict(lay), sort_keys=True))
    return lay


def check_owner(user_id: str, shard: tuple[int, int] | None) -> str | None:
    """Why shard ``shard = (k, n)`` must refuse ``user_id`` (None: it owns the user, or the
    server is not a shard)."""
    if shard is None:
        return None
    k, n = shard
    owner = shard_of(user_id, n)
    if owner == k:
        return None
    return (f"user {user_id!r} belongs to shard {owner} of {n}, not to this shard {k}; "
            "send requests to the router (`pushrl serve --shards`), not to a shard")
