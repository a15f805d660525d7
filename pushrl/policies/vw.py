"""Vowpal Wabbit contextual-bandit item policies (``cb_explore_adf``) and their registry loader.

A :class:`VWItemPolicy` scores the candidates of an :class:`~pushrl.policies.base.ItemContext`
with a VW ``cb_explore_adf`` model and returns VW's exploration PMF as ``action_dist``; the
base class samples from it with the caller's ``np.random.Generator``, so ``pscore`` is the
PMF value of the chosen candidate. Features are written by
:class:`~pushrl.policies.vw_format.VWFormatter` from the artifact's saved layout, the same
code that wrote the training file.

A VW workspace cannot be pickled: the policy keeps the verified model bytes and reopens a
workspace from them (``__getstate__`` drops it, ``__setstate__`` checks the sha256 and
reloads), so every worker process gets its own. Models are loaded *without* ``-t``: VW 9
saves the learner state (``--save_resume`` is the default), and test-only mode changes
``large_action_space`` PMFs.

Training from logs lives in :mod:`pushrl.train.vw_train`; online learning from an
environment in :mod:`pushrl.train.vw_online`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.errors import ArtifactError
from pushrl.policies.base import ItemContext, ItemPolicy
from pushrl.policies.item_data import ContextEncoder
from pushrl.policies.registry import register_loader, save_artifact
from pushrl.policies.vw_format import CBLabels, VWFormatter, VWLayout

EXPLORATIONS: tuple[str, ...] = ("squarecb", "epsilon", "cover", "bag", "large_action_space")
CB_TYPES: tuple[str, ...] = ("mtr", "dr", "ips")
MODEL_FILE, LAYOUT_FILE, ENCODER_FILE = "model.vw", "layout.json", "encoder.json"

_LIB: Any  # set by pyvw()


def pyvw() -> Any:
    """VW's Python module, imported on first use (``train bandit`` runs VW's own driver in a
    subprocess and needs the library only for the trained policy, so its import can wait
    until VW learns). Also sets ``_LIB``, the raw binding the decision path calls; the
    module's ``__getattr__`` gives ``_LIB`` and ``VW_VERSION`` to importers the same way."""
    from vowpalwabbit import pyvw as mod

    global _LIB
    _LIB = mod.pylibvw.vw
    return mod


def vw_version() -> str:
    """The installed VW's version (recorded in model cards)."""
    from vowpalwabbit import __version__

    return str(__version__)


