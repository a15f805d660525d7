"""The message-volume term of the unsubscribe hazard, for off-policy unsubscribe estimates of
the channel slot (issue 17).

Per-round IPW of unsubscribes keeps each logged round's history: the user's messages of the
previous 7 days are the LOGGER's. But the hazard of a message grows with that volume (every
message raises the next one's unsubscribe logit), and a channel policy changes it: push-only
sends nothing to users without push or in push's quiet hours and over its caps, a policy that
picks ``none`` often sends less than the logger, one that uses every channel sends more. A
per-round estimate therefore over-states the unsubscribes of a policy that sends less than
the logger and under-states those of one that sends more.

:func:`fit_volume_hazard` is the volume slope ``beta`` of the channel slot's one unsubscribe
model (:func:`fit_unsub_model`: logistic regression of a delivered round's ``unsubscribed`` on
the logged 7-day volume and the channel, also the price's model in
:mod:`pushrl.ope.channel_price`), and
:func:`volume_ratio` turns a policy's expected 7-day volume at each round (the sum of its
probabilities of sending at the same user's rounds of the previous 168 hour buckets) into the
hazard ratio ``exp(beta * (V_policy - V_logged))`` that re-weights the round's unsubscribe
(rare events: the logistic ratio is the exponential one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


#: Inverse L2 strength of :func:`fit_unsub_model` (sklearn's ``C``: penalty ``0.5 |w|^2`` next
#: to ``C`` x the summed log-loss). Nearly unpenalised for the slope and the channels with
#: unsubscribes, but it keeps the optimum finite and unique when a channel has none in the log
#: (in-app on most worlds: quasi-separation, its maximum-likelihood logit is -inf; here it
#: ends near -15, an unsubscribe probability ~1e-7, and the slope is the MLE of the others).
UNSUB_FIT_C = 1e4


@dataclass(frozen=True)
class UnsubModel:
    """The unsubscribe model of delivered channel rounds (:func:`fit_unsub_model`).

    Attributes:
        beta: Logit per message of the user's previous 7 days.
        logit: ``(n_arms,)`` logit of each arm at zero volume (arm 0, none: -inf).
    """

    beta: float
    logit: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the arms' logits without ``none``)."""
        return {"volume_beta": self.beta, "channel_logit": self.logit[1:].tolist()}


def fit_unsub_model(rounds: ChannelRounds) -> UnsubModel:
    """Logistic regression of a delivered round's unsubscribe on the user's logged 7-day
    message volume and the channel (one logit per channel, no shared intercept; L2 with
    :data:`UNSUB_FIT_C`). The ONE unsubscribe fit of the channel slot: the price read off the
    log (:mod:`pushrl.ope.channel_price`) and the off-policy budget's volume slope
    (:func:`fit_volume_hazard`) both use it.

    Fitted to convergence by Newton's method (4 coefficients; the penalised log-likelihood
    is strictly convex, so the optimum is unique and the fit deterministic): lbfgs at its
    default tolerance stopped after ~20 iterations on these quasi-separated logs with the
    slope up to 0.04 (~25 %) away from the optimum, and two parametrisations disagreed by it.

    Raises:
        ValueError: the rounds have no ``bucket``, or no delivered round unsubscribed (or
            every one did).
    """
    vol, y, action = _delivered(rounds)
    if y.all() or not y.any():
        raise ValueError("the log's delivered channel rounds need both unsubscribes and "
                         "none to fit the unsubscribe model; use a log with unsubscribes "
                         "(or a fixed --unsub-multiple)")
    return _fit_unsub(vol, y, action, len(rounds.arms.ids))


def _delivered(rounds: ChannelRounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The delivered rounds' ``(logged 7-day volume, unsubscribed, channel arm)``, each
    ``(n_delivered,)``: the unsubscribe fit's data.

    Raises:
        ValueError: the rounds have no ``bucket``.
    """
    if rounds.bucket is None:
        raise ValueError("the channel rounds carry no `bucket`; build them with "
                         "channel_rounds")
    sent = rounds.action > 0
    vol = window_sums(rounds.user, rounds.bucket, sent.astype(float))[sent]
    return vol, rounds.unsubscribed[sent] > 0, rounds.action[sent]


def _fit_unsub(vol: np.ndarray, y: np.ndarray, action: np.ndarray, n_arms: int) -> UnsubModel:
    """:func:`fit_unsub_model` on :func:`_delivered`'s data (``y`` has both classes)."""
    from sklearn.linear_model import LogisticRegression

    onehot = np.eye(n_arms)[action][:, 1:]
    m = LogisticRegression(C=UNSUB_FIT_C, solver="newton-cholesky", tol=1e-10, max_iter=200,
                           fit_intercept=False).fit(np.column_stack([vol, onehot]), y)
    return UnsubModel(float(m.coef_[0, 0]), np.r_[-np.inf, m.coef_[0, 1:]])


def fit_volume_hazard(rounds: ChannelRounds) -> float:
    """The unsubscribe logit per message of the previous 7 days: the slope of
    :func:`fit_unsub_model`. 0.0 when the log has no unsubscribe (or only unsubscribes) or no
    volume variation.

    Raises:
        ValueError: the rounds have no ``bucket``.
    """
    vol, y, action = _delivered(rounds)
    if y.all() or not y.any() or np.ptp(vol) == 0:
        return 0.0
    return _fit_unsub(vol, y, action, len(rounds.arms.ids)).beta


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
