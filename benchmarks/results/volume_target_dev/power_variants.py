"""Development runs of the volume price's value (the logs beside this file).

Usage (from the repository root): PYTHONPATH=. python
benchmarks/results/volume_target_dev/power_variants.py SEED [SEED ...]

Prints ``seed variant volume_error rel rel_low rel_high`` (objective per send of the price vs
the weekly cap 2 at the same volume, paired bootstrap 95 % CI with 500 resamples) for
``engagement^ke / (1 + sends_7d)^pf`` (``e1p2`` = the shipped proxy; ``h24`` also divides by
``1 + sends_24h``). The first log (seeds 23, 24) ran e1p2, e2p2, e1p3, e1p1, e1p2h24; the
second (seeds 11, 12) e1p2, e2p2, e3p2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/

from volume_target import per_send_ci, volume  # type: ignore[import-not-found]

from pushrl.compare.runner import PolicySpec
from pushrl.data.features import F
from pushrl.envs.rollout import rollout
from pushrl.rules.volume import VolumeTarget


def make(ke: float, pf: float, h24: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """The value ``engagement^ke / (1 + sends_7d)^pf`` (``/ (1 + sends_24h)`` with h24)."""
    def value(raw: np.ndarray) -> np.ndarray:
        e = raw[:, F["engagement"]].astype(float)
        out = e ** ke / (1 + raw[:, F["sends_7d"]].astype(float)) ** pf
        return out / (1 + raw[:, F["sends_24h"]].astype(float)) if h24 else out
    return value


def main() -> None:
    pol = PolicySpec.parse("most-active-hour:sends_per_day=2").load()
    variants = {"e1p2": make(1, 2), "e2p2": make(2, 2), "e3p2": make(3, 2),
                "e1p3": make(1, 3), "e1p1": make(1, 1), "e1p2h24": make(1, 2, True)}
    for seed in [int(x) for x in sys.argv[1:]]:
        kw = dict(n_users=5000, days=28, seed=seed, truth=True)
        c = rollout(pol, "default", max_sends_per_week=2, **kw)
        v = volume(c)
        for name, fn in variants.items():
            p = rollout(pol, "default", volume=VolumeTarget(v), value=fn, **kw)
            rel, lo, hi = per_send_ci(p, c, reps=500)
            print(seed, name, round(volume(p) / v - 1, 4), round(rel, 4), round(lo, 4),
                  round(hi, 4), flush=True)


if __name__ == "__main__":
    main()
