"""`pushrl serve` refuses unsafe or unsupported settings before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrl.cli.serve import command
from pushrl.errors import PushrlError
from pushrl.serve.auth import AuthError, KeyChecker, load_keys, new_key
from pushrl.serve.config import is_loopback, state_dir


def _serve(**kw: object) -> None:
    args: dict[str, object] = {
        "registry": Path("policies"), "host": "127.0.0.1", "port": 0, "state": None,
        "workers": 1, "insecure": False, "api_keys": None, "catalog": None,
        "quiet_hours": "22-8", "max_per_day": 2, "max_per_week": 7, "attribution_hours": 72,
        "sync": "full", "seed": None, "log_level": "warning", "scenario": None}
    args.update(kw)
    command(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "match"), [
    ({"host": "0.0.0.0"}, "non-loopback"),
    ({"host": "10.1.2.3"}, "--api-keys"),
    ({"workers": 2}, "--workers must be 1"),
    ({"quiet_hours": "late"}, "--quiet-hours"),
])
def test_refuses(kw: dict[str, object], match: str) -> None:
    with pytest.raises(PushrlError, match=match):
        _serve(**kw)


def test_loopback_and_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    monkeypatch.setenv("PUSHRL_HOME", str(tmp_path))
    assert state_dir(None) == tmp_path and state_dir("x") == Path("x")
    monkeypatch.delenv("PUSHRL_HOME")
    assert state_dir(None) == Path(".pushrl")


def test_keys_hashed_and_checked(tmp_path: Path) -> None:
    f = tmp_path / "k.json"
    key = new_key(f, ["decide"], "svc")
    assert key not in f.read_text() and oct(f.stat().st_mode)[-3:] == "600"
    chk = KeyChecker(load_keys(f))
    assert chk.check(key, "decide").id == "svc"
    with pytest.raises(AuthError, match="lacks the `admin` scope") as e:
        chk.check(key, "admin")
    assert e.value.status == 403
    with pytest.raises(AuthError) as e:
        chk.check(key + "x", "decide")
    assert e.value.status == 401
    with pytest.raises(PushrlError, match="scopes"):
        new_key(f, ["root"])
