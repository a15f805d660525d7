"""The simulator's context twins stay field-compatible with pushrl.policies.base."""

from __future__ import annotations

import dataclasses

import pytest

from pushrl.sim import contexts


@pytest.mark.parametrize("name", ["TimingContext", "ItemContext", "BatchDecision"])
def test_same_fields_as_policy_contexts(name: str) -> None:
    base = pytest.importorskip("pushrl.policies.base")
    ours = [f.name for f in dataclasses.fields(getattr(contexts, name))]
    theirs = [f.name for f in dataclasses.fields(getattr(base, name))]
    assert ours == theirs
