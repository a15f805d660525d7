"""Train a VW item policy from logs: Parquet -> bandit rounds -> VW text -> VW's own driver.

The rounds are featurised in time-ordered chunks (:func:`~pushrl.policies.item_data.iter_rounds`)
and written as VW text with vectorised byte operations
(:class:`~pushrl.policies.vw_format.VWFormatter`) into a pipe that VW's own command-line
driver (``python -m vowpalwabbit -d /dev/stdin``) reads, so parsing and learning run in C++
while Python featurises the next chunk. No per-example Python ``learn`` calls.

Labels: ``cost = -reward`` (VW minimises cost) and the item-level logging ``pscore``.
Several passes (``passes > 1``) go through a cache file (``--cache_file``, rebuilt with
``-k``); VW then holds out every 10th round and reports the holdout loss.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from pushrl.data.shards import SHARD_USERS, plan
from pushrl.data.split import UserSplit
from pushrl.data.validate import load_dataset, should_stream
from pushrl.errors import DataError
from pushrl.policies.item_data import BanditRounds, fit_sharded, iter_rounds, iter_sharded_rounds
from pushrl.policies.vw import VWConfig, VWItemPolicy, pyvw, vw_version
from pushrl.policies.vw_format import CBLabels, VWFormatter, VWLayout
from pushrl.rules.reward import RewardWeights

#: Rounds per chunk streamed to VW.
CHUNK_ROUNDS = 1024


def layout_for(rounds: BanditRounds) -> VWLayout:
    """The VW layout of rounds built by :mod:`~pushrl.policies.item_data`."""
    enc, cat = rounds.encoder, rounds.catalog
    return VWLayout.from_catalog(enc.shared_names, enc.candidate_feature_names, cat.ids,
                                 cat.features, cat.feature_names)


def labels_of(rounds: BanditRounds) -> CBLabels:
    """VW labels of logged rounds: ``cost = -reward`` with the item-level ``pscore``."""
    return CBLabels(rounds.action, -rounds.reward, rounds.pscore)


def driver_command(config: VWConfig, model: str | Path, *, data: str | Path = "/dev/stdin",
                   cache: str | Path | None = None) -> list[str]:
    """VW's own CLI driver command training ``config`` on a text file (or stdin)."""
    cmd = [sys.executable, "-m", "vowpalwabbit", "-d", str(data), "-f", str(model),
           *config.args()]
    if config.passes > 1:
        if cache is None:
            raise ValueError("passes > 1 needs a cache file; pass cache=PATH")
        cmd += ["--passes", str(config.passes), "--cache_file", str(cache), "-k"]
    return cmd


def parse_driver_output(text: str) -> dict[str, float]:
    """``train/...`` metrics from the summary VW's driver prints at the end of a run."""
    out: dict[str, float] = {}
    pats = {"train/examples": r"number of examples(?: per pass)? = (\d+)",
            "train/passes": r"passes used = (\d+)",
            "train/weighted_examples": r"weighted example sum = ([-\d.eE+]+)",
            "train/total_features": r"total feature number = (\d+)",
            "train/pv_loss": r"average loss = ([-\d.eE+]+)"}
    for key, pat in pats.items():
        m = re.search(pat, text)
        if m:
            out[key] = float(m.group(1))
    if "h\n" in text or "holdout" in text:
        if "train/pv_loss" in out and re.search(r"average loss = [-\d.eE+]+ h", text):
            out["train/holdout_loss"] = out.pop("train/pv_loss")
    return out


class _Driver:
    """VW's driver in a subprocess, fed through its stdin by a writer thread."""

    def __init__(self, cmd: list[str], tee: IO[bytes] | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.tee = tee
        self._q: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=8)
        self._err: list[bytes] = []
        self.write_error: BaseException | None = None
        #: seconds the writer waited for the next chunk after the first one (VW had no
        #: new text from pushrl then: the featurising did not keep up), and in writes
        #: (VW's parser had not yet read the previous text: VW was the bottleneck)
        self.idle_s = self.busy_s = 0.0
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer.start()
        self._reader.start()

    def _write(self) -> None:
        assert self.proc.stdin is not None
        clock, first = time.perf_counter, True
        try:
            while True:
                t0 = clock()
                arr = self._q.get()
                t1 = clock()
                if arr is None:
                    break
                if not first:
                    self.idle_s += t1 - t0
                first = False
                self.proc.stdin.write(arr.data)
                self.busy_s += clock() - t1
                if self.tee is not None:
                    self.tee.write(arr.data)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError) as exc:  # VW died: reported by finish()
            self.write_error = exc
            while self._q.get() is not None:
                pass

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    def feed(self, arr: np.ndarray) -> None:
        self._q.put(arr)

    def finish(self) -> str:
        self._q.put(None)
        self._writer.join()
        rc = self.proc.wait()
        self._reader.join()
        text = b"".join(self._err).decode(errors="replace")
        if rc != 0 or self.write_error is not None:
            tail = " | ".join(text.strip().splitlines()[-3:])
            raise RuntimeError(f"VW driver failed (exit {rc}): {tail}")
        return text

    def kill(self) -> None:
        self.proc.kill()
        self._q.put(None)


