"""Shared CLI plumbing: console, JSON output, progress bars and error mapping."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
out = Console()


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def to_json(obj: Any) -> str:
    """Serialise results (numpy scalars and arrays included) as indented JSON."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_default)


def emit(obj: Any, as_json: bool) -> None:
    """Print ``obj`` as JSON on stdout when ``as_json``; otherwise do nothing."""
    if as_json:
        sys.stdout.write(to_json(obj) + "\n")


@contextmanager
def progress_bar(description: str, total: float, *, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    if not enabled:
        yield lambda done, total=total: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as prog:
        task = prog.add_task(description, total=total)

        def update(done: float, tot: float = total) -> None:
            prog.update(task, completed=done, total=tot)

        yield update


def not_implemented(what: str) -> None:
    """Exit non-zero for a command a later issue fills."""
    from pushrl.errors import NotImplementedYet

    raise NotImplementedYet(f"`pushrl {what}` is not implemented yet")
