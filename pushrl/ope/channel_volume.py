"""The message-volume term of the unsubscribe hazard, for off-policy unsubscribe estimates of
the channel slot (issue 17).

Per-round IPW of unsubscribes keeps each logged round's history: the user's messages of the
previous 7 days are the LOGGER's. But the hazard of a message grows with that volume (every
message raises the next one's unsubscribe logit), and a channel policy changes it: push-only
sends nothing to users without push or in push's quiet hours and over its caps, a policy that
picks ``none`` often sends less than the logger, one that uses every channel sends more. A
per-round estimate therefore over-states the unsubscribes of a policy that sends less than
the logger and under-states those of one that sends more.

:func:`fit_volume_hazard` fits the volume slope ``beta`` on the log (logistic regression of a
delivered round's ``unsubscribed`` on the logged 7-day volume and the channel), and
:func:`volume_ratio` turns a policy's expected 7-day volume at each round (the sum of its
probabilities of sending at the same user's rounds of the previous 168 hour buckets) into the
hazard ratio ``exp(beta * (V_policy - V_logged))`` that re-weights the round's unsubscribe
(rare events: the logistic ratio is the exponential one).
"""

from __future__ import annotations

import numpy as np

from pushrl.policies.channel_policy import ChannelRounds
from pushrl.rules.guardrails import WEEK_BUCKETS


def window_sums(user: np.ndarray, bucket: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per round, the sum of ``x`` over the same user's rounds in the ``WEEK_BUCKETS`` hour
    buckets before the round's (``[b - 168, b)``: the pipeline's ``sends_7d`` window).

    Args:
        user, bucket, x: ``(n,)`` user index, hour bucket and value of every round.

    Returns:
        ``(n,)`` float64 window sums.
    """
    u = np.asarray(user, np.int64)
    b = np.asarray(bucket, np.int64)
    span = int(b.max() - b.min()) + WEEK_BUCKETS + 2 if b.size else 1
    base = b.min() - WEEK_BUCKETS - 1 if b.size else 0
    key = u * span + (b - base)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    cs = np.concatenate([[0.0], np.cumsum(np.asarray(x, np.float64)[order])])
    lo = np.searchsorted(ks, key - WEEK_BUCKETS, "left")
    hi = np.searchsorted(ks, key, "left")
    return cs[hi] - cs[lo]


def fit_volume_hazard(rounds: ChannelRounds) -> float:
    """The unsubscribe logit per message of the previous 7 days, fitted on the delivered
    rounds (logistic regression with the channel as a factor, intercept; a nearly
    unpenalised fit). 0.0 when the log has no unsubscribe or no volume variation.

    Raises:
        ValueError: the rounds have no ``bucket``.
    """
    if rounds.bucket is None:
        raise ValueError("the channel rounds carry no `bucket`; build them with "
                         "channel_rounds")
    from sklearn.linear_model import LogisticRegression

    sent = rounds.action > 0
    vol = window_sums(rounds.user, rounds.bucket, sent.astype(float))[sent]
    y = rounds.unsubscribed[sent] > 0
    if y.all() or not y.any() or np.ptp(vol) == 0:
        return 0.0
    k = len(rounds.arms.ids)
    onehot = np.eye(k)[rounds.action[sent]][:, 2:]  # reference: the first channel
    x = np.column_stack([vol, onehot])
    m = LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    return float(m.coef_[0, 0])


def volume_ratio(rounds: ChannelRounds, dist: np.ndarray, beta: float) -> np.ndarray:
    """``(n_rounds,)`` hazard ratio of each round's unsubscribe under a policy with action
    distribution ``dist`` ``(n_rounds, n_arms)`` vs the logger: ``exp(beta * (V_policy -
    V_logged))``, V = the user's expected messages in the previous 168 hour buckets (only
    rounds of this log count: the channel slot's sends)."""
    if beta == 0.0:
        return np.ones(rounds.n_rounds)
    if rounds.bucket is None:
        raise ValueError("the channel rounds carry no `bucket`; build them with "
                         "channel_rounds")
    v_log = window_sums(rounds.user, rounds.bucket, (rounds.action > 0).astype(float))
    v_pol = window_sums(rounds.user, rounds.bucket, 1.0 - np.asarray(dist)[:, 0])
    return np.exp(beta * (v_pol - v_log))
