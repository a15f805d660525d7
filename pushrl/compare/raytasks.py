"""Shards as Ray tasks: the shard plan and the one driver loop of `pushrl compare --ray` and
`pushrl plan --ray`.

Every task is a pure function of its arguments (the shard plan fixes its random streams), so
Ray may run the tasks in any order, on any node, and retry a lost one, and the results come
back in task order: a cluster run returns exactly a local run's numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from pushrl.errors import PushrlError


def shard_plan(n_users: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_users)`` in shards of ``shard_size`` (the
    shards of `pushrl compare` and `pushrl plan`: each one task).

    Raises:
        PushrlError: ``shard_size`` < 1.
    """
    if shard_size < 1:
        raise PushrlError(f"--shard-size must be >= 1, got {shard_size}")
    return [(s, min(s + shard_size, n_users)) for s in range(0, n_users, shard_size)]


def run_tasks(fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], address: str | None,
              workers: int | None, progress: Callable[[int, int], None] | None = None,
              ) -> list[Any]:
    """``[fn(*t) for t in tasks]`` as Ray tasks of one CPU each, in task order.

    Args:
        fn: The task (picklable by Ray: a module-level function).
        tasks: Its arguments, one tuple per task.
        address: Join this Ray cluster (``auto``, ``ray://host:port``); None starts a local
            Ray with ``workers`` CPUs (default: all) and stops it afterwards.
        workers: CPUs of the local Ray.
        progress: ``progress(done, total)`` in tasks, as they finish.
    """
    import ray

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"address": address} if address else {
            "num_cpus": workers or os.cpu_count() or 1, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level=40, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(*t) for t in tasks]
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done += len(ready)
            if progress:
                progress(done, len(refs))
        return list(ray.get(refs))
    finally:
        if started:
            ray.shutdown()