def __getattr__(name: str) -> Any:
    if name == "_LIB":
        pyvw()
        return _LIB
    if name == "VW_VERSION":
        return vw_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class VWConfig:
    """VW learner options of an item policy.

    Attributes:
        exploration: ``squarecb`` (default), ``epsilon``, ``cover``, ``bag`` or
            ``large_action_space`` (SquareCB over a spanner of ``max_actions`` candidates;
            for catalogs of more than ~50 candidates).
        cb_type: ``mtr`` (default), ``dr`` or ``ips``; SquareCB variants only support ``mtr``.
        passes: Passes over the training data (> 1 trains from a cache file).
        seed: VW ``--random_seed``.
        interactions: Quadratic namespace interactions (``U`` user, ``C`` logged context,
            ``I`` item, ``A`` per-candidate affinity), e.g. ``("UI", "CI", "UA")``.
        bits: Hash bits (``-b``).
        learning_rate: ``-l`` (VW default 0.5 when None).
        epsilon: Exploration of ``epsilon`` (and the uniform floor of cover/bag).
        gamma_scale: SquareCB greediness scale.
        bag: Number of bags for ``bag``.
        cover: Number of cover policies for ``cover``.
        max_actions: Spanner size for ``large_action_space``.
    """

    exploration: str = "squarecb"
    cb_type: str = "mtr"
    passes: int = 1
    seed: int = 0
    interactions: tuple[str, ...] = ("UI", "CI", "UA")
    bits: int = 18
    learning_rate: float | None = None
    epsilon: float = 0.05
    gamma_scale: float = 10.0
    bag: int = 5
    cover: int = 5
    max_actions: int = 20

    def __post_init__(self) -> None:
        if self.exploration not in EXPLORATIONS:
            raise ValueError(f"--exploration must be one of {', '.join(EXPLORATIONS)}, got "
                             f"{self.exploration!r}")
        if self.cb_type not in CB_TYPES:
            raise ValueError(f"--cb-type must be one of {', '.join(CB_TYPES)}, got "
                             f"{self.cb_type!r}")
        if self.exploration in ("squarecb", "large_action_space") and self.cb_type != "mtr":
            raise ValueError(f"--exploration {self.exploration} only supports --cb-type mtr "
                             f"(VW's SquareCB is regression based), got {self.cb_type!r}; "
                             "use epsilon, cover or bag for dr/ips")
        for name, lo in (("passes", 1), ("bits", 1), ("bag", 1), ("cover", 1),
                         ("max_actions", 1), ("seed", 0)):
            if int(getattr(self, name)) < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {lo}, "
                                 f"got {getattr(self, name)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        for q in self.interactions:
            if len(q) < 2 or not set(q) <= set("UCIA"):
                raise ValueError(f"interaction {q!r} must combine namespaces U, C, I, A "
                                 "(e.g. UI)")

    def args(self) -> list[str]:
        """The VW learner arguments (no data, model or cache paths)."""
        a = ["--cb_explore_adf", "--cb_type", self.cb_type, "--random_seed", str(self.seed),
             "-b", str(self.bits)]
        if self.exploration == "squarecb":
            a += ["--squarecb", "--gamma_scale", f"{self.gamma_scale:g}"]
        elif self.exploration == "epsilon":
            a += ["--epsilon", f"{self.epsilon:g}"]
        elif self.exploration == "cover":
            a += ["--cover", str(self.cover), "--epsilon", f"{self.epsilon:g}"]
        elif self.exploration == "bag":
            a += ["--bag", str(self.bag), "--epsilon", f"{self.epsilon:g}"]
        else:
            a += ["--large_action_space", "--squarecb", "--gamma_scale",
                  f"{self.gamma_scale:g}", "--max_actions", str(self.max_actions),
                  "--thread_pool_size", "1"]
        if self.learning_rate is not None:
            a += ["-l", f"{self.learning_rate:g}"]
        for q in self.interactions:
            a += ["--interactions", q]
        return a

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["interactions"] = list(self.interactions)
        return d


