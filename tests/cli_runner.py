"""Run the ``pushrl`` CLI in the test process: the exit code, stdout and stderr of ``python -m
pushrl.cli.main ARGS``, without a new interpreter importing the stack again for every call.

The entry point is the real one (:func:`pushrl.cli.main.main`, with its mapping of user
errors to one line and exit 2); an exception that escapes it is written to stderr as the
traceback a process would print (exit 1), so "no traceback" assertions keep their meaning.
Tests about a fresh process (imports, start-up) still spawn one.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pushrl(*args: str, cwd: str | Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``pushrl ARGS`` in-process from ``cwd``, as a completed process."""
    from pushrl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, os.getcwd()
    code = 0
    sys.argv = ["pushrl", *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        os.chdir(here)
    return subprocess.CompletedProcess(["pushrl", *args], code, out.getvalue(), err.getvalue())
