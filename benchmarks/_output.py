"""The benchmarks' JSON output: the result dumped once, written to ``--out`` (when given)
and printed (when asked), instead of each script's own ``json.dumps`` / write / print."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def emit_json(res: Any, out: str | os.PathLike[str] | None = None, *, indent: int = 2,
              echo: bool = True) -> str:
    """``res`` as JSON (``indent``): written with a trailing newline to ``out`` when it is
    given (an existing file is replaced) and to stdout when ``echo``.

    Returns:
        The JSON text (without the trailing newline).
    """
    text = json.dumps(res, indent=indent)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    if echo:
        sys.stdout.write(text + "\n")
    return text
