"""`pushrl serve` refuses unsafe or unsupported settings before starting anything."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pushrl.cli.serve import command
from pushrl.errors import PushrlError
from pushrl.serve.auth import AuthError, KeyChecker, load_keys, new_key
from pushrl.serve.config import is_loopback, state_dir


def serve_args(**kw: object) -> dict[str, object]:
    """Every `pushrl serve` option at its declared default (as typer would pass them), with
    ``kw`` on top: direct calls keep working as options are added."""
    args: dict[str, object] = {
        name: p.default.default if hasattr(p.default, "default") else p.default
        for name, p in inspect.signature(command).parameters.items()}
    args.update(kw)
    return args


def _serve(**kw: object) -> None:
    command(**serve_args(**{"quiet_hours": "22-8", "max_per_day": 2, "max_per_week": 7,
                            **kw}))  # type: ignore[arg-type]


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


def test_serve_wires_timeouts_limits_and_auth_flags(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    import uvicorn

    from pushrl.serve.timeouts import ReadTimeoutProtocol

    got: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: got.append(self.config))
    _serve(state=tmp_path, header_timeout=2.5, body_timeout=7.0, keep_alive=3,
           limit_concurrency=64, public_metrics=True)
    cfg = got[0]
    assert issubclass(cfg.http, ReadTimeoutProtocol)  # type: ignore[arg-type]
    assert (cfg.http.header_timeout, cfg.http.body_timeout) == (2.5, 7.0)  # type: ignore[union-attr]
    assert (cfg.timeout_keep_alive, cfg.limit_concurrency) == (3, 64)
    app_cfg = cfg.app.state.cfg  # type: ignore[union-attr]
    assert app_cfg.public_metrics and not app_cfg.public_docs
