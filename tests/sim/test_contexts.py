"""There is one definition of the decision contexts, shared by the simulator and policies."""

from __future__ import annotations

import pytest

from pushrl.policies import base
from pushrl.sim import contexts


@pytest.mark.parametrize("name", ["TimingContext", "ItemContext", "BatchDecision", "Decision"])
def test_policies_reexport_the_simulator_contexts(name: str) -> None:
    assert getattr(base, name) is getattr(contexts, name)
