"""benchmarks/generalization.py ships what an unforced loop ships; the report's gate-size
arithmetic (issue 13). benchmarks/ is not a package: the files are loaded by path."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load("generalization")
report = _load("generalization_report")


def _rec(selected: str | None, ppo_passed: bool, vw_passed: bool) -> dict[str, Any]:
    return {"select": {"artifact": selected},
            "gate_ppo": {"passed": ppo_passed, "failed_rules": [] if ppo_passed
                         else ["improvement_lower_bound"]},
            "gate_bandit": {"passed": vw_passed, "failed_rules": [] if vw_passed
                            else ["ess_floor"]}}


@pytest.mark.parametrize(("selected", "ppo_ok", "vw_ok", "timing", "item"), [
    ("ppo/v1", True, True, "ppo", "vw"),
    ("ppo/v1", False, True, "most-active-hour", "vw"),   # selection yes, gate no
    (None, True, True, "most-active-hour", "vw"),        # gate yes, selection no
    (None, True, False, "most-active-hour", "most-popular"),
])
def test_shipped_policies_needs_selection_and_gate(selected: str | None, ppo_ok: bool,
                                                   vw_ok: bool, timing: str,
                                                   item: str) -> None:
    got = gen.shipped_policies(_rec(selected, ppo_ok, vw_ok))
    assert (got["timing"], got["item"]) == (timing, item)
    if not vw_ok:
        assert "ess_floor" in got["item_why"]
    if selected and not ppo_ok:
        assert "improvement_lower_bound" in got["timing_why"]


def test_gate_need_scales_users_by_the_squared_z_ratio() -> None:
    z = report.Z_ONE_SIDED_95
    # effect 0.1, se 0.1 at 1000 held-out users: the lower bound clears 0 at se = 0.1 / z,
    # i.e. n = 1000 * z^2
    g = {"gate": {"comparison": {"difference": 0.1, "lower": 0.1 - z * 0.1,
                                 "upper": 0.1 + z * 0.1}},
         "data": {"split": {"n_users": 1000, "holdout_frac": 0.25}}}
    need = report.gate_need(g, z)
    assert need["se"] == pytest.approx(0.1)
    assert need["users_needed"] == pytest.approx(1000 * z ** 2)
    assert need["log_users_needed_at_frac"] == pytest.approx(4000 * z ** 2)
    g["gate"]["comparison"]["difference"] = -0.01
    assert math.isinf(report.gate_need(g, z)["users_needed"])
