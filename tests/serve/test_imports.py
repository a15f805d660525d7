"""The serving path is the decision-time side only: importing the server and loading every
shipped policy never imports torch or stable-baselines3 (training lives in pushrl.train)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING_ONLY = ("torch", "stable_baselines3")


def test_serving_never_imports_torch_or_sb3() -> None:
    code = (
        "import sys\n"
        "import pushrl.serve.app, pushrl.serve.server, pushrl.serve.engine\n"
        "from pushrl.policies.registry import load_policy\n"
        f"for p in sorted((__import__('pathlib').Path({str(ROOT)!r}) / 'policies').glob('*/v*')):\n"
        "    load_policy(p)\n"
        f"print(sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_training_does_import_them() -> None:
    """The check above can fail: the training module pulls both in."""
    code = ("import sys, pushrl.train.ppo\n"
            f"print(sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == str(sorted(TRAINING_ONLY)), out.stdout + out.stderr
