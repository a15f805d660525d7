"""A real `pushrl serve` process on 127.0.0.1 for the slow tests (crash, hot swap, fuzz)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`pushrl serve` in a subprocess; ``base`` is its URL."""

    def __init__(self, tmp: Path, *extra: str, port: int | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "pushrl.cli.main", "serve", "--registry",
               str(tmp / "policies"), "--state", str(tmp / "state"), "--port", str(self.port),
               "--seed", "0", *extra]
        self.log = open(tmp / f"server-{self.port}-{time.time_ns()}.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                # /healthz: the process has started (an empty catalog is not "ready" yet;
                # the tests PUT their items after start-up)
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not ready in 60 s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL (no clean shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def schemathesis_bin() -> str | None:
    """The ``schemathesis`` CLI: on PATH, else beside this interpreter (a venv that is not
    activated: the dev extra installs it there), else None."""
    import shutil

    found = shutil.which("schemathesis")
    if found:
        return found
    local = Path(sys.executable).parent / "schemathesis"
    return str(local) if local.exists() else None
