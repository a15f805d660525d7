"""The server's channel slot: through which channel (push, email, in-app), or none, a push
the timing policy decided to send goes out (issue 17, item 4).

With ``pushrl serve --channels CONFIG`` (a TOML file with ``[channels.NAME]`` tables, the ONE
schema of :mod:`pushrl.rules.channels`; a scenario file works; ``default`` =
:data:`~pushrl.rules.channels.DEFAULT_CHANNELS`) every send of ``decide`` (single and batch)
passes through the channel slot after its item is chosen:

* **Mask** = :meth:`ChannelSet.verdict <pushrl.rules.channels.ChannelSet.verdict>`: each
  channel's own quiet hours and caps (its :class:`~pushrl.rules.guardrails.Guardrails` on its
  own sends, counted by a :class:`~pushrl.serve.guardrails.SendHistory` per channel: the same
  day count and weekly window as the server's global guardrails) and the user's opt-in
  (``PUT /v1/users`` ``channels``; users never set are opted into every channel, as the
  contract's null ``users.channels``). The server's global guardrails still bound all
  channels together (they decide before the timing policy).
* **Policy**: ``--channel-policy DIR`` (a ``pushrl channels train`` artifact,
  :class:`~pushrl.policies.channel_policy.ChannelPolicy`), else
  :class:`~pushrl.policies.channel_policy.UniformChannel` (the exploring logger: uniform over
  the allowed channels), on the context of
  :meth:`ChannelArms.context <pushrl.policies.channel_policy.ChannelArms.context>` (pipeline
  features, the chosen item, hours since the user last got a message on each channel:
  :class:`~pushrl.data.features.TemplateRecency`, what ``channel_rounds`` replays offline).
  Draws are the engine's keyed draws (stream ``channel``), so a sharded server decides alike.
* **none**: the answer is ``send=false`` with reason ``channel:none`` and no item; its
  ``decisions`` row keeps the item, ``pscore``/``pscore_send`` of the timing x item decision
  and ``pscore_channel`` = P(none), channel NULL: the contract's logged "none" (as the
  synthetic world logs a channel chooser's none).
* **Log**: ``channel`` and ``pscore_channel`` per decided send (``UPDATE decisions``;
  columns added by the store), so ``pushrl logs export`` writes the contract's ``channel`` /
  ``pscore_channel`` columns and ``users.channels`` (each user's first opt-in set by ``PUT``),
  and the next ``pushrl channels train`` / ``sim fit`` round learns from them.
* **Unsubscribe**: feedback ``unsubscribed=true`` on a push sent on channel ``c`` removes
  ``c`` from the user's opt-in only (the synthetic world's rule and
  :func:`~pushrl.policies.channel_policy.logged_opt_in`'s); the user stays reachable on the
  others. A push without channel (a trigger's) still unsubscribes the user from everything.

Journal: opt-in changes are op :data:`~pushrl.serve.store.OP_CHANNELS` (the list in ``tz``);
per-channel send counts and recency are rebuilt from the ``decisions`` rows on start and
recovery (:meth:`ServerChannels.rebuild`), like the template slot's recency.

``pushrl state import`` journals the log's ``users.channels`` the same way
(:func:`~pushrl.serve.history.opt_in_ops`). Not covered: trigger pushes get no channel (they
are push).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pushrl.data.features import TemplateRecency
from pushrl.errors import PushrlError
from pushrl.policies.base import ItemPolicy
from pushrl.policies.channel_policy import ChannelArms, ChannelPolicy, UniformChannel
from pushrl.rules.channels import DEFAULT_CHANNELS, ChannelSet, parse_opt_in
from pushrl.rules.guardrails import ALLOWED, REASONS
from pushrl.serve.guardrails import SendHistory
from pushrl.serve.state import ServerState
from pushrl.serve.store import OP_CHANNELS, OP_SQL, LogReads, Statement
from pushrl.serve.templates import policy_item_catalog
from pushrl.units import HOUR

if TYPE_CHECKING:
    from pushrl.serve.engine import DecideRow, Engine

log = logging.getLogger("pushrl.serve")
#: A decided send's channel and its probability (columns added by the store).
CHANNEL_SQL = "UPDATE decisions SET channel=?, pscore_channel=? WHERE decision_id=?"
#: The reason of a send the channel slot turned into "none".
NONE_REASON = "channel:none"


def load_channel_config(spec: str | Path) -> ChannelSet:
    """``--channels``: ``default`` (:data:`DEFAULT_CHANNELS`) or a TOML file whose
    ``[channels.NAME]`` tables define the channels (:meth:`ChannelSet.from_dict`; a scenario
    file works).

    Raises:
        PushrlError: a missing/unreadable file, no ``[channels]`` tables, or an invalid
            table (one line naming it).
    """
    if str(spec) == "default":
        return DEFAULT_CHANNELS
    path = Path(spec)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PushrlError(f"--channels {spec}: cannot read it ({exc}); pass `default` or a "
                          "TOML file with [channels.NAME] tables") from None
    if "channels" not in doc:
        raise PushrlError(f"--channels {spec}: no [channels.NAME] tables; add e.g. "
                          "[channels.push] cost = 0.01 (see pushrl.rules.channels)")
    try:
        return ChannelSet.from_dict(doc["channels"])
    except ValueError as exc:
        raise PushrlError(f"--channels {spec}: {exc}") from None


@dataclass
class ChannelChoice:
    """The channel slot's decisions of one pass.

    Attributes:
        rows: ``(k,)`` rows of the pass the slot decided (the timing policy's sends).
        arm: ``(k,)`` channel index (-1 = none).
        pscore: ``(k,)`` probability of the chosen arm (``pscore_channel``).
    """

    rows: np.ndarray
    arm: np.ndarray
    pscore: np.ndarray


class ServerChannels:
    """Channel choice for the sends of a server (module docstring).

    Args:
        channels: The server's channels (cost, quiet hours, caps per channel).
        policy: A :class:`ChannelPolicy` over ``none`` + ``channels`` (same names, same
            order) or :class:`UniformChannel`.
        label: The policy's ``name@version`` (``channel_policy`` in answers).
        state: The server state.

    Raises:
        PushrlError: a trained policy's channels differ from ``channels``.
    """

    def __init__(self, channels: ChannelSet, policy: ItemPolicy, label: str,
                 state: ServerState) -> None:
        if isinstance(policy, ChannelPolicy) and policy.channels.names != channels.names:
            raise PushrlError(f"channel policy {label} was trained for channels "
                              f"{list(policy.channels.names)}, the server has "
                              f"{list(channels.names)}; pass the same [channels] tables "
                              "(same names, same order) or retrain")
        self.channels = channels
        self.policy = policy
        self.label = label
        self.names = channels.names
        n = len(state.users)
        self.opt_in = np.ones((n, len(channels)), bool)
        self.sends = [SendHistory() for _ in channels.channels]
        self.recency = TemplateRecency(n, len(channels))
        self._bound: tuple[Any, ChannelArms] | None = None
        #: Verdict counts over all channels of decided sends (codes of ``REASONS``).
        self.blocked = np.zeros(len(REASONS), np.int64)

    @classmethod
    def load(cls, channels: ChannelSet, policy: str | None,
             state: ServerState) -> ServerChannels:
        """``--channels`` + ``--channel-policy`` (None: uniform over the allowed channels)."""
        if policy is None:
            return cls(channels, UniformChannel(), "uniform-channel@server", state)
        from pushrl.policies.registry import load_policy_of

        pol, path = load_policy_of(policy, "vw_channel",
                                   f"--channel-policy {policy}: not a channel policy (a "
                                   "`pushrl channels train` artifact)")
        assert isinstance(pol, ChannelPolicy)  # the vw_channel loader's type
        return cls(channels, pol, f"{path.parent.name}@{path.name}", state)

    # ------------------------------------------------------------------ state
    def _grow(self, n: int) -> None:
        k = self.opt_in.shape[0]
        if n > k:
            self.opt_in = np.concatenate([self.opt_in,
                                          np.ones((n - k, len(self.names)), bool)])
        if self.recency.last.shape[0] < n:
            self.recency.add_users(n - self.recency.last.shape[0])

    def arms(self, state: ServerState) -> ChannelArms:
        """The arms over the server's current items (a trained policy's item columns in its
        training order), rebuilt when the catalog changes."""
        b = self._bound
        if b is not None and b[0] is state.catalog:
            return b[1]
        cat = state.catalog
        if isinstance(self.policy, ChannelPolicy) and len(cat):
            cat = policy_item_catalog(cat, self.policy.vw.layout.shared_names,
                                      f"channel policy {self.label}", PushrlError)
        arms = ChannelArms(self.channels, state.spec, cat)
        self._bound = (state.catalog, arms)
        return arms

    def push_mask(self, users: np.ndarray) -> np.ndarray | None:
        """``(k,)`` bool: ``users`` (indices) opted into push now, or None when the server's
        channels have no ``push`` channel. Trigger sends are pushes: the tracker treats a
        user opted out of push like an unsubscribed one (:meth:`ServerTriggers.resolve
        <pushrl.serve.triggers.ServerTriggers.resolve>`)."""
        if "push" not in self.names:
            return None
        if users.size:
            self._grow(int(users.max()) + 1)
        return self.opt_in[users, list(self.names).index("push")]

    def opted_in(self, user: int) -> list[str]:
        """The channels user ``user`` (index) is opted into now."""
        self._grow(user + 1)
        return [n for n, m in zip(self.names, self.opt_in[user].tolist(), strict=True) if m]

    def set_opt_in(self, state: ServerState, user: int, names: Sequence[str],
                   bucket: int) -> list[Statement]:
        """``PUT /v1/users`` ``channels``: user ``user`` is opted into exactly ``names``.

        Raises:
            ValueError: a name that is not one of the server's channels.
        """
        bad = [c for c in names if c not in self.names]
        if bad:
            raise ValueError(f"unknown channel(s) {bad}; this server's channels: "
                             f"{list(self.names)}")
        return self._set(state, user, parse_opt_in(",".join(names), self.names), bucket, 1)

    def _set(self, state: ServerState, user: int, mask: np.ndarray, bucket: int,
             arg: int) -> list[Statement]:
        self._grow(user + 1)
        self.opt_in[user] = mask
        text = ",".join(n for n, m in zip(self.names, mask.tolist(), strict=True) if m)
        return [(OP_SQL, (state.next_seq(), OP_CHANNELS, int(user), int(bucket), arg, text))]

    def unsubscribe(self, state: ServerState, log_: LogReads, decision_id: str, user: int,
                    bucket: int) -> list[Statement] | None:
        """An unsubscribe reported on ``decision_id``: removes its channel from the user's
        opt-in (journaled); None when the decision has no channel (the caller unsubscribes
        the user from everything)."""
        row = log_.query("SELECT channel FROM decisions WHERE decision_id=?", (decision_id,))
        ch = row[0][0] if row else None
        if ch is None or ch not in self.names:
            return None
        self._grow(user + 1)
        mask = self.opt_in[user].copy()
        mask[self.names.index(ch)] = False
        return self._set(state, user, mask, bucket, 0)

    # ------------------------------------------------------------------ decisions
    def decide(self, engine: Engine, rows: list[DecideRow], u: np.ndarray, ts: np.ndarray,
               b: np.ndarray, raw: np.ndarray, send: np.ndarray,
               items: list[str | None]) -> ChannelChoice:
        """Choose the channel of each send of a pass (``send`` ``(n,)`` bool; ``items``: the
        chosen item ids) and count the channel sends (their caps, their recency).

        Returns:
            The choice; the rows whose arm is -1 must not be sent (the engine's step).
        """
        st = engine.state
        self._grow(len(st.users))
        idx = np.flatnonzero(send)
        uu, tt, bb = u[idx], ts[idx], b[idx]
        hour, _, day = st.fs.local_time_at(uu, tt)
        counts = [h.counts(uu, bb, day) for h in self.sends]
        today = np.stack([c[0] for c in counts], axis=1)
        week = np.stack([c[1] for c in counts], axis=1)
        code = self.channels.verdict(hour, today, week, self.opt_in[uu])
        self.blocked += np.bincount(code.ravel(), minlength=self.blocked.size)
        arms = self.arms(st)
        item_idx = np.array([st.items[str(items[i])] for i in idx.tolist()], np.int64)
        ctx = arms.context(raw[idx], item_idx, self.recency.hours(uu, bb), code == ALLOWED)
        d = self.policy.decide_batch(ctx, engine.draws("channel", [rows[i] for i in idx]))
        arm = np.asarray(d.action, np.int64) - 1
        go = arm >= 0
        self.recency.record(uu[go], bb[go], arm[go])
        for j in np.flatnonzero(go).tolist():
            self.sends[int(arm[j])].record(int(uu[j]), "", int(tt[j]), int(day[j]))
        return ChannelChoice(idx, arm, np.asarray(d.pscore, np.float64))

    def apply(self, out: list[dict[str, Any]], choice: ChannelChoice,
              p_item: np.ndarray) -> list[Statement]:
        """The answers (``out``, updated in place) and log rows of a pass's channel choice
        (``p_item`` ``(n,)``: the item-level probabilities of the pass)."""
        stmts: list[Statement] = []
        names = self.names
        for i, a, p in zip(choice.rows.tolist(), choice.arm.tolist(), choice.pscore.tolist(),
                           strict=True):
            o = out[i]
            ch = names[a] if a >= 0 else None
            o["channel"], o["pscore_channel"], o["channel_policy"] = ch, p, self.label
            o["pscore_channel_item"] = p * float(p_item[i])
            if ch is None:  # the response says "do not send": no item to send
                o["item_id"], o["item_policy"] = None, None
            stmts.append((CHANNEL_SQL, (ch, p, o["decision_id"])))
        return stmts

    # ------------------------------------------------------------------ restart
    def rebuild(self, state: ServerState, log_: LogReads) -> None:
        """Rebuild the opt-in (ops :data:`OP_CHANNELS`, in order), the per-channel send
        counts and the channel recency (the log's sent decisions with a channel, in order)."""
        n = len(state.users)
        self.opt_in = np.ones((n, len(self.names)), bool)
        self.recency = TemplateRecency(n, len(self.names))
        self.sends = [SendHistory() for _ in self.names]
        for uidx, text in log_.iter_rows(f"SELECT user_idx, tz FROM ops WHERE kind="
                                         f"{OP_CHANNELS} ORDER BY seq"):
            self._grow(int(uidx) + 1)
            self.opt_in[int(uidx)] = parse_opt_in(text or "", self.names)
        for uid, ts, ch in log_.iter_rows("SELECT user_id, ts, channel FROM decisions WHERE "
                                          "sent=1 AND channel IS NOT NULL ORDER BY seq"):
            if ch not in self.names or uid not in state.users:
                continue
            idx = state.users[uid]
            a = self.names.index(ch)
            self.sends[a].record(idx, state.timezone(idx), int(ts))
            self.recency.record(np.array([idx]), int(ts) // HOUR, np.array([a]))
