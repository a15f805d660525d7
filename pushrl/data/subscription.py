"""Who is still subscribed at the end of a log: the one definition, for the server's history
import (:mod:`pushrl.serve.history`, which blocks them) and the simulator's warm start
(:class:`pushrl.sim.population.Population`, which starts them unsubscribed)."""

from __future__ import annotations

import numpy as np

from pushrl.data.features import user_index
from pushrl.data.io import Dataset


def unsubscribed_users(ds: Dataset) -> np.ndarray:
    """Indices into ``ds.users`` of the users with an ``unsubscribed`` outcome in the log.

    A user who unsubscribed anywhere in the log is unsubscribed at its end (the contract has
    no resubscribe event; a ``PUT /v1/users`` with ``subscribed`` is the server's way back).

    Returns:
        Sorted unique user indices, int64, shape ``(m,)`` (empty without the column).
    """
    p = ds.pushes
    if "unsubscribed" not in p.columns or not len(p):
        return np.zeros(0, np.int64)
    unsub = p["unsubscribed"].fillna(False).to_numpy(bool)
    idx = user_index(ds, p.loc[unsub, "user_id"])
    return np.unique(idx[idx >= 0]).astype(np.int64)
