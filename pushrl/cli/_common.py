"""Shared CLI plumbing: console, JSON output, progress bars and error mapping."""

from __future__ import annotations

import json
import os
import sys
import time
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


def _si(x: float) -> str:
    """``12.3k``-style figure for rates."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.1f}"


@contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool = True,
                 unit: str = "") -> Iterator[Any]:
    """A rich progress bar on stderr with a rate in ``unit``/s and an ETA; yields
    ``update(done, total)``. ``total=None`` when the amount of work is not known up front
    (a pulsing bar with the count and rate, no ETA, removed when done: the command prints its
    own summary, and an error stays the only line). ``PUSHRL_PROGRESS=1`` shows it even when
    disabled (``--json`` output goes to stdout, the bar to stderr: `pushrl quickstart` uses
    this)."""
    if not enabled and os.environ.get("PUSHRL_PROGRESS") != "1":
        yield lambda done, total=total: None
        return
    if total is None:
        columns: tuple[Any, ...] = (TextColumn("[bold]{task.description}"), BarColumn(),
                                    TextColumn("{task.completed:,.0f} " + unit),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    else:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + unit),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
    with Progress(*columns, console=console, transient=total is None) as prog:
        task = prog.add_task(description, total=total, rate="")
        t0 = time.perf_counter()

        def update(done: float, tot: float | None = total) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            prog.update(task, completed=done, total=tot,
                        rate=f"{_si(rate)} {unit or 'it'}/s")

        yield update
