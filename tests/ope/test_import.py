"""`import pushrl.ope` stays light: scikit-learn, scipy, pandas and matplotlib load only on use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: the test session has long since imported scikit-learn.
_PROBE = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import pushrl.ope
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
heavy = sorted(m for m in ("sklearn", "scipy", "pandas", "matplotlib") if m in sys.modules)
print(json.dumps({"file": pushrl.__file__, "heavy": heavy, "wall_s": wall, "cpu_s": cpu}))
"""


def _probe(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=True)


def test_import_does_not_load_heavy_dependencies(record_property: pytest.RecordProperty) -> None:
    out = json.loads(_probe(_PROBE).stdout)
    assert Path(out["file"]).resolve().parent == ROOT / "pushrl"  # the code under test
    # Reported, not asserted: timings on a shared machine are not a pass/fail signal.
    record_property("import_pushrl_ope_cpu_s", out["cpu_s"])
    print(f"import pushrl.ope: {out['cpu_s']:.3f} s CPU, {out['wall_s']:.3f} s wall")
    assert out["heavy"] == []


def test_lazy_names_resolve_and_load_sklearn_on_access() -> None:
    code = ("import sys, pushrl.ope as o; assert 'sklearn' not in sys.modules; "
            "from pushrl.ope import fit_fqe, FQEResult; import pushrl.ope.fqe as f; "
            "assert fit_fqe is f.fit_fqe and FQEResult is f.FQEResult; "
            "print(sorted(set(o.__all__) - set(dir(o))))")
    assert _probe(code).stdout.strip() == "[]"


def test_unknown_attribute_raises_attribute_error() -> None:
    import pushrl.ope

    with pytest.raises(AttributeError, match="no attribute 'not_an_estimator'"):
        pushrl.ope.not_an_estimator  # noqa: B018


def test_fqe_and_item_evaluation_modules_load_sklearn_only_when_fitting() -> None:
    code = ("import sys; import pushrl.ope.fqe, pushrl.ope.evaluate_item, pushrl.sim.glm; "
            "assert 'sklearn' not in sys.modules, 'imported at module level'; "
            "import numpy as np; from pushrl.ope.fqe import fit_fqe; "
            "r = np.random.default_rng(0); "
            "fit_fqe(r.random((6, 2, 3)), r.integers(0, 2, (6, 2)), r.random((6, 2)), "
            "np.full((6, 2, 2), 0.5)); print('sklearn' in sys.modules)")
    assert _probe(code).stdout.strip() == "True"
