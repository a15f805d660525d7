"""The user split of one log (pushrl.data.split): deterministic, disjoint, covering, and the
lineage rule the gate's held-out check applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.split import MIN_PART_USERS, UserSplit, may_share_rows
from pushrl.data.synth import synthesize
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.errors import DataError


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("split") / "logs"
    synthesize(d, world_config("default", users=300, days=3, seed=3))
    return d


def test_parts_are_disjoint_cover_every_user_once_and_are_deterministic(logs: Path) -> None:
    full, rep = load_dataset(logs, quarantine=False)
    train, rep_t = load_dataset(logs, quarantine=False, split=UserSplit(0.2, 7, "train"))
    held, rep_h = load_dataset(logs, quarantine=False, split=UserSplit(0.2, 7, "heldout"))
    tu, hu = set(train.users["user_id"]), set(held.users["user_id"])
    assert not tu & hu and tu | hu == set(full.users["user_id"])
    assert len(tu) + len(hu) == len(full.users)
    for part, users in ((train, tu), (held, hu)):  # every row of a user stays with the user
        for t in ("pushes", "activity"):
            assert set(part.table(t)["user_id"]) <= users
    assert len(train.pushes) + len(held.pushes) == len(full.pushes)
    assert len(train.activity) + len(held.activity) == len(full.activity)
    # share held out: binomial(300, 0.2), within 4 standard errors
    assert abs(len(hu) - 60) < 4 * np.sqrt(300 * 0.2 * 0.8)
    assert train.split == {"by": "user", "part": "train", "holdout_frac": 0.2, "seed": 7,
                           "of": rep.fingerprint, "n_users": len(tu)}
    assert rep_t.fingerprint == train.fingerprint() != rep_h.fingerprint
    assert rep_h.summary["split"]["part"] == "heldout"
    again, _ = load_dataset(logs, quarantine=False, split=UserSplit(0.2, 7, "heldout"))
    assert set(again.users["user_id"]) == hu and again.fingerprint() == held.fingerprint()
    other = set(UserSplit(0.2, 8, "heldout").users(full))
    assert other != hu  # the seed chooses the split


def test_hash_does_not_depend_on_row_order() -> None:
    ids = np.array([f"u{i}" for i in range(500)], dtype=object)
    s = UserSplit(0.3, 1)
    m = s.held_out(ids)
    perm = np.random.default_rng(0).permutation(500)
    assert np.array_equal(s.held_out(ids[perm]), m[perm])


@pytest.mark.parametrize("frac", [0.0, -0.1, 0.51, 1.0])
def test_bad_fraction_is_one_line(frac: float) -> None:
    with pytest.raises(DataError, match=r"--holdout-frac must be in \(0, 0.5\]"):
        UserSplit(frac)


def test_too_few_users_in_a_part(logs: Path) -> None:
    full, _ = load_dataset(logs, quarantine=False)
    small = UserSplit(0.02, 0)  # ~6 of 300 held out
    with pytest.raises(DataError, match=f"each part needs >= {MIN_PART_USERS}"):
        small.apply(full)


_A = {"by": "user", "holdout_frac": 0.2, "seed": 0, "of": "WHOLE"}
TRAIN = {"fingerprint": "T", "split": {**_A, "part": "train"}}
HELD = {"fingerprint": "H", "split": {**_A, "part": "heldout"}}


@pytest.mark.parametrize(("seen", "evaluated", "shared"), [
    (TRAIN, HELD, False),                                     # the other part: held out
    (HELD, HELD, True),                                       # the same part
    (TRAIN, TRAIN, True),
    ({"fingerprint": "WHOLE"}, HELD, True),                   # trained on the whole log
    (TRAIN, {"fingerprint": "WHOLE"}, True),                  # evaluated on the whole log
    ({"fingerprint": "T2", "split": {**_A, "seed": 1, "part": "train"}}, HELD, True),
    ({"fingerprint": "T3", "split": {**_A, "holdout_frac": 0.3, "part": "train"}}, HELD, True),
    ({"fingerprint": "OTHER"}, HELD, False),                  # unrelated logs
    ({"fingerprint": "OTHER"}, {"fingerprint": "X"}, False),
])
def test_may_share_rows(seen: dict, evaluated: dict, shared: bool) -> None:
    assert may_share_rows(seen, evaluated) is shared


class _Digest:
    """A stand-in for the salted blake2b state whose digest is fixed."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def copy(self) -> _Digest:
        return self

    def update(self, data: bytes) -> None:
        pass

    def digest(self) -> bytes:
        return self._digest


@pytest.mark.parametrize("top", [2**64 - 1, 2**64 - 2**10, 2**64 - 2**10 - 1, 2**63, 0])
def test_key_uniforms_stay_below_one(top: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest that rounds up to 2**64 (1.0 as a double) is kept in [0, 1): a draw then
    never picks an action of probability 0; every other digest keeps its exact value."""
    import pushrl.data.split as split

    monkeypatch.setattr(split, "_salted", lambda salt: _Digest(top.to_bytes(8, "big")))
    (u,) = split.key_uniforms(["user-1"], "salt")
    assert 0.0 <= u < 1.0
    exact = top / 2.0**64
    assert u == (exact if exact < 1.0 else np.nextafter(1.0, 0.0))
    assert split.key_uniform(["user-1"], "salt")[0] == u
