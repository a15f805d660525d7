"""The README is executable truth: every ```bash block runs, in order, on a scratch copy.

The blocks run as one bash script (``set -euo pipefail``) in a copy of the repository's
tracked files, with this interpreter's ``pushrl`` first on PATH. ``make`` lines run as
``make -n`` (a dry run: the targets exist and expand); what they do for real, in a new
virtualenv, is ``.ci/run``'s job. The test also checks that the README's commands left every
tracked file as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def readme_script(text: str) -> str:
    """The README's bash blocks as one script (``make X`` -> ``make -n X``)."""
    blocks = _BLOCK.findall(text)
    body = "\n".join(blocks)
    return re.sub(r"^make (?!-n)", "make -n ", body, flags=re.M)


def test_readme_script_has_every_block() -> None:
    text = (ROOT / "README.md").read_text()
    script = readme_script(text)
    assert text.count("```bash") == len(_BLOCK.findall(text)) >= 3
    assert "pushrl serve" in script and "make -n demo" in script and "\nmake demo" not in script


def _tracked(root: Path) -> dict[str, str]:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest()
            for f in files if f and (root / f).is_file()}


@pytest.mark.slow
def test_readme_commands_run(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    before = _tracked(ROOT)
    for rel in before:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, work / rel)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": str(work),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PUSHRL_HOME": str(tmp_path / "home")}
    script = "set -euo pipefail\n" + readme_script((work / "README.md").read_text())
    r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                       text=True, timeout=3600, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert '"decision_id"' in r.stdout and '"pscore"' in r.stdout  # the README's decide
    changed = {f for f, h in _tracked(work).items() if before.get(f) != h}
    assert not changed, f"README commands rewrote tracked files: {sorted(changed)}"
