"""Shared fixtures: small, deterministic datasets built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrl.data.synth import SynthConfig, synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-user, 10-day synthetic dataset (seed 7)."""
    d = tmp_path_factory.mktemp("tiny_synth")
    synthesize(d, SynthConfig(users=120, days=10, seed=7, items=40))
    return d
