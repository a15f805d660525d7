"""The pushlog v1 data contract: table names, required columns and their dtypes.

Every stage of pushrl (simulator fitting, training, OPE, the server's export) reads and
writes data through this contract. The human-readable version is
``simulator_data/README.md``; keep the two in step and bump :data:`PUSHLOG_VERSION` when
the meaning of a column changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PUSHLOG_VERSION = "pushlog/v1"

TableName = Literal["users", "items", "activity", "pushes"]
TABLES: tuple[TableName, ...] = ("users", "items", "activity", "pushes")
#: Tables a dataset must have; ``activity`` may be absent (then it is empty).
REQUIRED_TABLES: tuple[TableName, ...] = ("users", "items", "pushes")

EVENTS: tuple[str, ...] = ("session", "view", "cart", "purchase")
OUTCOMES: tuple[str, ...] = ("opened", "clicked", "converted", "revenue", "unsubscribed")
BOOL_OUTCOMES: tuple[str, ...] = ("opened", "clicked", "converted", "unsubscribed")

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
    ),
    "items": (Column("item_id", "id", True, False, "item key, unique"),),
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
        Column("pscore", "float", False, True, "logging probability of the logged action"),
        Column("pscore_send", "float", False, True,
               "logging probability of sending at this opportunity (for item-level OPE)"),
        Column("candidates", "list", False, True, "eligible item ids; absent = all items"),
        Column("position", "int", False, True, "slot index for multi-slot logs"),
        Column("opened", "bool", False, True, "opened within the attribution window"),
        Column("clicked", "bool", False, True, "clicked within the attribution window"),
        Column("converted", "bool", False, True, "converted within the attribution window"),
        Column("revenue", "float", False, True, "attributed revenue, >= 0"),
        Column("unsubscribed", "bool", False, True, "unsubscribed within the window"),
        Column("channel", "str", False, True, "optional delivery channel"),
        Column("template_id", "str", False, True, "optional message template"),
    ),
}

#: Prefix of context features logged at decision time.
CTX_PREFIX = "ctx_"
#: Prefix of per-candidate features (lists aligned with ``candidates``).
CAND_PREFIX = "cand_"


def columns(table: str) -> dict[str, Column]:
    """Return the contract columns of ``table`` keyed by name."""
    return {c.name: c for c in SCHEMA[table]}


def required_columns(table: str) -> list[str]:
    """Return the names of the required columns of ``table``."""
    return [c.name for c in SCHEMA[table] if c.required]
