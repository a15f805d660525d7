"""Issue 20: a decide request's ``ts`` is parsed to whole unix seconds directly
(:data:`pushrl.serve.schemas.UnixSeconds`); it must accept, refuse and describe exactly what
:data:`~pushrl.serve.schemas.Timestamp` does, and give ``int(t.timestamp())`` of its datetime."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from pushrl.serve.schemas import DecideIn, Timestamp, UnixSeconds


class _Old(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    ts: Timestamp | None = None


class _New(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    ts: UnixSeconds | None = None


def _values(rng: random.Random) -> list[Any]:
    now = int(time.time())
    out: list[Any] = [None, True, False, "", "now", 0, -1, 946_684_799, 946_684_800,
                      4_102_444_799, 4_102_444_800, 2**70, 1.5, float(now), float("nan"),
                      [now], {"t": now}, "2026-03-02T09:00:00Z", "2026-03-02T09:00Z",
                      "2026-03-02T09:00:00.123456+05:45", "2026-02-30T09:00:00Z",
                      "2026-03-02T09:00:00+25:00", "2026-03-02 09:00:00Z",
                      "2099-12-31T23:59:59-01:00", "2000-01-01T00:00:00Z"]
    for _ in range(300):
        t = now + rng.randint(-4000, 800) * 86400 + rng.randint(0, 86399)
        frac = rng.choice(["", ".5", ".999999", ".000001"])
        off = rng.choice(["Z", "+00:00", "-07:00", "+05:45", "+14:00"])
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + frac + off
        out += [t, float(t), iso, str(t)]
    return out


@pytest.mark.parametrize("via_json", [True, False])
def test_unix_seconds_is_timestamp_as_int(via_json: bool) -> None:
    rng = random.Random(20)
    accepted = refused = 0
    for v in _values(rng):
        body = json.dumps({"ts": v})
        try:
            old = (_Old.model_validate_json(body) if via_json else _Old.model_validate({"ts": v}))
        except ValidationError as exc_old:
            with pytest.raises(ValidationError) as got:
                _New.model_validate_json(body) if via_json else _New.model_validate({"ts": v})
            assert (repr(got.value.errors(include_url=False, include_context=False))
                    == repr(exc_old.errors(include_url=False, include_context=False))), v
            refused += 1
            continue
        new = _New.model_validate_json(body) if via_json else _New.model_validate({"ts": v})
        want = None if old.ts is None else int(old.ts.timestamp())
        assert new.ts == want and type(new.ts) is type(want), v
        accepted += 1
    assert accepted > 500 and refused > 100


def test_decide_in_schema_unchanged() -> None:
    """The OpenAPI schema of ``ts`` is Timestamp's."""
    want = TypeAdapter(Timestamp | None).json_schema()
    got = DecideIn.model_json_schema()["properties"]["ts"]
    assert {k: v for k, v in got.items() if k not in ("default", "description", "title")} == want
    assert TypeAdapter(UnixSeconds | None).json_schema() == want
