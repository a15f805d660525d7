"""The policies a server runs: active and shadow, per kind, loaded from the registry.

Artifacts are verified (sha256, identity) by :func:`pushrl.policies.registry.load_policy`
before they are loaded, and every loaded artifact makes one decision on a synthetic context
(:func:`prove`) before it may serve. When nothing is promoted the default baselines run
(:data:`DEFAULTS`); the server passes its own item default, built from its own data. At
start-up an active artifact that no longer loads is replaced by the last one of its slot's
history that does (else the default), and the set says so (:attr:`PolicySet.fallback`). The
kill switch replaces the timing policy by the safe default, which never sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.features import FeatureSpec, FeatureState, ItemCatalog
from pushrl.errors import ArtifactError
from pushrl.policies.base import ItemContext, ItemPolicy, Policy, TimingContext, TimingPolicy
from pushrl.policies.baselines import make_baseline
from pushrl.policies.item_data import ContextEncoder, make_context
from pushrl.policies.registry import load_policy
from pushrl.serve.pointer import DEFAULTS, KINDS, NO_SHADOW, read_active, split_ref

BUILTIN = "builtin"
log = logging.getLogger("pushrl.serve")


class SafeDefault(TimingPolicy):
    """The kill switch's policy: never send."""

    name = "safe-default"
    version = BUILTIN

    def _action_dist(self, ctx: TimingContext) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(ctx), 2))
        out[:, 0] = 1.0
        return out


@dataclass(frozen=True)
class Loaded:
    """A loaded policy and its ``name@version`` label."""

    policy: Policy
    label: str

    @property
    def encoder(self) -> ContextEncoder | None:
        """The item-context encoder the policy was trained with, if any."""
        enc = getattr(self.policy, "encoder", None)
        return enc if isinstance(enc, ContextEncoder) else None

    @property
    def spec(self) -> FeatureSpec | None:
        """Feature pipeline parameters the policy was trained with, if it carries them."""
        enc = self.encoder
        spec = getattr(enc, "spec", None) if enc is not None else None
        spec = spec or getattr(self.policy, "feature_spec", None) or getattr(self.policy,
                                                                             "spec", None)
        return spec if isinstance(spec, FeatureSpec) else None


@dataclass(frozen=True)
class PolicySet:
    """What the server decides with (immutable: swapped whole on promote/rollback)."""

    timing: Loaded
    item: Loaded
    shadow_timing: Loaded | None = None
    shadow_item: Loaded | None = None
    generation: int = 0
    pointer: dict[str, Any] = field(default_factory=dict)
    #: ``kind`` (or ``shadow_kind``) -> why the pointer's artifact is not the one serving.
    fallback: dict[str, str] = field(default_factory=dict)
    safe: Loaded = field(default_factory=lambda: Loaded(SafeDefault(), f"safe-default@{BUILTIN}"))
    #: The promoted trigger delay policy (slot ``delay``, #16); None = the server's own
    #: (``--trigger-delay-policy``, default fixed 1 h).
    delay: Loaded | None = None
    #: A candidate delay policy logged beside the active one (``trigger_shadow`` rows).
    shadow_delay: Loaded | None = None

    @property
    def spec(self) -> FeatureSpec | None:
        """The feature spec required by the active policies (item policy first)."""
        return self.item.spec or self.timing.spec


class UniformItem(ItemPolicy):
    """Uniformly random among the candidates: the fallback item policy when the default
    baseline is not installed (it also logs the most explorable data)."""

    name = "uniform"
    version = BUILTIN

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        import numpy as np

        return np.asarray(ctx.mask, float)

    def shared_key(self) -> Hashable:
        """Uniform over the candidates whoever the user: one key forever."""
        return ()


def default_policy(kind: str) -> Loaded:
    """The default baseline of ``kind``."""
    name = DEFAULTS[kind]
    try:
        try:
            pol = make_baseline(name)
        except ArtifactError:  # older registries spell baselines with underscores
            pol = make_baseline(name.replace("-", "_"))
    except ArtifactError:
        if kind != "item":
            raise
        log.warning("default item baseline %r is not available; serving uniform-random items",
                    name)
        pol = UniformItem()
        name = pol.name
    pol.version = BUILTIN
    return Loaded(pol, f"{name}@{BUILTIN}")