def _open(args: Sequence[str], model: bytes | None) -> Any:
    """A ``pyvw.Workspace`` with ``args`` (new model) or from model bytes (``-i``)."""
    if model is None:
        return pyvw().Workspace(arg_list=[*args, "--quiet"])
    fd, path = tempfile.mkstemp(suffix=".vw")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model)
        return pyvw().Workspace(arg_list=["-i", path, "--quiet"])
    finally:
        os.unlink(path)


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@dataclass
class VWItemPolicy(ItemPolicy):
    """An item policy backed by a VW ``cb_explore_adf`` model.

    Args:
        layout: Feature layout (what the model was trained on).
        args: VW learner arguments (used to start a new model; recorded in the card).
        model: Saved VW model bytes; None starts an untrained model with ``args``.
        encoder: Context columns (to build contexts for this policy); optional.
        name: Registry name.
        version: Artifact version.
    """

    layout: VWLayout
    args: list[str]
    model: bytes | None = None
    encoder: ContextEncoder | None = None
    name: str = "vw"
    version: str = "0"
    model_sha256: str | None = None
    _ws: Any = field(default=None, init=False, repr=False)
    _fmt: VWFormatter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.model is not None:
            digest = _sha256(self.model)
            if self.model_sha256 is not None and digest != self.model_sha256:
                raise ArtifactError(f"VW model bytes do not match their sha256 "
                                    f"({digest[:12]} != {self.model_sha256[:12]}); refusing")
            self.model_sha256 = digest
        self._fmt = VWFormatter(self.layout)
        self._ws = _open(self.args, self.model)

    # ------------------------------------------------------------ decisions
    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        """VW's exploration PMF over each round's candidates, shape ``(n, k)``."""
        mask = np.asarray(ctx.mask, bool)
        dist = np.zeros(mask.shape, np.float64)
        ws = self._ws
        for i, text in enumerate(self._fmt.to_rounds(ctx)):
            # the raw binding skips pyvw's per-line Example wrappers (~0.5 ms a decision)
            exs = _LIB._parse(ws, text)
            try:
                _LIB.predict_multi(ws, exs)
                dist[i, mask[i]] = exs[0].get_action_scores()  # PMF in action order
            finally:
                _LIB._finish_example_multi_ex(ws, exs)
        return dist

    # ------------------------------------------------------------ learning
    def learn(self, ctx: ItemContext, action: np.ndarray, reward: np.ndarray,
              pscore: np.ndarray) -> None:
        """Update the model with observed rounds (online learning).

        Args:
            ctx: ``n`` rounds.
            action: ``(n,)`` chosen candidate indices.
            reward: ``(n,)`` observed rewards (VW minimises ``cost = -reward``).
            pscore: ``(n,)`` probability the acting policy gave ``action``.
        """
        mask = np.asarray(ctx.mask, bool)
        a = np.asarray(action, np.int64)
        if not mask[np.arange(a.size), a].all():
            raise ValueError("action points at a masked (padding) candidate; pass the index "
                             "of a real candidate")
        labels = CBLabels(a, -np.asarray(reward, np.float64), np.asarray(pscore, np.float64))
        ws = self._ws
        for text in self._fmt.to_rounds(ctx, labels):
            exs = _LIB._parse(ws, text)
            try:
                _LIB.learn_multi(ws, exs)
            finally:
                _LIB._finish_example_multi_ex(ws, exs)
        self.model = None  # the bytes are stale until the next save
        self.model_sha256 = None

    def model_bytes(self) -> bytes:
        """The current model as VW model-file bytes (learner state included)."""
        if self.model is None:
            fd, path = tempfile.mkstemp(suffix=".vw")
            os.close(fd)
            try:
                self._ws.save(path)
                self.model = Path(path).read_bytes()
            finally:
                os.unlink(path)
            self.model_sha256 = _sha256(self.model)
        return self.model

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        model = self.model_bytes()
        return {"layout": self.layout.to_dict(), "args": list(self.args), "model": model,
                "model_sha256": _sha256(model),
                "encoder": None if self.encoder is None else self.encoder.to_dict(),
                "name": self.name, "version": self.version}

    def __setstate__(self, state: dict[str, Any]) -> None:
        enc = state.get("encoder")
        self.__init__(VWLayout.from_dict(state["layout"]), list(state["args"]),  # type: ignore[misc]
                      state["model"], None if enc is None else ContextEncoder.from_dict(enc),
                      state["name"], state["version"], state["model_sha256"])

    # ------------------------------------------------------------ registry
    def describe(self) -> dict[str, Any]:
        """Model-card parameters."""
        return {**super().describe(), "vw_version": vw_version(), "vw_args": list(self.args),
                "namespaces": self.layout.namespaces}

    def save(self, out: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write a registry artifact ``out/vN`` (model, layout, encoder, card with sha256s)."""
        files: dict[str, str | Path | bytes] = {
            MODEL_FILE: self.model_bytes(),
            LAYOUT_FILE: json.dumps(self.layout.to_dict()).encode()}
        if self.encoder is not None:
            files[ENCODER_FILE] = json.dumps(self.encoder.to_dict()).encode()
        full = {"policy": self.describe(), "vw_version": vw_version(),
                "vw_args": list(self.args), "namespaces": self.layout.namespaces,
                "feature_spec": None if self.encoder is None else self.encoder.spec.to_dict(),
                **(card or {})}
        return save_artifact(out, kind="item", loader="vw", files=files, card=full)


@register_loader("vw")
def load_vw(path: Path, card: dict[str, Any]) -> VWItemPolicy:
    """Registry loader: a :class:`VWItemPolicy` from a verified artifact directory."""
    path = Path(path)
    for f in (MODEL_FILE, LAYOUT_FILE):
        if f not in card.get("files", {}):
            raise ArtifactError(f"{path}: VW artifact lacks {f}; re-train it")
    enc = (ContextEncoder.from_dict(json.loads((path / ENCODER_FILE).read_text()))
           if ENCODER_FILE in card["files"] else None)
    return vw_from_artifact(path, card, str(card.get("name", "vw")),
                            str(card.get("version", "0")), enc)


def vw_from_artifact(path: Path, card: dict[str, Any], name: str, version: str = "0",
                     encoder: ContextEncoder | None = None) -> VWItemPolicy:
    """The :class:`VWItemPolicy` of a verified artifact's model and layout files (its card
    lists both; the model's sha256 is checked again when VW loads it)."""
    path = Path(path)
    return VWItemPolicy(VWLayout.from_dict(json.loads((path / LAYOUT_FILE).read_text())),
                        list(card.get("vw_args", [])), (path / MODEL_FILE).read_bytes(),
                        encoder, name, version, card["files"][MODEL_FILE])
