"""The registry's promotion pointer (``_active.json``): its names, its empty form, reading it.

The lowest piece of the promotion state, shared by :mod:`pushrl.serve.registry_ops` (which
writes it) and :mod:`pushrl.serve.policyset` (which loads what it names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pushrl.errors import ArtifactError

ACTIVE = "_active.json"
AUDIT = "_audit.jsonl"
KINDS = ("timing", "item", "delay")
#: What runs when nothing is promoted (registry baseline names). ``delay`` (the trigger
#: delay slot, #16): a server runs its own ``--trigger-delay-policy`` (default fixed 1 h).
DEFAULTS = {"timing": "most-active-hour", "item": "most-popular", "delay": "delay-fixed-1h"}
#: Slots without a shadow (none since the delay shadow: a shadow delay policy decides every
#: new trigger beside the active one and its arm is logged in ``trigger_shadow``).
NO_SHADOW: tuple[str, ...] = ()


def empty_pointer() -> dict[str, Any]:
    return {"format": "pushrl/active/v1", "generation": 0,
            **{k: {"active": None, "shadow": None, "history": []} for k in KINDS}}


def read_active(registry: str | Path) -> dict[str, Any]:
    """The active pointer (an empty one when nothing was ever promoted)."""
    p = Path(registry) / ACTIVE
    if not p.exists():
        return empty_pointer()
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{p} is not valid JSON ({exc}); restore it from the audit log "
                            f"{AUDIT} or delete it to fall back to the default baselines") from None
    for k in KINDS:
        data.setdefault(k, {"active": None, "shadow": None, "history": []})
    return data


def slot_of(card: dict[str, Any]) -> str | None:
    """The pointer slot an artifact's model card fills: ``delay`` for a trigger-delay policy
    (a VW item-style policy whose card has ``trigger_policy``), else the card's ``kind``."""
    return "delay" if "trigger_policy" in card else card.get("kind")


def split_ref(ref: str) -> tuple[str, str]:
    """``"name@v3" -> ("name", "v3")``."""
    name, _, version = ref.partition("@")
    return name, version