class CatalogPopular(ItemPolicy):
    """``most-popular`` over the server's own catalog: the candidates with the highest
    ``scores()`` (ties split evenly, so uniform until the server has seen anything).

    Candidate indices are the server's item indices (no encoder: the engine maps nothing).

    Args:
        scores: Returns ``(n_items,)`` scores of the server's items, read at every decision
            (the server updates them as it sees data).
        source: What the scores are (for logs and ``describe``).
    """

    name = "most-popular"
    version = "server"

    def __init__(self, scores: Callable[[], np.ndarray], source: str = "") -> None:
        self.scores = scores
        self.source = source

    def _action_dist(self, ctx: ItemContext) -> np.ndarray:
        from pushrl.policies.item_baselines import _greedy

        cand = np.asarray(ctx.candidates, np.int64)
        mask = np.asarray(ctx.mask, bool)
        s = np.asarray(self.scores(), np.float64)
        if cand.size and cand.max() >= s.size:
            s = np.concatenate([s, np.zeros(int(cand.max()) + 1 - s.size)])
        return _greedy(s[np.clip(cand, 0, None)], mask, 0.0)

    def shared_key(self) -> Hashable:
        """The scores now (the distribution reads no user context; it changes with them)."""
        return np.asarray(self.scores(), np.float64).tobytes()

    def describe(self) -> dict[str, Any]:
        """Model-card parameters."""
        return {**super().describe(), "source": self.source}


def catalog_mismatch(loaded: Loaded, known: Container[str]) -> str | None:
    """Why item policy ``loaded`` cannot decide over a server whose item ids are ``known``
    (None when it can): it was trained on items the server does not have."""
    enc = loaded.encoder
    if not isinstance(enc, ContextEncoder):
        return None
    missing = [i for i in enc.item_ids if i not in known]
    if not missing:
        return None
    return (f"item policy {loaded.label} was trained on a catalog of {len(enc.item_ids)} "
            f"items, {len(missing)} of which this server does not have (e.g. {missing[0]!r}); "
            "PUT /v1/items/{item_id} for each of them, or use an item policy trained on this "
            "server's catalog (--catalog seeds only a fresh --state directory)")


_SMOKE_BUCKET = 492_348  # 2026-03-02T12:00Z, a Monday noon: a slot every policy may use


def smoke_decision(loaded: Loaded, kind: str) -> None:
    """One decision of ``loaded`` on a synthetic context (one fresh user in UTC at Monday
    noon; for item policies every item of the catalog it was trained on, or three synthetic
    items). Proves that the artifact can decide, not that it decides well.

    Raises:
        ArtifactError: the policy raised, or returned an invalid decision.
    """
    enc = loaded.encoder
    spec = (enc.spec if isinstance(enc, ContextEncoder) else None) or loaded.spec or \
        FeatureSpec(("a", "b"), {"smoke0": 0, "smoke1": 1, "smoke2": 0}, tuple([1 / 168] * 168),
                    (0.5, 0.5))
    b = np.array([_SMOKE_BUCKET], np.int64)
    u = np.zeros(1, np.int64)
    fs = FeatureState(spec, ["UTC"], _SMOKE_BUCKET)
    fs.advance(u, b)
    raw = fs.features(u, b)
    rng = np.random.default_rng(0)
    try:
        if kind == "timing":
            ctx: Any = TimingContext(raw, np.ones(1, bool), u, b, fs, np.zeros(1, np.int64))
        else:
            if isinstance(enc, ContextEncoder):
                ids = enc.item_ids
                numeric = [c for c in enc.catalog_feature_names if not c.startswith("cat=")]
            else:
                ids, numeric = ("smoke0", "smoke1", "smoke2"), []
            frame = pd.DataFrame({"item_id": list(ids),
                                  **{c: np.zeros(len(ids)) for c in numeric}})
            catalog = ItemCatalog(frame, spec)
            if not isinstance(enc, ContextEncoder):
                enc = ContextEncoder(spec, tuple(ids), catalog.feature_names)
            ncat = spec.n_categories
            aff = fs.affinity(u, np.broadcast_to(np.arange(ncat), (1, ncat))) if ncat else None
            k = min(len(ids), 10)
            ctx = make_context(enc, catalog, raw, category_affinity=aff,
                               candidates=np.arange(k)[None])
        d = loaded.policy.decide_batch(ctx, rng)
        p = float(np.asarray(d.pscore)[0])
    except Exception as exc:
        raise ArtifactError(f"{loaded.label} cannot make a decision ({type(exc).__name__}: "
                            f"{exc})") from exc
    if not 0.0 < p <= 1.0:
        raise ArtifactError(f"{loaded.label} decided with probability {p}; a policy must "
                            "return the probability of its action, in (0, 1]")


