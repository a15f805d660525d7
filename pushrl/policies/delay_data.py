"""Trigger delay rounds from a pushlog v1.1 log: the one place that turns ``triggers`` rows
into bandit rounds (context, arm, reward, pscore) for training and OPE of delay policies.

* **Context**: :func:`~pushrl.sim.trigger_context.delay_context` at each trigger's
  ``event_ts``, point-in-time: the log is replayed through the one feature pipeline
  (:func:`~pushrl.data.features.iter_replay`) with one unsent decision row per trigger, so
  the user features and the hour-of-week profile are those before the event's bucket.
* **Action**: the logged arm (``delay_h``; null = drop), **pscore** the logged probability.
* **Reward**: ``converted - send_cost * sent - unsub_cost * unsubscribed``, where
  ``converted`` = a purchase of the trigger's item (any purchase for an item-less trigger)
  within ``horizon_h`` hours of ``event_ts`` in ``activity``, or the trigger's push row
  converted. It counts organic purchases too: within one context the organic part is the
  same for every arm, so the arm that maximises expected conversions maximises the
  *incremental* ones (the drop arm's value is the organic baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, ItemCatalog, iter_replay
from pushrl.data.io import Dataset, to_unix_seconds
from pushrl.data.item_context import ItemContext
from pushrl.errors import DataError
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.sim.trigger_context import common_arms, delay_context, item_columns
from pushrl.units import HOUR

#: Pseudo decision ids of the trigger rows in the replay (below every real id).
_PSEUDO = -(1 << 40)


@dataclass
class DelayRounds:
    """Logged delay decisions in OBP vocabulary.

    Attributes:
        context: ``n_rounds`` contexts over the arms.
        action: ``(n_rounds,)`` logged arm index.
        reward: ``(n_rounds,)`` reward (module docstring).
        pscore: ``(n_rounds,)`` logging probability of the logged arm.
        kind: ``(n_rounds,)`` trigger kind.
        user_id: ``(n_rounds,)`` user ids.
        trigger_id: ``(n_rounds,)`` trigger ids.
        converted, sent, unsubscribed: ``(n_rounds,)`` the reward's parts.
        arms: The arms (delay hours, None = drop).
        complete: ``(n_rounds,)`` the conversion window ends before the log's last event
            (False: the reward is censored, e.g. for OPE keep only complete rounds).
        push_converted: ``(n_rounds,)`` the trigger's push was sent and converted (the
            push-attributed part of ``converted``), or None.
        due: ``(n_rounds,)`` the logged arm's push came due before the trigger's expiry
            without a purchase cancelling it (:func:`due_sends`): ``sent``, plus the pushes
            held back for other reasons (caps past expiry, a later cart superseding a browse
            trigger, the log ending first); the conservative count of sends, or None.
        held_out: ``(n_rounds,)`` the user was held out of the trigger's kind by a live
            per-kind holdout (the log's ``triggers.holdout``: the logged arm was never
            applied), or None (no such column). Only with ``delay_rounds(...,
            keep_held_out=True)``; by default those rounds are left out.
        raw: ``(n_rounds, N_FEATURES)`` the users' raw pipeline features at each trigger's
            event (point in time, the context's input), or None.
    """

    context: ItemContext
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    kind: np.ndarray
    user_id: np.ndarray
    trigger_id: np.ndarray
    converted: np.ndarray
    sent: np.ndarray
    unsubscribed: np.ndarray
    arms: tuple[int | None, ...]
    complete: np.ndarray | None = None
    push_converted: np.ndarray | None = None
    due: np.ndarray | None = None
    held_out: np.ndarray | None = None
    raw: np.ndarray | None = None

    @property
    def n_rounds(self) -> int:
        return int(self.action.size)

    def with_costs(self, send_cost: float, unsub_cost: float) -> DelayRounds:
        """The same rounds with ``reward = converted - send_cost * sent - unsub_cost *
        unsubscribed`` (the module docstring's reward at other costs)."""
        reward = (self.converted.astype(float) - send_cost * self.sent
                  - unsub_cost * self.unsubscribed)
        return replace(self, reward=reward)

    def take(self, rows: np.ndarray) -> DelayRounds:
        """The rounds at ``rows``."""
        c = self.context
        ctx = ItemContext(c.shared[rows], c.candidates[rows], c.mask[rows],
                          c.candidate_features[rows], c.shared_names,
                          c.candidate_feature_names,
                          extra={k: v[rows] for k, v in c.extra.items()})
        return DelayRounds(ctx, self.action[rows], self.reward[rows], self.pscore[rows],
                           self.kind[rows], self.user_id[rows], self.trigger_id[rows],
                           self.converted[rows], self.sent[rows], self.unsubscribed[rows],
                           self.arms, None if self.complete is None else self.complete[rows],
                           None if self.push_converted is None else self.push_converted[rows],
                           None if self.due is None else self.due[rows],
                           None if self.held_out is None else self.held_out[rows],
                           None if self.raw is None else self.raw[rows])


def _converted(ds: Dataset, t: pd.DataFrame, t0: np.ndarray, horizon_h: int | np.ndarray
               ) -> np.ndarray:
    """Purchase of the trigger's item (any item without one) within the horizon (hours, one
    or ``(len(t),)``) of ``t0``."""
    act = ds.activity
    buy = act[act["event"].astype(str) == "purchase"]
    out = np.zeros(len(t), bool)
    if len(buy):
        b = pd.DataFrame({"user_id": buy["user_id"].astype(str).to_numpy(),
                          "item_id": buy["item_id"].astype(str).to_numpy(),
                          "ts": to_unix_seconds(buy["ts"])})
        q = pd.DataFrame({"row": np.arange(len(t)), "user_id": t["user_id"].astype(str),
                          "item_id": t["item_id"].astype(object).where(
                              t["item_id"].notna(), None), "t0": t0})
        for any_item in (False, True):
            sub = q[q["item_id"].isna() == any_item]
            keys = ["user_id"] if any_item else ["user_id", "item_id"]
            m = sub.merge(b, on=keys, how="inner")
            h = np.broadcast_to(np.asarray(horizon_h), (len(t),))[m["row"].to_numpy()]
            ok = (m["ts"] >= m["t0"]) & (m["ts"] <= m["t0"] + h * HOUR)
            out[m.loc[ok, "row"].to_numpy()] = True
    return out


def due_sends(ds: Dataset, config: TriggerConfig, action: np.ndarray,
              arms: tuple[int | None, ...], send_ts: np.ndarray,
              triggers: pd.DataFrame | None = None) -> np.ndarray:
    """``(n_triggers,)`` the logged arm's push of each ``ds.triggers`` row came due before
    the trigger's expiry with no purchase of its item (any item for an item-less trigger)
    between the event and its send time cancelling it; a sent push always counts.

    This counts the pushes a delay arm *asks* for: the ones caps held back past the expiry,
    a later cart superseded or the log's end left open count as sends. It is what the trigger
    world's truth calls a send (``send_d = S(t0, t_d)``) and at least the logged ``sent``.

    Args:
        ds: The log (``triggers``, ``activity``).
        config: The trigger rules (expiries).
        action: ``(n,)`` logged arm index into ``arms`` (None = drop: never due).
        arms: The arms.
        send_ts: ``(n, n_live)`` unix seconds each non-drop arm sends at (hour start, quiet
            hours skipped: the delay context's ``extra["send_ts"]``,
            :func:`~pushrl.sim.trigger_send.send_times`).
        triggers: The trigger rows ``action`` is of (default ``ds.triggers``; e.g. without
            the rows a live holdout kept back).
    """
    t = (ds.triggers if triggers is None else triggers).reset_index(drop=True)
    n = len(t)
    live = [j for j, a in enumerate(arms) if a is not None]
    col = np.full(len(arms), -1, np.int64)
    col[live] = np.arange(len(live))
    c = col[action]
    t0 = to_unix_seconds(t["event_ts"])
    tsend = np.where(c >= 0, send_ts[np.arange(n), np.maximum(c, 0)], t0)
    kind = t["kind"].astype(str)
    expiry = kind.map({k: config[k].expiry_h for k in kind.unique()}).to_numpy(np.int64)
    due = (c >= 0) & (tsend < t0 + expiry * HOUR)
    # a purchase strictly before the send (the window's end is inclusive: step back 1 s)
    bought = _converted(ds, t, t0, np.maximum(tsend - t0 - 1, 0) / HOUR)
    sent = (t["status"].astype(str) == "sent").to_numpy()
    return sent | (due & ~bought)


def delay_rounds(ds: Dataset, config: TriggerConfig, guardrails: Guardrails, *,
                 horizon_h: int = 168, send_cost: float = 0.0,
                 unsub_cost: float = 0.0, keep_held_out: bool = False,
                 due: bool = True) -> DelayRounds:
    """The delay rounds of ``ds`` (module docstring).

    ``due`` computes :attr:`DelayRounds.due` (:func:`due_sends`: one more purchase join over
    the log); only the send-cost search reads it (``train.delay.match_send_cost``), so OPE,
    ``compare --triggers`` and the uplift fit pass ``due=False`` (``DelayRounds.due`` None).

    A trigger whose user was held out of its kind by a live per-kind holdout (the log's
    ``triggers.holdout`` true: ``pushrl serve --trigger-holdout``) was never sent whatever
    its logged arm, so its reward is not that arm's: such rows are left out (training and
    OPE see only treated triggers) unless ``keep_held_out`` (then ``held_out`` marks them).

    Raises:
        DataError: the log has no ``triggers`` rows, or a logged arm is not an arm of
            ``config``.
    """
    t = ds.triggers.reset_index(drop=True)
    held_col = None
    if "holdout" in t and len(t):
        held_col = t["holdout"].astype("boolean").fillna(False).to_numpy(bool)
        if not keep_held_out and held_col.any():
            t, held_col = t[~held_col].reset_index(drop=True), None
    if not len(t):
        raise DataError("the log has no `triggers` rows (pushlog v1.1); delay policies learn "
                        "from trigger decisions: log them (pushrl logs export, or "
                        "`pushrl data synth --world triggers`)")
    arms = common_arms(config)
    delay = t["delay_h"].astype("Int64")
    idx = {a: j for j, a in enumerate(arms)}
    action = np.array([idx.get(None if pd.isna(d) else int(d), -1) for d in delay], np.int64)
    if (action < 0).any():
        bad = delay[action < 0].iloc[0]
        raise DataError(f"logged delay_h {bad} is not an arm of the trigger config {arms}; "
                        "pass the [triggers] the log was made with")
    t0 = to_unix_seconds(t["event_ts"])
    # one unsent pseudo decision per trigger: point-in-time features at the event's bucket
    pseudo = pd.DataFrame({"decision_id": _PSEUDO + np.arange(len(t)),
                           "user_id": t["user_id"].astype(str).to_numpy(),
                           "ts": t["event_ts"].to_numpy(), "sent": False, "item_id": None})
    pushes = ds.pushes.assign(user_id=ds.pushes["user_id"].astype(str),
                              item_id=ds.pushes["item_id"].astype(object))
    both = pd.concat([pushes, pseudo], ignore_index=True)
    aug = Dataset(ds.users, ds.items, ds.activity, both)
    spec = FeatureSpec.fit(ds)
    n_real = len(pushes)
    feats = np.zeros((len(t), 0))
    profiles = np.zeros((len(t), 168))
    res = None
    for rows, res in iter_replay(aug, spec, with_affinity=False, chunk_rows=1):
        mine = rows[rows >= n_real]
        if mine.size:
            profiles[mine - n_real] = res.state.hour_of_week_profile(res.user_index[mine])
    assert res is not None
    feats = res.features[n_real:]
    users = res.user_index[n_real:]
    catalog = ItemCatalog(ds.items, spec)
    item = t["item_id"].astype(object)
    known = item.notna().to_numpy()
    ii = np.full(len(t), -1, np.int64)
    ii[known] = catalog.indices(item[known].astype(str).tolist())
    item_cat, item_lpr = item_columns(ds.items, spec)
    cat = np.where(ii >= 0, item_cat[np.maximum(ii, 0)], -1)
    lpr = np.where(ii >= 0, item_lpr[np.maximum(ii, 0)], 0.0)
    ctx = delay_context(res.state, users, t0, t["kind"].astype(str).to_numpy(), cat, lpr, arms,
                        guardrails, features=feats, how_profile=profiles)
    push_of = ds.pushes.assign(did=ds.pushes["decision_id"].astype(str)).set_index("did")
    did = None
    if "decision_id" in t:  # integer ids (synthetic logs, floats with NaN) or the server's hex
        dcol = t["decision_id"]
        did = (dcol.astype("Int64") if pd.api.types.is_numeric_dtype(dcol) else dcol).astype(str)
    sent = (t["status"].astype(str) == "sent").to_numpy()
    p_conv = np.zeros(len(t), bool)
    p_unsub = np.zeros(len(t), bool)
    if did is not None and sent.any():
        rows = push_of.reindex(did[sent].to_numpy())
        p_conv[sent] = rows["converted"].fillna(False).to_numpy(bool)
        p_unsub[sent] = rows["unsubscribed"].fillna(False).to_numpy(bool)
    conv = _converted(ds, t, t0, horizon_h) | p_conv
    ends = [to_unix_seconds(df["ts"]).max() for df in (ds.activity, ds.pushes) if len(df)]
    complete = t0 + horizon_h * HOUR <= max(ends)
    reward = conv.astype(float) - send_cost * sent - unsub_cost * p_unsub
    return DelayRounds(ctx, action, reward, t["pscore"].to_numpy(float),
                       t["kind"].astype(str).to_numpy(), t["user_id"].astype(str).to_numpy(),
                       t["trigger_id"].astype(str).to_numpy(), conv, sent, p_unsub, arms,
                       complete, p_conv,
                       due_sends(ds, config, action, arms, ctx.extra["send_ts"], t)
                       if due else None,
                       held_col if keep_held_out else None, np.array(feats, copy=True))
