"""Message templates: a versioned, checksum-verified catalog of push copy and its renderer.

Layout (the policy registry's, :mod:`pushrl.policies.registry`)::

    templates/<name>/<vN>/card.json       sha256 of every file, kind "templates"
    templates/<name>/<vN>/catalog.json    channels, slot limits, phrase parts, templates

A version is never edited: ``pushrl templates propose`` and ``approve`` write the next
version, so an arm's copy is exactly what a logged ``template_id`` showed.

A template is Jinja2 text rendered in a :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, e.g. ``"{{ item_name }} is {{ discount_pct }}% off"``.
Slots (:data:`SLOTS`) are filled from the item and the user. Everything a send could trip
over is checked when a catalog is LOADED, never when a push is rendered:

* syntax, an unknown slot, an unknown channel / status / duplicate id
  (:meth:`TemplateCatalog.validate`);
* the worst-case length: every slot at its declared ``slot_max_chars`` must fit the channel's
  ``max_chars`` (:meth:`TemplateCatalog.validate`);
* against an item catalog (:class:`Renderer`): every slot a template uses has its column,
  every item's value fits its slot limit, and (catalogs up to :data:`EXHAUSTIVE_ITEMS` items)
  every item renders within the limit.

Only ``approved`` templates are arms; ``pending`` ones (proposed by a generator,
:mod:`pushrl.policies.template_gen`) wait for ``pushrl templates approve ID``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from pushrl.errors import ArtifactError, TemplateError
from pushrl.policies.registry import resolve, save_artifact, verify_artifact

CATALOG_FILE = "catalog.json"
CATALOG_FORMAT = "pushrl/templates/v1"
#: Slot -> where its value comes from.
SLOTS: dict[str, str] = {
    "item_name": "items.name (items.item_id when the table has no name column)",
    "category": "items.category",
    "price": "items.price (2 decimals, the locale's decimal mark)",
    "discount_pct": "items.discount_pct (whole percent)",
    "top_category": "the user's top category (the feature pipeline's category affinity)",
}
#: Item column each item slot needs (``item_name`` falls back to ``item_id``).
SLOT_COLUMNS: dict[str, str] = {"item_name": "name", "category": "category", "price": "price",
                                "discount_pct": "discount_pct"}
STATUSES: tuple[str, ...] = ("approved", "pending", "rejected")
PARTS: tuple[str, ...] = ("opener", "body", "cta")
#: Catalogs up to this many items are rendered in full at load time (larger: worst case only).
EXHAUSTIVE_ITEMS = 5000
_DECIMAL_COMMA = frozenset({"de", "fr", "es", "it", "pt", "nl"})


@dataclass(frozen=True)
class Template:
    """One copy variant (an arm once approved).

    Attributes:
        id: Unique id; what the logs' ``template_id`` column records.
        trigger: Campaign / trigger type (e.g. ``recommendation``, ``price_drop``).
        locale: Language tag (``en``, ``de``).
        channel: Delivery channel (a key of the catalog's ``channels``).
        text: Jinja2 text with :data:`SLOTS`.
        status: ``approved`` (an arm), ``pending`` (proposed) or ``rejected``.
        source: ``human`` or ``generator:<name>``.
    """

    id: str
    trigger: str
    locale: str
    channel: str
    text: str
    status: str = "approved"
    source: str = "human"


@dataclass(frozen=True)
class Phrase:
    """An approved phrase part the deterministic generator combines (``opener``, ``body``,
    ``cta``), for one trigger and locale."""

    id: str
    part: str
    trigger: str
    locale: str
    text: str


def _env(locale: str) -> SandboxedEnvironment:
    comma = locale.split("-")[0] in _DECIMAL_COMMA

    def finalize(v: Any) -> Any:
        if isinstance(v, float | np.floating):
            s = f"{float(v):.2f}"
            return s.replace(".", ",") if comma else s
        return v

    return SandboxedEnvironment(undefined=StrictUndefined, finalize=finalize, autoescape=False,
                                keep_trailing_newline=False)


def template_slots(text: str, where: str = "template") -> set[str]:
    """The slots ``text`` uses; one-line :class:`TemplateError` for bad syntax or an unknown
    slot."""
    try:
        ast = _env("en").parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: Jinja2 syntax error on line {exc.lineno}: {exc.message}; "
                            "fix the text (slots are written {{ item_name }})") from None
    used = set(meta.find_undeclared_variables(ast))
    unknown = sorted(used - set(SLOTS))
    if unknown:
        raise TemplateError(f"{where} uses unknown slot(s) {unknown}; known slots: "
                            f"{', '.join(SLOTS)}")
    return used


def _worst_values(slot_max: dict[str, int]) -> dict[str, Any]:
    """Slot values of the declared maximum length (numbers: the largest that fit)."""
    n = slot_max
    return {"item_name": "W" * n["item_name"], "category": "W" * n["category"],
            "top_category": "W" * n["top_category"],
            "price": float("9" * max(n["price"] - 3, 1) + ".99"),
            "discount_pct": int("9" * max(n["discount_pct"], 1))}


def _render(env: SandboxedEnvironment, text: str, values: dict[str, Any], where: str) -> str:
    try:
        return env.from_string(text).render(**values)
    except (UndefinedError, SecurityError, TypeError, ValueError,
            ArithmeticError) as exc:
        raise TemplateError(f"{where} fails to render: {exc}; fix the text") from None


@dataclass
class TemplateCatalog:
    """A template catalog version.

    Attributes:
        name: Catalog name (registry directory).
        version: ``vN``.
        channels: Channel -> maximum rendered characters.
        slot_max_chars: Slot -> the longest value it may take (the worst case of the length
            check; items longer than this are refused when a :class:`Renderer` loads).
        templates: Every template, any status.
        phrases: Approved phrase parts (input of the deterministic generator).
    """

    name: str
    version: str
    channels: dict[str, int]
    slot_max_chars: dict[str, int]
    templates: tuple[Template, ...]
    phrases: tuple[Phrase, ...] = ()
    notes: str = ""
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {t.id: i for i, t in enumerate(self.templates)}

    # ---------------------------------------------------------------- (de)serialise
    @classmethod
    def from_dict(cls, d: Any, *, name: str = "", version: str = "",
                  where: str = "catalog") -> TemplateCatalog:
        """Parse and :meth:`validate` a ``catalog.json`` object."""
        if not isinstance(d, dict) or d.get("format") != CATALOG_FORMAT:
            raise TemplateError(f"{where}: not a template catalog (`format` must be "
                                f"{CATALOG_FORMAT!r})")
        try:
            tmpl = tuple(Template(**t) for t in d.get("templates", []))
            phr = tuple(Phrase(**p) for p in d.get("phrases", []))
            channels = {str(k): int(v) for k, v in d["channels"].items()}
            slot_max = {str(k): int(v) for k, v in d["slot_max_chars"].items()}
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise TemplateError(f"{where}: malformed catalog ({type(exc).__name__}: {exc}); "
                                "every template needs id, trigger, locale, channel, text") from None
        cat = cls(name or str(d.get("name", "")), version, channels, slot_max, tmpl, phr,
                  str(d.get("notes", "")))
        cat.validate(where)
        return cat

    def to_dict(self) -> dict[str, Any]:
        """The ``catalog.json`` object."""
        return {"format": CATALOG_FORMAT, "name": self.name, "notes": self.notes,
                "channels": dict(self.channels), "slot_max_chars": dict(self.slot_max_chars),
                "phrases": [asdict(p) for p in self.phrases],
                "templates": [asdict(t) for t in self.templates]}

    # ---------------------------------------------------------------- checks
    def validate(self, where: str = "catalog") -> None:
        """Self-contained load-time checks (see the module docstring); one-line
        :class:`TemplateError` naming the template and the fix."""
        missing = sorted(set(SLOTS) - set(self.slot_max_chars))
        if missing:
            raise TemplateError(f"{where}: `slot_max_chars` lacks {missing}; declare the longest "
                                "value of every slot")
        ids = [t.id for t in self.templates] + [p.id for p in self.phrases]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise TemplateError(f"{where}: duplicate id(s) {dup}; ids must be unique")
        worst = _worst_values(self.slot_max_chars)
        for p in self.phrases:
            if p.part not in PARTS:
                raise TemplateError(f"{where}: phrase {p.id!r} has part {p.part!r}; use one of "
                                    f"{', '.join(PARTS)}")
            template_slots(p.text, f"{where}: phrase {p.id!r}")
        for t in self.templates:
            w = f"{where}: template {t.id!r}"
            if t.status not in STATUSES:
                raise TemplateError(f"{w} has status {t.status!r}; use one of "
                                    f"{', '.join(STATUSES)}")
            if t.channel not in self.channels:
                raise TemplateError(f"{w} uses channel {t.channel!r}, which the catalog does not "
                                    f"define; known: {', '.join(self.channels)}")
            template_slots(t.text, w)
            n = len(_render(_env(t.locale), t.text, worst, w))
            limit = self.channels[t.channel]
            if n > limit:
                raise TemplateError(f"{w} renders to {n} characters with every slot at its "
                                    f"`slot_max_chars`, over the {t.channel} limit of {limit}; "
                                    "shorten the text or lower the slot limits")

    # ---------------------------------------------------------------- queries
    def get(self, template_id: str) -> Template:
        """The template ``template_id``; :class:`TemplateError` names the known ids."""
        if template_id not in self._index:
            raise TemplateError(f"unknown template {template_id!r} in {self.name}@{self.version}; "
                                f"known: {', '.join(self._index) or 'none'}")
        return self.templates[self._index[template_id]]

    def arms(self, *, trigger: str | None = None, locale: str | None = None,
             channel: str | None = None) -> tuple[Template, ...]:
        """Approved templates (the arms), optionally of one trigger / locale / channel, in
        catalog order."""
        return tuple(t for t in self.templates if t.status == "approved"
                     and (trigger is None or t.trigger == trigger)
                     and (locale is None or t.locale == locale)
                     and (channel is None or t.channel == channel))

    def with_templates(self, new: Sequence[Template]) -> TemplateCatalog:
        """A copy with ``new`` templates appended (validated)."""
        out = replace(self, templates=(*self.templates, *new))
        out.validate(f"{self.name}")
        return out

    def with_status(self, template_id: str, status: str) -> TemplateCatalog:
        """A copy with ``template_id``'s status changed (validated)."""
        t = self.get(template_id)
        if t.status == status:
            raise TemplateError(f"template {template_id!r} is already {status}")
        out = replace(self, templates=tuple(replace(x, status=status) if x.id == template_id
                                            else x for x in self.templates))
        out.validate(f"{self.name}")
        return out


# -------------------------------------------------------------------- registry
def load_catalog(path: str | Path) -> TemplateCatalog:
    """Verify (sha256) and load a catalog: ``templates/NAME`` (newest version) or
    ``templates/NAME/vN``. A relative path is looked up in the working directory, the
    checkout, then the wheel (:mod:`pushrl.resources`)."""
    from pushrl import resources

    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = resources.find(p) or p
    if not p.exists():
        raise TemplateError(f"no template catalog at {path}; pass templates/NAME[/vN] "
                            "(shipped: templates/default)")
    try:
        d = resolve(p)
        card = verify_artifact(d)
    except ArtifactError as exc:
        raise TemplateError(f"template catalog {path}: {exc}") from None
    if card.get("kind") != "templates" or CATALOG_FILE not in card.get("files", {}):
        raise TemplateError(f"{d} is not a template catalog (card kind "
                            f"{card.get('kind')!r}); pass templates/NAME")
    try:
        raw = json.loads((d / CATALOG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{d / CATALOG_FILE}: not valid JSON ({exc})") from None
    return TemplateCatalog.from_dict(raw, name=d.parent.name, version=d.name,
                                     where=f"{d.parent.name}@{d.name}")


def save_catalog(catalog: TemplateCatalog, out: str | Path, *,
                 change: str = "") -> TemplateCatalog:
    """Write ``catalog`` as the next version of ``out`` (``templates/NAME``); returns it with
    its new version."""
    catalog.validate(catalog.name)
    body = json.dumps(catalog.to_dict(), indent=2, ensure_ascii=False).encode()
    out = Path(out)
    # never reuse a version number the catalog already had elsewhere (a shipped v1 copied
    # into a fresh directory continues at v2): name@version identifies the copy
    have = [int(p.name[1:]) for p in out.glob("v*") if p.name[1:].isdigit()] if out.is_dir() else []
    prev = int(catalog.version[1:]) if catalog.version[1:].isdigit() else 0
    target = out / f"v{max([prev, *have]) + 1}"
    d = save_artifact(target, kind="templates", loader="templates", files={CATALOG_FILE: body},
                      card={"change": change, "previous": catalog.version or None},
                      versioned=False)
    return replace(catalog, name=d.parent.name, version=d.name)


# -------------------------------------------------------------------- rendering
class Renderer:
    """Approved templates of a catalog bound to an item catalog: validated once, rendered
    fast (precompiled templates, precomputed item slot values).

    Args:
        catalog: The template catalog.
        items: The ``items`` table (``item_id``; ``name``, ``category``, ``price``,
            ``discount_pct`` when templates use them).
        categories: Category vocabulary the user's top category comes from.
        arms: The templates to bind (default: every approved one).

    Raises:
        TemplateError: a slot without its item column, an item value over its slot limit,
            or (up to :data:`EXHAUSTIVE_ITEMS` items) a rendering over the channel limit.
    """

    def __init__(self, catalog: TemplateCatalog, items: pd.DataFrame,
                 categories: Sequence[str], arms: Sequence[Template] | None = None) -> None:
        self.catalog = catalog
        self.arms: tuple[Template, ...] = tuple(catalog.arms() if arms is None else arms)
        if not self.arms:
            raise TemplateError(f"{catalog.name}@{catalog.version} has no approved template "
                                "for this selection; approve one (`pushrl templates approve`)")
        self.ids: tuple[str, ...] = tuple(t.id for t in self.arms)
        self.categories = tuple(map(str, categories))
        self._compiled = [_env(t.locale).from_string(t.text) for t in self.arms]
        used = [template_slots(t.text) for t in self.arms]
        self.item_values = self._item_values(items, set().union(*used))
        self._check_items(items, used)

    def _item_values(self, items: pd.DataFrame, used: set[str]) -> list[dict[str, Any]]:
        n = len(items)
        cols: dict[str, list[Any]] = {}
        where = f"{self.catalog.name}@{self.catalog.version}"
        for slot, col in SLOT_COLUMNS.items():
            if slot not in used:
                continue
            src = col if col in items.columns else ("item_id" if slot == "item_name" else None)
            if src is None:
                users = [t.id for t in self.arms if slot in template_slots(t.text)]
                raise TemplateError(f"{where}: template(s) {users} use {{{{ {slot} }}}} but the "
                                    f"items table has no `{col}` column; add it or reject them")
            s = items[src]
            if s.isna().any():
                raise TemplateError(f"{where}: items.{src} is missing for "
                                    f"{int(s.isna().sum())} item(s) (first "
                                    f"{items['item_id'].iloc[int(np.argmax(s.isna()))]!r}) but "
                                    f"{{{{ {slot} }}}} needs it")
            if slot == "price":
                cols[slot] = [float(v) for v in s.to_numpy(float)]
            elif slot == "discount_pct":
                cols[slot] = [int(round(v)) for v in s.to_numpy(float)]
            else:
                cols[slot] = [str(v) for v in s]
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]

    def _check_items(self, items: pd.DataFrame, used: list[set[str]]) -> None:
        where = f"{self.catalog.name}@{self.catalog.version}"
        lim = self.catalog.slot_max_chars
        ids = items["item_id"].astype(str).tolist()
        for slot in ("item_name", "category", "price", "discount_pct"):
            if not self.item_values or slot not in self.item_values[0]:
                continue
            lens = [len(_fmt(v)) for v in (r[slot] for r in self.item_values)]
            j = int(np.argmax(lens))
            if lens[j] > lim[slot]:
                raise TemplateError(f"{where}: item {ids[j]!r} has a {slot} of {lens[j]} "
                                    f"characters, over slot_max_chars.{slot}={lim[slot]}; "
                                    "raise the limit (if every template still fits) or shorten it")
        long_cat = max(self.categories, key=len, default="")
        if any("top_category" in u for u in used) and len(long_cat) > lim["top_category"]:
            raise TemplateError(f"{where}: category {long_cat!r} is longer than "
                                f"slot_max_chars.top_category={lim['top_category']}")
        if len(self.item_values) > EXHAUSTIVE_ITEMS:
            return
        for a, t in enumerate(self.arms):
            limit = self.catalog.channels[t.channel]
            for i, vals in enumerate(self.item_values):
                try:
                    n = len(self._compiled[a].render(**vals, top_category=long_cat))
                except (UndefinedError, SecurityError, TypeError, ValueError,
                        ArithmeticError) as exc:
                    raise TemplateError(f"{where}: template {t.id!r} fails to render item "
                                        f"{ids[i]!r}: {exc}") from None
                if n > limit:
                    raise TemplateError(f"{where}: template {t.id!r} renders item {ids[i]!r} "
                                        f"to {n} characters, over the {t.channel} limit of "
                                        f"{limit}; shorten the text")

    def index(self, template_id: str) -> int:
        """Arm index of ``template_id``."""
        try:
            return self.ids.index(template_id)
        except ValueError:
            raise TemplateError(f"template {template_id!r} is not an approved arm here; "
                                f"arms: {', '.join(self.ids)}") from None

    def render(self, arm: int, item: int, top_category: int | str) -> str:
        """The text of arm ``arm`` for catalog item ``item`` and the user's top category
        (index into ``categories`` or its name)."""
        top = top_category if isinstance(top_category, str) else self.categories[top_category]
        return str(self._compiled[arm].render(**self.item_values[item], top_category=top))


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
