"""Channel effects of the synthetic world (issue 17): the truth behind ``--channels``.

Each channel ``c`` (``WorldParams.channel_ids``) has, as ground truth:

* an opt-in share ``channel_optin[c]``: each user opts in at the start with that probability
  (an own random stream; a user with no channel is never reachable);
* an open-logit shift for light users ``channel_lift[c]`` and heavy users
  ``channel_lift_heavy[c]`` (sessions per day above the world's median), the
  segment-dependent channel preference;
* a fatigue multiplier ``channel_fatigue[c]`` on the world's fatigue terms (push fatigues,
  email and in-app less);
* an unsubscribe-logit shift ``channel_unsub[c]``; an unsubscribe on ``c`` removes the
  opt-in of ``c`` only (the user stays reachable on the other channels);
* ``channel_session_only[c]`` = 1: the message is seen only when the user has a session in
  the decision's hour (in-app); otherwise it is never opened (and cannot unsubscribe).

The synthetic logger, given a push its send logger sends, chooses none with probability
``channel_none`` (the row is logged unsent with that ``pscore_channel`` and no channel; its
``pscore_send`` / ``pscore`` include that factor) and otherwise a channel uniformly among the
user's opted-in channels (``pscore_channel`` = ``(1 - channel_none) / number of them``). A
:data:`ChannelChooser` replaces it (a policy under evaluation; arm -1 = send nothing; then
the rows keep the send logger's propensities).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pushrl.data.features import FeatureState, TemplateRecency

#: ``chooser(state, users, bucket, items, hours, opted_in) -> (arms, pscore)``: the channel of
#: each push the logger sends (``hours``: ``(n, n_channels)`` hours since the user last got a
#: message on each channel, :class:`~pushrl.data.features.TemplateRecency`; ``opted_in``:
#: ``(n, n_channels)`` current opt-in). Arm -1 = send nothing.
ChannelChooser = Callable[[FeatureState, np.ndarray, int, np.ndarray, np.ndarray, np.ndarray],
                          tuple[np.ndarray, np.ndarray]]

#: An open logit for a message that cannot be seen (in-app outside a session).
UNSEEN = -50.0


class ChannelTruth:
    """The channel part of :class:`~pushrl.data.synth.TrueWorld` (vectorised over pushes).

    Args:
        ids: Channel names (arm order).
        optin, lift, lift_heavy, fatigue, unsub, session_only: One entry per channel (module
            docstring).
        heavy: ``(n_users,)`` bool heavy-user segment.
    """

    def __init__(self, ids: Sequence[str], optin: Sequence[float], lift: Sequence[float],
                 lift_heavy: Sequence[float], fatigue: Sequence[float], unsub: Sequence[float],
                 session_only: Sequence[float], heavy: np.ndarray) -> None:
        k = len(ids)
        named = {"channel_optin": optin, "channel_lift": lift, "channel_lift_heavy": lift_heavy,
                 "channel_fatigue": fatigue, "channel_unsub": unsub,
                 "channel_session_only": session_only}
        bad = [n for n, v in named.items() if len(v) != k]
        if bad:
            raise ValueError(f"{', '.join(bad)} must have one entry per channel "
                             f"(channel_ids has {k})")
        self.ids = tuple(ids)
        self.optin = np.asarray(optin, float)
        self.lift = np.stack([np.asarray(lift, float), np.asarray(lift_heavy, float)])
        self.fatigue = np.asarray(fatigue, float)
        self.unsub = np.asarray(unsub, float)
        self.session_only = np.asarray(session_only, float) > 0
        self.heavy = np.asarray(heavy, bool)

    @property
    def n(self) -> int:
        """Number of channels."""
        return len(self.ids)

    def draw_opt_in(self, rng: np.random.Generator, n_users: int) -> np.ndarray:
        """bool ``(n_users, n_channels)``: who opted into each channel at the start."""
        return rng.random((n_users, self.n)) < self.optin[None, :]

    def open_shift(self, users: np.ndarray, arms: np.ndarray, in_session: np.ndarray,
                   world_fatigue: np.ndarray) -> np.ndarray:
        """Open-logit shift of sending on channel ``arms`` ``(k,)`` to ``users`` ``(k,)``:
        the segment lift, the fatigue multiplier applied to the world's fatigue term
        ``world_fatigue`` ``(k,)`` (the logit drop the world already applied), and
        :data:`UNSEEN` for a session-only channel outside a session."""
        a = np.asarray(arms, np.int64)
        shift = (self.lift[self.heavy[users].astype(np.int64), a]
                 + (1.0 - self.fatigue[a]) * world_fatigue)
        return np.where(self.session_only[a] & ~np.asarray(in_session, bool), UNSEEN, shift)

    def seen(self, arms: np.ndarray, in_session: np.ndarray) -> np.ndarray:
        """bool ``(k,)``: the message reaches the user (not session-only outside a session)."""
        a = np.asarray(arms, np.int64)
        return ~(self.session_only[a] & ~np.asarray(in_session, bool))

    def uniform(self, opted_in: np.ndarray, rng: np.random.Generator,
                none: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The synthetic logger: none (-1) with probability ``none``, else a uniform channel
        among each row's opted-in channels ``(k, n_channels)``; ``(arms, pscore)``. A row with
        no channel gets -1 with probability 1."""
        m = np.asarray(opted_in, bool)
        cnt = m.sum(axis=1)
        skip = rng.random(m.shape[0]) < none
        u = rng.random(m.shape[0])
        pick = np.minimum((u * cnt).astype(np.int64), np.maximum(cnt - 1, 0))
        cum = np.cumsum(m, axis=1) - 1
        arm = np.where((cnt > 0) & ~skip, np.argmax((cum == pick[:, None]) & m, axis=1), -1)
        p = np.where(cnt == 0, 1.0, np.where(skip, none, (1.0 - none) / np.maximum(cnt, 1)))
        return arm.astype(np.int64), p


