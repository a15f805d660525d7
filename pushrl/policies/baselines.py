"""Baseline policies by name (item and timing), and the registry loader ``baseline``.

Item baselines live in :mod:`pushrl.policies.item_baselines`, timing baselines and the oracle
in :mod:`pushrl.policies.timing_baselines`; each module exposes
``BASELINES: dict[str, Callable[..., Policy]]``. Their TOML definitions are in
``policies/baselines/`` (looked up in the current directory, the checkout, then the wheel's
copy: :mod:`pushrl.resources`).
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pushrl import resources
from pushrl.errors import ArtifactError
from pushrl.policies.base import Policy
from pushrl.policies.registry import register_loader

_MODULES = ("pushrl.policies.item_baselines", "pushrl.policies.timing_baselines",
            "pushrl.policies.delay_baselines")
#: Directory of the shipped baseline definitions (the checkout's, else the wheel's copy).
DEFINITIONS = resources.shipped_root() / "policies" / "baselines"


def registry() -> dict[str, Callable[..., Policy]]:
    """All baseline factories by name."""
    out: dict[str, Callable[..., Policy]] = {}
    for mod in _MODULES:  # by name: item_baselines calls back into make_baseline
        out.update(importlib.import_module(mod).BASELINES)
    return out


def definition(name: str) -> dict[str, Any]:
    """The TOML definition ``policies/baselines/<name>.toml`` (empty dict if none)."""
    p = resources.find(Path("policies") / "baselines" / f"{name}.toml")
    return tomllib.loads(p.read_text()) if p is not None else {}


def make_baseline(name: str, **kwargs: Any) -> Policy:
    """Build baseline ``name`` with its TOML defaults overridden by ``kwargs``."""
    reg = registry()
    if name not in reg:
        raise ArtifactError(f"unknown baseline {name!r}; known: {', '.join(sorted(reg))}")
    params = {k: v for k, v in definition(name).get("params", {}).items()}
    params.update(kwargs)
    return reg[name](**params)


@register_loader("baseline")
def _load(path: Path, card: dict[str, Any]) -> Policy:
    return make_baseline(card["baseline"], **card.get("params", {}))
