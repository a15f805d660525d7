"""PPO's SB3 logger: CSV always, TensorBoard only when it is installed (not a dependency)."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from pushrl.train import ppo


@pytest.mark.parametrize(("installed", "formats"), [(False, ("csv",)),
                                                    (True, ("csv", "tensorboard"))])
def test_log_formats(installed: bool, formats: tuple[str, ...],
                     monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        (real("json") if installed else None) if name == "tensorboard" else real(name, *a)))
    ppo._log_formats.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=ppo.__name__):
            assert ppo._log_formats() == formats
            assert ppo._log_formats() == formats
        said = [r for r in caplog.records if "tensorboard is not installed" in r.getMessage()]
        assert len(said) == (0 if installed else 1)  # said once
    finally:
        ppo._log_formats.cache_clear()
