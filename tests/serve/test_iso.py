"""``engine.iso`` (the API's time format) is ``time.strftime`` of ``time.gmtime``, per second."""

from __future__ import annotations

import random
import time

from pushrl.serve import engine


def test_iso_equals_strftime_of_gmtime() -> None:
    """Random seconds (the API's 2000-2099 range, the epoch's neighbours, negative times and
    years past 9999 where gmtime allows them) and every second of a few days around
    midnights, each asked twice (the second from the cache)."""
    rng = random.Random(20)
    secs = [rng.randint(946_684_800, 4_102_444_799) for _ in range(20_000)]
    secs += [rng.randint(-2**35, 2**38) for _ in range(5_000)]
    secs += [*range(-86_400 * 2, 86_400 * 2, 7), 0, -1, 86_399, 86_400, 951_782_400,
             4_102_444_799, 4_102_444_800]
    engine.iso.cache_clear()
    for s in secs + secs[:2000]:
        assert engine.iso(s) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s)), s