def delay_arms(loaded: Loaded) -> tuple[int | None, ...]:
    """The delay arms (hours, None = drop) a delay artifact was trained over (its card's
    ``trigger_policy.arms``, kept on the policy by :func:`load_ref`)."""
    arms = getattr(loaded.policy, "trigger_arms", None)
    if arms is None:
        from pushrl.rules.triggers import DEFAULT_DELAYS_H

        return (*DEFAULT_DELAYS_H, None)
    return tuple(arms)


def smoke_delay(loaded: Loaded) -> None:
    """One delay decision of ``loaded`` on a synthetic trigger (a cart of a catalog-less
    item, one fresh UTC user at Monday noon) over its own arms
    (:func:`~pushrl.sim.trigger_context.delay_context`, the one delay context).

    Raises:
        ArtifactError: the policy raised or returned an invalid decision.
    """
    from pushrl.rules.guardrails import Guardrails
    from pushrl.sim.trigger_context import delay_context
    from pushrl.units import HOUR

    spec = FeatureSpec(("a", "b"), {}, tuple([1 / 168] * 168), (0.5, 0.5))
    u = np.zeros(1, np.int64)
    fs = FeatureState(spec, ["UTC"], _SMOKE_BUCKET)
    fs.advance(u, np.array([_SMOKE_BUCKET], np.int64))
    try:
        arms = delay_arms(loaded)
        ctx = delay_context(fs, u, np.array([_SMOKE_BUCKET * HOUR]), np.array(["cart"]),
                            np.array([-1]), np.array([0.0]), arms, Guardrails())
        d = loaded.policy.decide_batch(ctx, np.random.default_rng(0))
        p, a = float(np.asarray(d.pscore)[0]), int(np.asarray(d.action)[0])
    except Exception as exc:
        raise ArtifactError(f"{loaded.label} cannot make a delay decision "
                            f"({type(exc).__name__}: {exc})") from exc
    if not 0.0 < p <= 1.0 or not 0 <= a < len(arms):
        raise ArtifactError(f"{loaded.label} decided arm {a} with probability {p}; a delay "
                            f"policy must choose one of its {len(arms)} arms with a "
                            "probability in (0, 1]")


def prove(registry: str | Path, ref: str, kind: str) -> Loaded:
    """Load ``name@version`` (verified) and make one smoke decision with it.

    Raises:
        ArtifactError: it cannot be loaded, is not of ``kind``, or cannot decide.
    """
    try:
        loaded = load_ref(registry, ref, kind)
    except ArtifactError:
        raise
    except Exception as exc:  # a corrupt file surfaces as anything (BadZipFile, KeyError...)
        raise ArtifactError(f"{ref} does not load ({type(exc).__name__}: {exc})") from exc
    if kind == "delay":
        smoke_delay(loaded)
    else:
        smoke_decision(loaded, kind)
    return loaded


def load_ref(registry: str | Path, ref: str | None, kind: str) -> Loaded:
    """Load ``name@version`` from the registry (verified), or the default when ``None``."""
    if ref is None:
        return default_policy(kind)
    name, version = split_ref(ref)
    path = Path(registry) / name / version
    pol = load_policy(path)
    if kind == "delay":  # a delay artifact is an item-style policy over the arms
        from pushrl.policies.registry import read_card

        spec = read_card(path).get("trigger_policy")
        if not isinstance(spec, dict):
            raise ArtifactError(f"{ref} is not a trigger delay policy (its model card has no "
                                "trigger_policy; train one with `pushrl train triggers`)")
        setattr(pol, "trigger_arms", tuple(spec.get("arms") or (*_default_delays(), None)))  # noqa: B010
    elif getattr(pol, "kind", kind) != kind:
        raise ArtifactError(f"{ref} is a {pol.kind} policy, expected {kind}")
    pol.name, pol.version = name, version
    return Loaded(pol, ref)


