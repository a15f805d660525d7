"""benchmarks/server_syscalls.py reads strace's summary table (calls per system call)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 66.70    0.277268         105      2632       210 futex
 19.26    0.080045          30      2635           epoll_pwait
  4.57    0.018987          36       514           fdatasync
  0.05    0.000207         207         1         1 restart_syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.415697          24      5782       211 total
"""


def _module():  # type: ignore[no-untyped-def]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "server_syscalls.py"
    spec = importlib.util.spec_from_file_location("server_syscalls", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parse_strace_c_counts_calls_with_and_without_errors() -> None:
    got = _module().parse_strace_c(SAMPLE)
    assert got == {"futex": 2632, "epoll_pwait": 2635, "fdatasync": 514, "restart_syscall": 1}