class ChannelRun:
    """The channel slot of one :func:`~pushrl.data.synth.generate` run: opt-in state, the
    channel recency the chooser sees, the logger or chooser, and the response shifts.

    Args:
        truth: The world's channel truth.
        chooser: The policy under evaluation; None = the randomised logger.
        rng: The run's own channel stream (opt-in draws, the logger's channel draws).
        n_users: Users of the run.
        none: The logger's share of skipped sends (``WorldParams.channel_none``).
        fatigue_24h, fatigue_7d: The world's fatigue weights (channels scale them).
    """

    def __init__(self, truth: ChannelTruth, chooser: ChannelChooser | None,
                 rng: np.random.Generator, n_users: int, none: float, fatigue_24h: float,
                 fatigue_7d: float) -> None:
        self.truth, self.chooser, self.rng, self.none = truth, chooser, rng, none
        self.fatigue = (fatigue_24h, fatigue_7d)
        self.opt_in = truth.draw_opt_in(rng, n_users)
        self.recency = TemplateRecency(n_users, truth.n)

    @property
    def alive(self) -> np.ndarray:
        """bool ``(n_users,)``: opted into at least one channel."""
        return np.asarray(self.opt_in.any(axis=1))

    def opt_in_strings(self) -> list[str]:
        """The users table's ``channels`` column (opt-in at the start)."""
        return [",".join(c for c, m in zip(self.truth.ids, row, strict=True) if m)
                for row in self.opt_in]

    def choose(self, state: FeatureState, users: np.ndarray, bucket: int, items: np.ndarray,
               in_session: np.ndarray, sends_24h: np.ndarray, sends_7d: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Channel of each push the send logger sends: ``(arms, pscore_channel, open-logit
        shift, unsubscribe-logit shift)``, each ``(k,)``; arm -1 = none.

        Raises:
            ValueError: the chooser picked a channel the user is not opted into.
        """
        hours = self.recency.hours(users, bucket)
        if self.chooser is None:
            arm, p = self.truth.uniform(self.opt_in[users], self.rng, self.none)
        else:
            arm, p = self.chooser(state, users, bucket, items, hours, self.opt_in[users])
            arm = np.asarray(arm, np.int64)
            ok = arm >= 0
            if np.any(~self.opt_in[users[ok], arm[ok]]):
                raise ValueError("channel_chooser sent on a channel the user did not opt into")
        go = arm >= 0
        ca = np.maximum(arm, 0)
        fat = self.fatigue[0] * sends_24h + self.fatigue[1] * sends_7d
        shift = self.truth.open_shift(users, ca, in_session, fat)
        u_shift = np.where(self.truth.seen(ca, in_session), self.truth.unsub[ca], UNSEEN)
        self.recency.record(users[go], bucket, arm[go])
        return arm, np.asarray(p, float), shift, u_shift

    def propensities(self, sent: np.ndarray, pscore: np.ndarray,
                     pscore_send: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pscore, pscore_send)`` of the logged rows after the channel slot: the logger's
        none share joins the send decision (a chooser's rows keep the send logger's)."""
        if self.chooser is not None or self.none <= 0:
            return pscore, pscore_send
        ps = pscore_send * (1.0 - self.none)
        return np.where(sent, pscore * (1.0 - self.none), 1.0 - ps), ps

    def unsubscribe(self, users: np.ndarray, arms: np.ndarray) -> None:
        """An unsubscribe leaves that channel only."""
        self.opt_in[users, arms] = False