def _default_delays() -> tuple[int, ...]:
    from pushrl.rules.triggers import DEFAULT_DELAYS_H

    return DEFAULT_DELAYS_H


def _fits(loaded: Loaded, kind: str) -> bool:
    """A loaded policy may serve slot ``kind`` (a delay artifact is an item-style policy)."""
    if kind == "delay":
        return hasattr(loaded.policy, "trigger_arms")
    return bool(loaded.policy.kind == kind)


def load_set(registry: str | Path, *, overrides: dict[str, Policy] | None = None,
             current: PolicySet | None = None, defaults: dict[str, Loaded] | None = None,
             fallback: bool = False) -> PolicySet:
    """Load the active and shadow policies named by the registry's pointer.

    Args:
        registry: Registry directory.
        overrides: Policies to use instead (keys ``timing``, ``item``, ``shadow_timing``,
            ``shadow_item``); for tests and embedding.
        current: The running set: policies whose reference did not change are reused (a
            swap only loads what changed; artifacts are immutable once written).
        defaults: What runs for a kind when nothing is promoted (default: the baselines of
            :data:`DEFAULTS`).
        fallback: At start-up: when an active artifact does not load or decide, serve the
            newest of its slot's history that does (else the default) and record why in
            :attr:`PolicySet.fallback`; a broken shadow is dropped. Otherwise it raises.
    """
    ptr = read_active(registry)
    ov = overrides or {}
    # the delay slot's default is the server's own delay policy (None), not a baseline
    dflt: dict[str, Loaded | None] = {"delay": None, **(defaults or {})}
    have = {} if current is None else {
        x.label: x for x in (current.timing, current.item, current.shadow_timing,
                             current.shadow_item, current.delay, current.shadow_delay)
        if x is not None}

    def get(ref: str | None, kind: str) -> Loaded | None:
        if ref is None and kind in dflt:
            return dflt[kind]
        label = ref if ref is not None else f"{DEFAULTS[kind]}@{BUILTIN}"
        hit = have.get(label)
        if hit is not None and _fits(hit, kind):
            return hit
        return default_policy(kind) if ref is None else prove(registry, ref, kind)

    notes: dict[str, str] = {}

    def get_or_fall_back(slot: dict[str, Any], kind: str) -> Loaded | None:
        try:
            return get(slot["active"], kind)
        except Exception as exc:
            if not fallback:
                raise
            err = exc
        for ref in [*reversed(slot.get("history") or []), None]:
            try:
                got = get(ref, kind)
            except Exception:  # an older generation may be broken too: try the next
                continue
            label = got.label if got is not None else "the server's own"
            notes[kind] = (f"active {slot['active']} is broken ({err}); serving {label}, "
                           "the last good one, until it is fixed or another is promoted")
            log.error("%s policy: %s", kind, notes[kind])
            return got
        raise err

    got: dict[str, Loaded | None] = {}
    for kind in KINDS:
        slot = ptr[kind]
        got[kind] = (Loaded(ov[kind], f"{ov[kind].name}@{ov[kind].version}") if kind in ov
                     else get_or_fall_back(slot, kind))
        sk = f"shadow_{kind}"
        if kind in NO_SHADOW:
            continue
        if sk in ov:
            got[sk] = Loaded(ov[sk], f"{ov[sk].name}@{ov[sk].version}")
        elif not slot["shadow"]:
            got[sk] = None
        else:
            try:
                got[sk] = get(slot["shadow"], kind)
            except Exception as exc:
                if not fallback:
                    raise
                got[sk] = None
                notes[sk] = f"shadow {slot['shadow']} is broken ({exc}); no shadow runs"
                log.error("%s policy: %s", sk, notes[sk])
    return PolicySet(timing=got["timing"], item=got["item"],  # type: ignore[arg-type]
                     shadow_timing=got["shadow_timing"], shadow_item=got["shadow_item"],
                     generation=int(ptr.get("generation", 0)), pointer=ptr, fallback=notes,
                     delay=got["delay"], shadow_delay=got.get("shadow_delay"))
