"""`import pushrl` registers its environments without importing Gymnasium (~0.25 s), in
either import order, so commands that never make an env do not pay for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

IDS = "{'pushrl/PushTiming-v1', 'pushrl/PushTiming-v0', 'pushrl/PushItem-v1', 'pushrl/PushItem-v0'}"


def _run(code: str) -> None:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]


def test_import_pushrl_and_the_cli_do_not_import_gymnasium() -> None:
    _run("import sys, pushrl, pushrl.cli.main, pushrl.train.vw_train\n"
         "assert 'gymnasium' not in sys.modules, 'gymnasium imported'\n")


@pytest.mark.parametrize("code", [
    "import pushrl\nimport gymnasium as g\nids = set(g.registry)",
    "import gymnasium as g\nimport pushrl\nids = set(g.registry)",
    "import pushrl\nfrom gymnasium.envs.registration import registry\nids = set(registry)",
    "import pushrl.data\nimport gymnasium.spaces\nimport gymnasium as g\nids = set(g.registry)",
])
def test_envs_are_registered_in_any_import_order(code: str) -> None:
    _run(code + f"\nassert {IDS} <= ids, ids\n"
         "import sys, pushrl\n"
         "assert not any(type(f).__name__ == '_RegisterWithGymnasium' for f in sys.meta_path)\n")


def test_a_registered_env_is_made_after_import_pushrl() -> None:
    _run("import pushrl, gymnasium as g\n"
         "env = g.make('pushrl/PushItem-v1', rounds_per_episode=3)\n"
         "assert env.reset(seed=0)[0] is not None\n")