@dataclass
class TrainResult:
    """Outcome of :func:`train_vw`.

    Attributes:
        policy: The trained policy (loaded from the saved model bytes).
        metrics: ``train/...`` metrics.
        card: Model-card fields (also written to the artifact).
        artifact: Artifact directory, or None when not saved.
    """

    policy: VWItemPolicy
    metrics: dict[str, float]
    card: dict[str, Any]
    artifact: Path | None = None


def train_rounds(chunks: Iterable[BanditRounds], config: VWConfig, *,
                 examples_path: str | Path | None = None,
                 progress: Callable[[int], None] | None = None,
                 _driver: _Driver | None = None,
                 _model_path: Path | None = None,
                 _while_vw_learns: Callable[[], None] | None = None) -> TrainResult:
    """Train a VW policy on bandit rounds streamed to VW's driver.

    Args:
        chunks: Rounds in training order (e.g. :func:`iter_rounds` or ``[rounds]``).
        config: VW options.
        examples_path: Also write the exact VW text to this file (for benchmarks).
        progress: Called with the number of rounds sent so far.

    Returns:
        The policy (not saved; see :func:`train_vw`) and metrics.
    """
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-vw-"))
    model_path = _model_path or tmp / "model.vw"
    tee = open(examples_path, "wb") if examples_path else None
    driver = _driver or _Driver(driver_command(config, model_path, cache=tmp / "cache"), tee)
    driver.tee = tee
    n, reward_sum, first, k_max = 0, 0.0, None, 0
    try:
        for chunk in chunks:
            if first is None:
                first = chunk
                fmt = VWFormatter(layout_for(chunk))
            driver.feed(fmt.to_array(chunk.context, labels_of(chunk)))
            n += chunk.n_rounds
            reward_sum += float(chunk.reward.sum())
            k_max = max(k_max, chunk.n_actions)
            if progress is not None:
                progress(n)
        if first is None:
            raise DataError("no bandit rounds to train on")
        if _while_vw_learns is not None:  # VW still parses the queued chunks: use the time
            _while_vw_learns()
        pyvw()  # imported while VW learns, not before its first chunk nor after it finished
        t_fed = time.perf_counter()
        text = driver.finish()
        model = model_path.read_bytes()
    except BaseException:
        driver.kill()
        raise
    finally:
        if tee is not None:
            tee.close()
        shutil.rmtree(tmp, ignore_errors=True)
    t_end = time.perf_counter()
    metrics = parse_driver_output(text)
    metrics.update({"train/rounds": float(n), "train/n_actions": float(k_max),
                    "train/logged_reward_mean": reward_sum / max(n, 1),
                    "train/seconds_vw_after_last_chunk": t_end - t_fed,
                    "train/seconds_writer_idle": driver.idle_s,
                    "train/seconds_writer_blocked": driver.busy_s})
    policy = VWItemPolicy(layout_for(first), config.args(), model, first.encoder)
    card = {"vw_config": config.to_dict(), "vw_version": vw_version(),
            "vw_driver_args": config.args() + (
                ["--passes", str(config.passes), "--cache_file", "<cache>", "-k"]
                if config.passes > 1 else []),
            "reward": first.weights.item_formula(), "cost": "-reward",
            # rounds whose weighted outcome was missing and counted 0 (pushrl.rules.reward)
            "reward_missing_outcomes": dict(first.missing_outcomes),
            "pscore": "item level: pscore / pscore_send (pushrl.data.contract.item_pscore)"}
    return TrainResult(policy, metrics, card)


