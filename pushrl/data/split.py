"""A deterministic split of one log into a training part and a held-out evaluation part.

A new team has one log. The deployment gate refuses a candidate evaluated on the logs it was
trained on (rule ``held_out_data``, :func:`pushrl.ope.evaluate.evaluate_policy`: in-sample
estimates are optimistic), so ``pushrl init`` splits the log and every stage loads its part
through :func:`pushrl.data.validate.load_dataset` (``split=``): training and the simulator
fit read the ``train`` part, ``pushrl evaluate`` (and so the gate and promotion) the
``heldout`` part. Nothing is copied: the part is a filter applied at load time.

**By user, not by time.** A user is held out with probability ``holdout_frac``, decided by a
seeded hash of ``user_id`` (stable across runs, machines and row order). Users rather than a
later period because:

* the held-out rounds then come from the same weeks, logging policy and catalog as training,
  so the gate measures generalisation to unseen users, not drift mixed with it;
* a user's features are replayed from that user's own history only
  (:mod:`pushrl.data.features`), so no held-out user's history reaches training through a
  feature; with a time split the same users are on both sides and their early behaviour
  (affinities, rhythms, fatigue) is learned and then scored on;
* whole users keep their trajectories whole: timing OPE bootstraps users, and the simulator's
  own validation is grouped by user.

Items are shared (the catalog is not a sample). The part's :class:`~pushrl.data.io.Dataset`
carries :meth:`UserSplit.record` in ``ds.split`` (which part, the split's parameters and the
fingerprint of the whole log it came from), so :func:`may_share_rows` can tell that a policy
trained on the whole log, or on the other split of it, has seen the evaluated users.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.fingerprint import is_legacy
from pushrl.data.io import Dataset
from pushrl.errors import DataError

PARTS = ("train", "heldout")
#: Fewest users either part may have: below it the user bootstrap of timing OPE and the
#: gate's intervals have too little to resample.
MIN_PART_USERS = 20


def user_uniform(user_ids: np.ndarray | pd.Series | list[str], salt: str) -> np.ndarray:
    """The ONE seeded user hash: ``blake2b(salt + str(user_id))`` as a uniform number in
    [0, 1), float64 ``(n,)``.

    Stable across runs, machines and row order; another ``salt``, another independent draw.
    Used by the training/evaluation split (:class:`UserSplit`, salt ``pushrl-split:SEED:``)
    and by the server's live holdouts (:class:`pushrl.rules.holdout.Holdout`).
    """
    ids = pd.Series(np.asarray(user_ids, dtype=object)).astype(str)
    uniq = pd.unique(ids)
    return pd.Series(key_uniform(uniq, salt), index=uniq).reindex(ids).to_numpy(
        dtype=np.float64)


def key_uniform(keys: Iterable[str], salt: str) -> np.ndarray:
    """The hash behind :func:`user_uniform`, per key without de-duplication (no pandas: the
    server calls it per decision): ``blake2b(salt + key)`` as float64 ``(n,)`` in [0, 1)
    (:func:`key_uniforms` as an array).

    Also the server's shard of a user (:func:`pushrl.serve.shards.shard_of`) and its keyed
    decision draws (:class:`pushrl.serve.engine.KeyedDraws`)."""
    return np.array(key_uniforms(keys, salt), dtype=np.float64)


def key_uniforms(keys: Iterable[str], salt: str) -> list[float]:
    """:func:`key_uniform` as Python floats (the server's few-rows decision pass)."""
    base = _salted(salt)
    out = []
    for s in keys:
        # blake2b(salt + key) as a copy of the salt's state fed the key (the same digest;
        # ~4x cheaper than a new hash object per key)
        h = base.copy()
        h.update(s.encode())
        # (the int -> double conversion is correctly rounded in Python as in numpy, and the
        # division by 2**64 exact: the same doubles as dividing the array, one numpy call
        # less). A digest within 2**10 of 2**64 rounds up to 1.0 (probability 2**-54 a key):
        # it is kept in [0, 1) as the largest double below 1, so a draw never picks an
        # action of probability 0 and a shard index never reaches the shard count
        u = int.from_bytes(h.digest(), "big") / 2.0**64
        out.append(u if u < 1.0 else _BELOW_ONE)
    return out


#: The largest double below 1 (``1 - 2**-53``): :func:`key_uniforms`' largest value.
_BELOW_ONE = 1.0 - 2.0**-53


@functools.lru_cache(maxsize=256)
def _salted(salt: str) -> Any:
    """The 8-byte blake2b state after ``salt`` (:func:`key_uniforms` copies it per key)."""
    return hashlib.blake2b(salt.encode(), digest_size=8)


def check_holdout_frac(frac: float) -> float:
    """``frac`` if it is in (0, 0.5], else :class:`~pushrl.errors.DataError` (one line)."""
    if not (isinstance(frac, int | float) and 0 < frac <= 0.5):
        raise DataError(f"--holdout-frac must be in (0, 0.5], got {frac!r}; e.g. 0.2 holds "
                        "out a fifth of the users for evaluation")
    return float(frac)


@dataclass(frozen=True)
class UserSplit:
    """Which part of a log to load.

    Attributes:
        holdout_frac: Share of users held out for evaluation, in (0, 0.5].
        seed: Seed of the user hash (another seed, another split).
        part: ``"train"`` or ``"heldout"``.
    """

    holdout_frac: float = 0.2
    seed: int = 0
    part: str = "train"

    def __post_init__(self) -> None:
        check_holdout_frac(self.holdout_frac)
        if self.part not in PARTS:
            raise DataError(f"split part must be one of {PARTS}, got {self.part!r}")

    def with_part(self, part: str) -> UserSplit:
        """The same split, the other (or the same) part."""
        return dataclasses.replace(self, part=part)

    def held_out(self, user_ids: np.ndarray | pd.Series) -> np.ndarray:
        """True for the held-out users, shape ``(n,)``: ``blake2b(seed:user_id)`` as a
        uniform number in [0, 1) below ``holdout_frac``."""
        return user_uniform(user_ids, f"pushrl-split:{self.seed}:") < self.holdout_frac

    def users(self, ds: Dataset) -> np.ndarray:
        """Ids of this part's users in ``ds.users``, shape ``(n_part,)``."""
        ids = ds.users["user_id"].to_numpy(dtype=object)
        mask = self.held_out(ids)
        return ids[mask if self.part == "heldout" else ~mask]

    def record(self, of: str, n_users: int) -> dict[str, Any]:
        """What ``ds.split``, model cards and reports carry: the part, the split and ``of``,
        the fingerprint of the whole log."""
        return {"by": "user", "part": self.part, "holdout_frac": self.holdout_frac,
                "seed": self.seed, "of": of, "n_users": n_users}

    def apply(self, ds: Dataset, *, check_sizes: bool = True, of: str | None = None) -> Dataset:
        """This part of ``ds`` (users, their activity and pushes; every item).

        Args:
            ds: A whole log, or one user shard or user sample of a larger log.
            check_sizes: Refuse parts below :data:`MIN_PART_USERS` users (False for one
                shard of a larger log, whose parts are checked as a whole elsewhere).
            of: The whole log's fingerprint when ``ds`` is a shard or sample of it
                (default ``ds.fingerprint()``).

        Raises:
            DataError: the part would have fewer than :data:`MIN_PART_USERS` users.
        """
        if ds.split is not None:
            raise DataError(f"the dataset is already the {ds.split.get('part', ds.split['by'])}"
                            " part of a log")
        counts = {p: len(self.with_part(p).users(ds)) for p in PARTS}
        if check_sizes and min(counts.values()) < MIN_PART_USERS:
            raise DataError(
                f"--holdout-frac {self.holdout_frac:g} of {len(ds.users)} users leaves "
                f"{counts['train']} for training and {counts['heldout']} held out; each part "
                f"needs >= {MIN_PART_USERS}: raise --holdout-frac or bring more users")
        keep = set(self.users(ds))

        def part(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["user_id"].isin(keep).to_numpy()].reset_index(drop=True)

        out = Dataset(part(ds.users), ds.items, part(ds.activity), part(ds.pushes),
                      path=ds.path, meta=ds.meta, item_updates=ds.item_updates,
                      triggers=part(ds.triggers))
        out.split = self.record(of or ds.fingerprint(), len(out.users))
        return out


def has_legacy(lineage: Mapping[str, Any] | None) -> bool:
    """True when a lineage (``{"fingerprint", "split"}``) names a fingerprint of the format
    before fp2 (:func:`pushrl.data.fingerprint.is_legacy`), itself or as its split's ``of``."""
    if not isinstance(lineage, Mapping):
        return False
    sp = lineage.get("split") or {}
    return is_legacy(lineage.get("fingerprint")) or is_legacy(sp.get("of"))


def may_share_rows(seen: Mapping[str, Any], evaluated: Mapping[str, Any]) -> bool:
    """True unless two datasets are provably disjoint in users.

    Each argument is ``{"fingerprint": ..., "split": ds.split or None}`` (a model card's
    ``data``, an evaluation's ``data``). Disjoint only when both are the two different parts
    of the same split of the same log; the same data, a part and the log it came from, or
    parts of different splits of one log may share rows. Logs without any common lineage
    are treated as disjoint (as before: overlapping but different logs are not detected).

    A ``seen`` lineage of the legacy fingerprint format is compared with ``evaluated``'s
    ``legacy`` entry (``{"fingerprint", "of"}``, :func:`pushrl.data.validate.legacy_lineage`
    of a log loaded whole).

    Raises:
        DataError: ``seen`` is legacy and ``evaluated`` has no ``legacy`` entry.
    """
    if has_legacy(seen):
        old = evaluated.get("legacy")
        if not old:
            raise DataError(
                f"its data fingerprint {seen.get('fingerprint')} has the format before fp2 "
                "and the evaluated logs were not loaded whole, so the held-out rule cannot "
                "compare them; retrain or re-fit it with this pushrl")
        sb_old = evaluated.get("split")
        evaluated = {"fingerprint": old.get("fingerprint"),
                     "split": {**sb_old, "of": old.get("of")} if sb_old else None}
    fa, fb = seen.get("fingerprint"), evaluated.get("fingerprint")
    sa, sb = seen.get("split") or {}, evaluated.get("split") or {}
    if fa is not None and fa == fb:
        return True
    if (sa and sa.get("of") == fb) or (sb and sb.get("of") == fa):
        return True  # one is the whole log the other is a part of
    if sa and sb and sa.get("of") == sb.get("of"):
        same_split = all(sa.get(k) == sb.get(k) for k in ("by", "holdout_frac", "seed"))
        return not (same_split and sa.get("part") != sb.get("part"))
    return False
