"""The policies a server runs: active and shadow, per kind, loaded from the registry.

Artifacts are verified (sha256) by :func:`pushrl.policies.registry.load_policy` before they are
loaded. When nothing is promoted the default baselines run (:data:`DEFAULTS`). The kill
switch replaces the timing policy by the safe default, which never sends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushrl.data.features import FeatureSpec
from pushrl.errors import ArtifactError
from pushrl.policies.base import ItemContext, ItemPolicy, Policy, TimingContext, TimingPolicy
from pushrl.policies.baselines import make_baseline
from pushrl.policies.registry import load_policy
from pushrl.serve.registry_ops import DEFAULTS, KINDS, read_active, split_ref

BUILTIN = "builtin"
log = logging.getLogger("pushrl.serve")


class SafeDefault(TimingPolicy):
    """The kill switch's policy: never send."""

    name = "safe-default"
    version = BUILTIN

    def _action_dist(self, ctx: TimingContext) -> Any:
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
    def encoder(self) -> Any:
        """The item-context encoder the policy was trained with, if any."""
        return getattr(self.policy, "encoder", None)

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
    safe: Loaded = field(default_factory=lambda: Loaded(SafeDefault(), f"safe-default@{BUILTIN}"))

    @property
    def spec(self) -> FeatureSpec | None:
        """The feature spec required by the active policies (item policy first)."""
        return self.item.spec or self.timing.spec


class UniformItem(ItemPolicy):
    """Uniformly random among the candidates: the fallback item policy when the default
    baseline is not installed (it also logs the most explorable data)."""

    name = "uniform"
    version = BUILTIN

    def _action_dist(self, ctx: ItemContext) -> Any:
        import numpy as np

        return np.asarray(ctx.mask, float)


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


def load_ref(registry: str | Path, ref: str | None, kind: str) -> Loaded:
    """Load ``name@version`` from the registry (verified), or the default when ``None``."""
    if ref is None:
        return default_policy(kind)
    name, version = split_ref(ref)
    pol = load_policy(Path(registry) / name / version)
    if getattr(pol, "kind", kind) != kind:
        raise ArtifactError(f"{ref} is a {pol.kind} policy, expected {kind}")
    pol.name, pol.version = name, version
    return Loaded(pol, ref)


def load_set(registry: str | Path, *, overrides: dict[str, Policy] | None = None,
             current: PolicySet | None = None) -> PolicySet:
    """Load the active and shadow policies named by the registry's pointer.

    Args:
        registry: Registry directory.
        overrides: Policies to use instead (keys ``timing``, ``item``, ``shadow_timing``,
            ``shadow_item``); for tests and embedding.
        current: The running set: policies whose reference did not change are reused (a
            swap only loads what changed; artifacts are immutable once written).
    """
    ptr = read_active(registry)
    ov = overrides or {}
    have = {} if current is None else {
        x.label: x for x in (current.timing, current.item, current.shadow_timing,
                             current.shadow_item) if x is not None}

    def get(ref: str | None, kind: str) -> Loaded:
        label = ref if ref is not None else f"{DEFAULTS[kind]}@{BUILTIN}"
        hit = have.get(label)
        if hit is not None and hit.policy.kind == kind:
            return hit
        return load_ref(registry, ref, kind)

    got: dict[str, Loaded | None] = {}
    for kind in KINDS:
        slot = ptr[kind]
        got[kind] = (Loaded(ov[kind], f"{ov[kind].name}@{ov[kind].version}") if kind in ov
                     else get(slot["active"], kind))
        sk = f"shadow_{kind}"
        if sk in ov:
            got[sk] = Loaded(ov[sk], f"{ov[sk].name}@{ov[sk].version}")
        else:
            got[sk] = get(slot["shadow"], kind) if slot["shadow"] else None
    return PolicySet(timing=got["timing"], item=got["item"],  # type: ignore[arg-type]
                     shadow_timing=got["shadow_timing"], shadow_item=got["shadow_item"],
                     generation=int(ptr.get("generation", 0)), pointer=ptr)
