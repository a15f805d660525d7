"""The pushlog v1.1 data contract: table names, required columns and their dtypes.

Every stage of pushrl (simulator fitting, training, OPE, the server's export) reads and
writes data through this contract. The human-readable version is
``simulator_data/README.md``; keep the two in step and bump :data:`PUSHLOG_VERSION` when
the meaning of a column changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from pushrl.errors import DataError

PUSHLOG_VERSION = "pushlog/v1.1"
#: v1.1 is additive (optional tables ``item_updates`` and ``triggers``, optional columns
#: ``items.price``/``items.in_stock`` and ``pushes.trigger_id``); a v1 log is a valid v1.1
#: log with the same fingerprint (fingerprints keep this seed and hash the optional tables
#: only when they have rows).
FINGERPRINT_VERSION = "pushlog/v1"
#: Channels (issue 17) add two optional columns to v1.1, ``users.channels`` (opt-in at the
#: log's start) and ``pushes.pscore_channel``; ``pushes.channel`` names the channel of a sent
#: row. A log without them is read as before (push only; fingerprints unchanged).
CHANNEL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
#: Per-trigger-kind holdouts (issue 18) add two optional columns to v1.1's ``triggers``,
#: ``holdout`` and ``p_holdout`` (the user's arm for the row's kind and the kind's share, as
#: the server logs them); a log without them reads as before (no per-kind holdout), and its
#: fingerprint is unchanged.

TableName = Literal["users", "items", "activity", "pushes", "item_updates", "triggers"]
#: The core tables (every log has them; ``activity`` may be empty).
TABLES: tuple[TableName, ...] = ("users", "items", "activity", "pushes")
#: Optional v1.1 tables (behaviour triggers, issue #16): absent = none.
OPTIONAL_TABLES: tuple[TableName, ...] = ("item_updates", "triggers")
ALL_TABLES: tuple[TableName, ...] = (*TABLES, *OPTIONAL_TABLES)
#: Tables a dataset must have; ``activity`` may be absent (then it is empty).
REQUIRED_TABLES: tuple[TableName, ...] = ("users", "items", "pushes")

EVENTS: tuple[str, ...] = ("session", "view", "cart", "purchase")
OUTCOMES: tuple[str, ...] = ("opened", "clicked", "converted", "revenue", "unsubscribed")
BOOL_OUTCOMES: tuple[str, ...] = ("opened", "clicked", "converted", "unsubscribed")
#: Trigger kinds and statuses of the ``triggers`` table (the same names as
#: :class:`pushrl.rules.triggers.TriggerKind` / ``TriggerStatus``; parity is tested).
TRIGGER_KINDS: tuple[str, ...] = ("cart", "browse", "price_drop", "back_in_stock", "winback")
TRIGGER_STATUSES: tuple[str, ...] = ("open", "sent", "dropped", "cancelled", "expired")

Kind = Literal["id", "str", "ts", "bool", "float", "int", "list"]


@dataclass(frozen=True)
class Column:
    """One column of the contract.

    Attributes:
        name: Column name.
        kind: Logical dtype: ``id`` (opaque string or integer key), ``str``, ``ts``
            (timezone-aware UTC timestamp), ``bool``, ``float``, ``int`` or ``list``
            (list of item ids).
        required: Whether the column must be present.
        nullable: Whether missing values are allowed.
        doc: One-line meaning, rendered in the data README.
    """

    name: str
    kind: Kind
    required: bool
    nullable: bool
    doc: str


SCHEMA: dict[str, tuple[Column, ...]] = {
    "users": (
        Column("user_id", "id", True, False, "opaque user key, unique; never personal data"),
        Column("timezone", "str", False, True, "IANA time zone name, default UTC"),
        Column("channels", "str", False, True,
               "channels the user opted into at the log's start, comma-separated names such "
               "as `push,email,in_app` (issue 17); absent/null = every channel"),
    ),
    "items": (
        Column("item_id", "id", True, False, "item key, unique"),
        Column("price", "float", False, True, "initial price (v1.1), >= 0"),
        Column("in_stock", "bool", False, True, "initial stock state (v1.1)"),
    ),
    "activity": (
        Column("user_id", "id", True, False, "user key, must exist in users"),
        Column("ts", "ts", True, False, "UTC event time"),
        Column("event", "str", True, False, "one of session, view, cart, purchase"),
        Column("item_id", "id", False, True, "item key, must exist in items when present"),
        Column("revenue", "float", False, True, "revenue of the event, >= 0"),
    ),
    "pushes": (
        Column("decision_id", "id", True, False, "decision key, unique"),
        Column("user_id", "id", True, False, "user key, must exist in users"),
        Column("ts", "ts", True, False, "UTC decision time"),
        Column("sent", "bool", True, False, "whether a push was sent"),
        Column("item_id", "id", False, True, "pushed item; required when sent"),
        Column("pscore", "float", False, True,
               "joint logging probability of the logged action (not sent, or sent x item)"),
        Column("pscore_send", "float", False, True,
               "logging probability of sending at this opportunity"),
        Column("candidates", "list", False, True, "eligible item ids; absent = all items"),
        Column("position", "int", False, True, "slot index for multi-slot logs"),
        Column("opened", "bool", False, True, "opened within the attribution window"),
        Column("clicked", "bool", False, True, "clicked within the attribution window"),
        Column("converted", "bool", False, True, "converted within the attribution window"),
        Column("revenue", "float", False, True, "attributed revenue, >= 0"),
        Column("unsubscribed", "bool", False, True, "unsubscribed within the window"),
        Column("channel", "str", False, True, "optional delivery channel"),
        Column("template_id", "str", False, True, "optional message template"),
        Column("holdout", "bool", False, True,
               "live holdout arm: true = user held out of the campaign (never sent), false = "
               "treated; absent/null = no holdout"),
        Column("p_holdout", "float", False, True,
               "probability that the user is held out (the holdout's share)"),
        Column("pscore_template", "float", False, True,
               "logging probability of template_id given the sent item and context"),
        Column("trigger_id", "id", False, True,
               "the trigger this push delivered (v1.1), must exist in triggers"),
        Column("pscore_channel", "float", False, True,
               "logging probability of `channel` given the sent item and context (issue 17)"),
    ),
    "item_updates": (
        Column("item_id", "id", True, False, "item key, must exist in items"),
        Column("ts", "ts", True, False, "UTC time of the change"),
        Column("price", "float", False, True, "new price, >= 0; null = unchanged"),
        Column("in_stock", "bool", False, True, "new stock state; null = unchanged"),
    ),
    "triggers": (
        Column("trigger_id", "id", True, False, "trigger key, unique"),
        Column("user_id", "id", True, False, "user key, must exist in users"),
        Column("kind", "str", True, False,
               "cart, browse, price_drop, back_in_stock or winback"),
        Column("item_id", "id", False, True, "item key (null for winback)"),
        Column("event_ts", "ts", True, False, "UTC time the trigger came to exist"),
        Column("decided_ts", "ts", True, False, "UTC time the delay arm was chosen"),
        Column("delay_h", "int", False, True, "chosen delay in hours; null = drop"),
        Column("pscore", "float", True, False, "logging probability of the chosen arm"),
        Column("status", "str", True, False, "open, sent, dropped, cancelled or expired"),
        Column("decision_id", "id", False, True,
               "the pushes row it became (sent triggers), must exist in pushes"),
        Column("holdout", "bool", False, True,
               "per-kind live holdout arm of the user for this kind: true = held out (never "
               "sent this kind), false = treated; absent/null = the kind had no holdout"),
        Column("p_holdout", "float", False, True,
               "probability that the user is held out of this kind (the kind's share)"),
    ),
}

#: Prefix of context features logged at decision time.
CTX_PREFIX = "ctx_"
#: Prefix of per-candidate features (lists aligned with ``candidates``).
CAND_PREFIX = "cand_"


def columns(table: str) -> dict[str, Column]:
    """Return the contract columns of ``table`` keyed by name."""
    return {c.name: c for c in SCHEMA[table]}


# --- propensities -------------------------------------------------------------------------
# Three propensities, two of them logged:
#   joint ``pscore``  P(logged action | context): "not sent", or "sent with this item";
#   ``pscore_send``   P(send | context);
#   item level        P(item | sent, context) = pscore / pscore_send on a sent row.
# A stage that scores items (bandit training, item OPE) needs the item level; dividing the
# joint pscore out is the only way to get it, so a log without ``pscore_send`` must say
# how sends were decided: meta.json ``send_pscore`` (see :func:`declared_send_pscore`).

#: ``meta.json`` key declaring the logger's constant send probability for logs without a
#: ``pscore_send`` column (1.0 = every logged opportunity was sent for sure, e.g. OBD).
SEND_PSCORE_KEY = "send_pscore"

#: Which propensity each stage needs (rendered by the validator and the data README).
PROPENSITY_NEEDS: dict[str, str] = {
    "sim fit": "none",
    "timing OPE": "`pscore_send` on sent rows; `pscore_send` or `pscore` on unsent rows",
    "item OPE": "item level = `pscore / pscore_send` on sent rows",
    "bandit training": "item level = `pscore / pscore_send` on sent rows",
}

_NO_SEND = ("the logs have no `pscore_send` (the logging probability of sending), so the "
            "item-level propensity `pscore / pscore_send` is unknown; item-level OPE and bandit "
            "training need it: log `pscore_send`, or declare a logger that sent with a known "
            "constant probability P (1 when every logged opportunity was sent, as in OBD) with "
            "`pushrl data validate DIR --declare-send-pscore P` (meta.json `send_pscore`)")


def declared_send_pscore(meta: Mapping[str, Any] | None) -> float | None:
    """The send probability a dataset's ``meta.json`` declares (:data:`SEND_PSCORE_KEY`).

    Returns:
        The declared probability, or None when nothing is declared.

    Raises:
        DataError: the declared value is not a number in (0, 1].
    """
    v = None if meta is None else meta.get(SEND_PSCORE_KEY)
    if v is None:
        return None
    try:
        q = float(v)
    except (TypeError, ValueError):
        q = float("nan")
    if not (0.0 < q <= 1.0):
        raise DataError(f"meta.json `{SEND_PSCORE_KEY}` must be a number in (0, 1], got {v!r}")
    return q


def _rows(bad: np.ndarray) -> str:
    return f"{int(bad.sum())} of {bad.size} sent rows (first at row {int(np.argmax(bad))})"


def item_pscore(pushes: pd.DataFrame, *, send_pscore: float | None = None) -> np.ndarray:
    """Item-level logging probability ``pscore / pscore_send`` of sent rows, shape ``(n,)``.

    The one place any stage turns logged propensities into item propensities: a joint
    ``pscore`` is never used as an item propensity.

    Args:
        pushes: Sent rows of a pushes table (``pscore`` and, when logged, ``pscore_send``).
        send_pscore: The logger's declared constant send probability, used where
            ``pscore_send`` is absent or missing (see :func:`declared_send_pscore`).

    Raises:
        DataError: ``pscore`` is absent or missing; ``pscore_send`` is absent or missing and
            nothing is declared; a propensity is outside (0, 1]; or ``pscore > pscore_send``.
    """
    if "pscore" not in pushes.columns or not pushes["pscore"].notna().any():
        raise DataError("the logs have no `pscore` (logging probability of each sent push); "
                        "bandit training and OPE need it: log it, or use uniform-random logs")
    ps = pushes["pscore"].to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(ps)
    if bad.any():
        raise DataError(f"`pscore` is missing in {_rows(bad)}; log it for every sent push")
    send = (pushes["pscore_send"].to_numpy(np.float64, na_value=np.nan)
            if "pscore_send" in pushes.columns else np.full(len(ps), np.nan))
    if send_pscore is not None:
        send = np.where(np.isnan(send), float(send_pscore), send)
    missing = np.isnan(send)
    if missing.all():
        raise DataError(_NO_SEND)
    if missing.any():
        raise DataError(f"`pscore_send` is missing in {_rows(missing)}; log it for every sent "
                        "push (the item-level propensity is pscore / pscore_send)")
    bad = ~((send > 0) & (send <= 1))
    if bad.any():
        raise DataError(f"`pscore_send` must be in (0, 1], got {send[bad][0]:g} in {_rows(bad)}")
    out = ps / send
    bad = (ps <= 0) | (out > 1 + 1e-9)
    if bad.any():
        raise DataError(f"item-level `pscore` (pscore / pscore_send) must be in (0, 1], got "
                        f"min={out.min():.3g} max={out.max():.3g} in {_rows(bad)}")
    return np.minimum(out, 1.0)
