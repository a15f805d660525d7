"""Time OBP 0.4.1's ``estimate_interval`` on the OBD fixture arrays (run it with OBP's python).

OBP is never a dependency of pushrl: this script runs in a throwaway venv, e.g.

    python -m venv /tmp/obpenv && /tmp/obpenv/bin/pip install "numpy<2" "pandas<2" \
        scikit-learn scipy torch "matplotlib<3.9" seaborn tqdm pyyaml mypy-extensions
    /tmp/obpenv/bin/pip install --no-deps obp==0.4.1   # its pins would pull old wheels
    /tmp/obpenv/bin/python benchmarks/ope_obp_timing.py --n-bootstrap 10000

``benchmarks/ope.py --obp-timing --obp-python /tmp/obpenv/bin/python`` calls it in the same run
as pushrl's timing, so both are measured under the same machine load. It prints one JSON
document: per estimator configuration and direction, the CPU and wall seconds of one
``estimate_interval`` call and the point value.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

OBP_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "obp"
DIRECTIONS = ("random_logs_bts_policy", "bts_logs_random_policy")


def load(name: str) -> dict:
    with np.load(OBP_DIR / f"{name}.npz") as z:
        raw = {k: z[k] for k in z.files}
    out = {k: v for k, v in raw.items() if "__" not in k}
    for key in [k for k in raw if k.endswith("__rows")]:
        base = key[: -len("__rows")]
        out[base] = raw[key][raw[f"{base}__index"]]
    return out


def estimators() -> dict:
    """The 11 configurations of scripts/obp_reference.py, keyed like pushrl's benchmark."""
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        DoublyRobustWithShrinkage,
        InverseProbabilityWeighting,
        SelfNormalizedDoublyRobust,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobust,
    )

    ests = {
        "ipw": InverseProbabilityWeighting(),
        "snipw": SelfNormalizedInverseProbabilityWeighting(),
        "dm": DirectMethod(),
        "dr": DoublyRobust(),
        "sndr": SelfNormalizedDoublyRobust(),
    }
    for tau in (1.0, 5.0, 20.0):
        ests[f"switch-dr(tau={tau:g})"] = SwitchDoublyRobust(tau=tau)
    for lam in (1.0, 10.0, 100.0):
        ests[f"dr-os(lambda={lam:g})"] = DoublyRobustWithShrinkage(lambda_=lam)
    return ests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bootstrap", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--only", default=None, help="comma-separated estimator names")
    a = parser.parse_args()
    import obp

    out: dict = {"obp": obp.__version__, "numpy": np.__version__, "directions": {}}
    for direction in DIRECTIONS:
        case = load(direction)
        inputs = {k: case[k] for k in ("reward", "action", "pscore", "action_dist", "position")}
        inputs["estimated_rewards_by_reg_model"] = case["estimated_rewards_by_reg_model"]
        res = {}
        for name, est in estimators().items():
            if a.only and name not in a.only.split(","):
                continue
            value = float(est.estimate_policy_value(**inputs))
            t0, c0 = time.perf_counter(), time.process_time()
            est.estimate_interval(
                **inputs, n_bootstrap_samples=a.n_bootstrap, random_state=a.seed
            )
            res[name] = {
                "cpu": time.process_time() - c0,
                "wall": time.perf_counter() - t0,
                "value": value,
            }
        out["directions"][direction] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
