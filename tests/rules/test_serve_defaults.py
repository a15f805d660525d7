"""The server applies the active timing policy's guardrails unless the operator sets some,
and says so when they differ (the agent's observation is built from its own)."""

from __future__ import annotations

import logging

from pathlib import Path

import pytest

from pushrl.rules.guardrails import Guardrails
from pushrl.serve.guardrails import effective


class _Agent:
    name = "ppo"

    def __init__(self, g: Guardrails) -> None:
        self.guardrails = g


def test_policy_guardrails_are_the_default(caplog: pytest.LogCaptureFixture) -> None:
    trained = Guardrails(21, 9, 1, 3)
    with caplog.at_level(logging.WARNING, "pushrl.serve"):
        assert effective(None, _Agent(trained)) == trained
        assert effective(None, object()) == Guardrails()  # a baseline: the default scenario's
        assert effective(trained, _Agent(trained), "ppo@v2") == trained
    assert not caplog.records


def test_a_configured_mismatch_is_applied_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "pushrl.serve"):
        got = effective(Guardrails(22, 8, 2, 7), _Agent(Guardrails()), "ppo@v2")
    assert got == Guardrails(22, 8, 2, 7)
    assert "ppo@v2" in caplog.text and "2/day, 7/week" in caplog.text
    assert "2/day, 10/week" in caplog.text


def test_cli_serve_builds_guardrails_only_when_a_flag_is_given(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    import pushrl.serve.app as app_mod
    from pushrl.cli.serve import command
    from tests.serve.test_cli_serve import serve_args

    seen: list[object] = []
    monkeypatch.setattr(app_mod, "create_app", lambda cfg: seen.append(cfg.guardrails))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    monkeypatch.setattr("pushrl.serve.store.check_log", lambda *a, **k: None)
    command(**serve_args(state=tmp_path))  # type: ignore[arg-type]
    command(**serve_args(state=tmp_path, max_per_week=7))  # type: ignore[arg-type]
    assert seen == [None, Guardrails(22, 8, 2, 7)]
