"""Shared CLI plumbing: console, JSON output, progress bars and error mapping."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pushrl.data.io import json_default

console = Console(stderr=True)
out = Console()


def to_json(obj: Any) -> str:
    """Serialise results (numpy scalars and arrays included) as indented JSON."""
    return json.dumps(obj, indent=2, sort_keys=False, default=json_default)


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
