"""Content generation with a human in the loop: generators propose, people approve.

A generator is anything with a ``name`` and a ``propose`` method (:class:`TemplateGenerator`);
what it returns is ``pending`` and never an arm until ``pushrl templates approve ID``. The
shipped :class:`CombineGenerator` is deterministic: every ``opener + body + cta`` combination
of the catalog's approved phrase parts for one trigger and locale, in catalog order, minus
texts that already exist. A model-based generator (an LLM behind an API, say) implements the
same protocol and is named on the command line as ``module:attribute``
(:func:`get_generator`); its proposals pass the same load-time checks as hand-written copy.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
from typing import Protocol, runtime_checkable

from pushrl.errors import TemplateError
from pushrl.policies.templates import PARTS, Template, TemplateCatalog


@runtime_checkable
class TemplateGenerator(Protocol):
    """Proposes new template variants for one trigger and locale."""

    name: str

    def propose(self, catalog: TemplateCatalog, *, trigger: str, locale: str,
                channel: str, n: int) -> list[Template]:
        """Up to ``n`` new variants (their status is ignored: the catalog makes them
        ``pending``)."""
        ...


class CombineGenerator:
    """Deterministic: combinations of approved phrase parts (``opener body cta``)."""

    name = "combine"

    def propose(self, catalog: TemplateCatalog, *, trigger: str, locale: str,
                channel: str, n: int) -> list[Template]:
        """The first ``n`` combinations (opener-major order) whose text is new."""
        by_part = {p: [x for x in catalog.phrases
                       if x.part == p and x.trigger == trigger and x.locale == locale]
                   for p in PARTS}
        empty = [p for p, xs in by_part.items() if not xs]
        if empty:
            raise TemplateError(f"{catalog.name}@{catalog.version} has no {'/'.join(empty)} "
                                f"phrase for trigger {trigger!r} locale {locale!r}; add phrase "
                                "parts to the catalog first")
        seen = {t.text for t in catalog.templates}
        out: list[Template] = []
        for combo in itertools.product(*(by_part[p] for p in PARTS)):
            text = " ".join(x.text for x in combo)
            if text in seen:
                continue
            seen.add(text)
            digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
            out.append(Template(f"gen_{trigger}_{locale}_{digest}", trigger, locale, channel,
                                text, "pending", f"generator:{self.name}"))
            if len(out) >= n:
                break
        return out


GENERATORS: dict[str, type] = {"combine": CombineGenerator}


def get_generator(name: str) -> TemplateGenerator:
    """A registered generator (``combine``) or ``module:attribute`` naming a class or
    instance that implements :class:`TemplateGenerator`."""
    if name in GENERATORS:
        return GENERATORS[name]()  # type: ignore[no-any-return]
    mod, sep, attr = name.partition(":")
    if not sep:
        raise TemplateError(f"unknown generator {name!r}; use {', '.join(GENERATORS)} or "
                            "module:attribute")
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise TemplateError(f"generator {name!r} cannot be imported ({exc})") from None
    gen = obj() if isinstance(obj, type) else obj
    if not isinstance(gen, TemplateGenerator):
        raise TemplateError(f"generator {name!r} has no `name` and `propose(catalog, *, "
                            "trigger, locale, channel, n)`")
    return gen


def propose(catalog: TemplateCatalog, generator: TemplateGenerator, *, trigger: str,
            locale: str, channel: str = "push", n: int = 3) -> tuple[TemplateCatalog,
                                                                     list[Template]]:
    """``catalog`` with up to ``n`` new ``pending`` variants from ``generator`` (validated
    like hand-written copy: an unknown slot or a text over the channel limit is refused)."""
    if n < 1:
        raise TemplateError(f"--n must be >= 1, got {n}")
    if channel not in catalog.channels:
        raise TemplateError(f"unknown channel {channel!r}; known: {', '.join(catalog.channels)}")
    ids = {t.id for t in catalog.templates}
    new = []
    for t in generator.propose(catalog, trigger=trigger, locale=locale, channel=channel, n=n):
        if t.id in ids:
            raise TemplateError(f"generator {generator.name!r} proposed an existing id {t.id!r}")
        new.append(Template(t.id, t.trigger, t.locale, t.channel, t.text, "pending",
                            t.source if t.source.startswith("generator:")
                            else f"generator:{generator.name}"))
    if not new:
        return catalog, []
    return catalog.with_templates(new), new