def _rounds(data: str | Path, reward: RewardWeights | str | None, chunk_rounds: int,
            shard_users: int, stream: bool | None, split: UserSplit | None = None,
            ) -> tuple[Iterator[BanditRounds], dict[str, Any]]:
    """The rounds of a log (``split``'s part of it when given) and the card's ``data``
    entry (whole, or by user shards)."""
    p = plan(data, shard_users)
    if p.n_shards == 1 or not (should_stream(data) if stream is None else stream):
        # the fingerprint (a hash of every row) is computed after the last chunk went to
        # VW, while VW still learns (``_later``), not before the first one
        ds, report = load_dataset(data, split=split, fingerprint=False, summary=False)
        card: dict[str, Any] = {"fingerprint": None, "rejected_rows": report.n_rejected,
                                "split": ds.split}

        def later() -> None:
            card["fingerprint"] = ds.fingerprint()

        card["_later"] = later
        return iter_rounds(ds, reward=reward, chunk_rounds=chunk_rounds), card
    log = fit_sharded(p, reward, split)
    return (iter_sharded_rounds(log, chunk_rounds=chunk_rounds),
            {"fingerprint": log.fingerprint, "rejected_rows": log.rejected_rows,
             "split": (split.record(log.of, log.n_users) if split is not None
                       else None),
             "shards": {"n": p.n_shards, "layout": p.layout,
                        "order": "shard after shard, time order within a shard"}})


def train_vw(data: str | Path, config: VWConfig | None = None, *, out: str | Path | None = None,
             reward: RewardWeights | str | None = None, chunk_rounds: int = CHUNK_ROUNDS,
             examples_path: str | Path | None = None,
             progress: Callable[[int], None] | None = None,
             split: UserSplit | None = None, shard_users: int = SHARD_USERS,
             stream: bool | None = None) -> TrainResult:
    """Train a VW item policy end to end from a pushlog v1 directory (Parquet -> model).

    A log too large to load whole (:func:`~pushrl.data.validate.should_stream`: more than
    8M decisions) is streamed by user shards (:mod:`pushrl.data.shards`: its user parts,
    or hash shards of ``shard_users`` users): one pass fits the context columns and reward
    over every shard, a second feeds each shard's rounds (in time order within the shard)
    to VW, so memory is bounded by a shard. VW then learns shard after shard rather than
    in global time order; a smaller log is loaded whole and trained in time order as
    before.

    Args:
        data: Dataset directory (loaded with :func:`~pushrl.data.validate.load_dataset`).
        config: VW options (default :class:`VWConfig`).
        out: ``policies/NAME``: save a registry artifact there (new version).
        reward: Reward weights (their item-round part) or a formula such as
            ``"clicked+0.01*revenue"`` (default: ``clicked``, plus ``0.01*revenue`` when
            logged).
        chunk_rounds: Rounds per chunk streamed to VW.
        examples_path: Also write the VW text to this file.
        progress: Called with the number of rounds sent so far.
        split: Train on this part of a user split only (a scenario's ``train`` part,
            :meth:`~pushrl.envs.scenario.Scenario.data_split`); the card's ``data`` records it.
        shard_users: Users per hash shard of a log without user parts.
        stream: Force (True) or refuse (False) streaming by shards; None = by size.

    Raises:
        DataError: the logs have no ``pscore``, no ``pscore_send`` (and no declared send
            probability, see :func:`~pushrl.data.contract.item_pscore`), no sent pushes or
            a weighted outcome that no sent row logs.
    """
    config = config or VWConfig()
    t0, cpu0 = time.perf_counter(), os.times()
    tmp = Path(tempfile.mkdtemp(prefix="pushrl-vw-"))
    model_path = tmp / "model.vw"
    # VW's start-up (interpreter, library load) overlaps with loading the data
    driver = _Driver(driver_command(config, model_path, cache=tmp / "cache"))
    try:
        chunks, data_card = _rounds(data, reward, chunk_rounds, shard_users, stream, split)
        t_load = time.perf_counter() - t0
        res = train_rounds(chunks, config, examples_path=examples_path, progress=progress,
                           _driver=driver, _model_path=model_path,
                           _while_vw_learns=data_card.pop("_later", None))
    except BaseException:
        driver.kill()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    cpu = os.times()  # CPU of this process (all threads) and of VW's driver, during the call
    res.metrics.update({"train/seconds": seconds, "train/seconds_load": t_load,
                        "train/rounds_per_second": res.metrics["train/rounds"] / seconds,
                        "train/cpu_seconds_pushrl": cpu.user + cpu.system - cpu0.user
                        - cpu0.system, "train/cpu_seconds_vw": cpu.children_user
                        + cpu.children_system - cpu0.children_user - cpu0.children_system})
    res.card.update({"data": {"path": str(data), **data_card}, "metrics": res.metrics})
    if out is not None:
        res.policy.name = Path(out).name
        res.artifact = res.policy.save(out, res.card)
        res.policy.version = res.artifact.name
    return res
