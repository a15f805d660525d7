"""The server's template slot: which approved message template a sent push uses, and its copy.

With ``pushrl serve --templates templates/NAME[/vN]`` every sent scheduled push also gets a
template (issue 17): the template policy (``--template-policy DIR``: a ``pushrl templates
train`` artifact; default: uniform over the catalog's approved arms, the exploring logger)
picks an arm (uniform: the approved :data:`SCHEDULED_TRIGGER` templates of the catalog's
first locale; the server knows no user locale) given the user's pipeline features, the chosen
item and how recently the user saw each arm, then the arm's Jinja2 text is rendered with the
item's slots and the user's top category. The decision's ``template_id`` and
``pscore_template`` go into its ``decisions`` row and ``pushrl logs export`` writes them as
the pushlog columns of the same names, so the next round of ``pushrl templates train`` /
``evaluate`` learns from what the server did.

One definition of everything:

* Recency (the recovering arm) is :class:`~pushrl.data.features.TemplateRecency`, the
  pipeline's point-in-time state that ``template_recency_replay`` rebuilds offline; on start
  it is rebuilt from the log's own decisions (shows of arms of this policy).
* The context is :func:`~pushrl.data.item_context.template_context_arrays` (its tables:
  :class:`~pushrl.policies.template_fast.BoundTemplateScorer`, proved equal to VW at load);
  a model without the closed form decides with VW on the same context.
* Rendering is :class:`~pushrl.policies.templates.Renderer`: every check runs when the
  catalog or the items change (server start, ``PUT /v1/items``: refused with 422), never
  when a push is rendered. Renders are cached per (arm, item, top category) until the item
  catalog changes.

Not covered: trigger pushes (``reason trigger:*``) carry no template; the template shows in
an imported history (``pushrl state import``) do not seed the recency.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.data.features import ItemCatalog, TemplateRecency
from pushrl.data.item_context import CHOSEN_ITEM_PREFIX
from pushrl.errors import PushrlError, TemplateError
from pushrl.policies.base import ItemPolicy
from pushrl.policies.template_fast import BoundTemplateScorer, LinearTemplateScorer, NotLinear
from pushrl.policies.template_policy import TemplateArms, TemplatePolicy, UniformTemplate
from pushrl.policies.templates import Renderer, TemplateCatalog, load_catalog, template_slots
from pushrl.serve.state import ServerState
from pushrl.serve.store import LogReads, Statement
from pushrl.units import HOUR

log = logging.getLogger("pushrl.serve")
#: The decision row of a sent push gets its template (columns added by the store).
TEMPLATE_SQL = "UPDATE decisions SET template_id=?, pscore_template=? WHERE decision_id=?"
#: The catalog trigger of scheduled pushes (the arms of the default uniform policy).
SCHEDULED_TRIGGER = "recommendation"
#: Renders kept per catalog version of the items (a dict: cleared when full).
RENDER_CACHE = 100_000
#: Up to this many (arm, item, top category) copies are rendered when the items change.
PRERENDER = 50_000
#: Users' top categories kept by their category counts (a dict: cleared when full).
TOP_CACHE = 16_384


def template_uses_top(text: str) -> bool:
    """True when a template's text renders the user's top category."""
    return "top_category" in template_slots(text)


def policy_item_catalog(cat: ItemCatalog, shared_names: tuple[str, ...] | list[str],
                        what: str, error: type[PushrlError] = TemplateError) -> ItemCatalog:
    """``cat`` with its item features in the order a slot policy (template, channel) was
    trained on: the ``item_*`` columns of its VW layout's ``shared_names`` (the server keeps
    an item's features sorted by name); a missing or non-finite column is ``error``
    naming ``what`` (e.g. ``template policy tpl@v1``)."""
    pre = CHOSEN_ITEM_PREFIX
    want = [n[len(pre):] for n in shared_names if n.startswith(pre)]
    have = {n: j for j, n in enumerate(cat.feature_names)}
    missing = [n for n in want if n not in have]
    if missing:
        raise error(f"{what} needs item feature(s) {missing} the server's items lack (have "
                    f"{list(cat.feature_names)}); add them to the items or retrain on this "
                    "catalog")
    out = copy.copy(cat)
    out.features = cat.features[:, [have[n] for n in want]]
    bad = ~np.isfinite(out.features).all(axis=1)
    if bad.any():  # (a missing value makes the whole standardised column NaN)
        for w in want:
            miss = cat.raw[w].isna().to_numpy() if w in cat.raw else np.zeros(0, bool)
            if miss.any():
                j = int(np.argmax(miss))
                raise error(f"{what} needs item feature `{w}`, which item {cat.ids[j]!r} "
                            "lacks; give every item the features the policy was trained with")
        raise error(f"{what}: item features {want} are not finite for every item")
    out.feature_names = tuple(want)
    return out


class ServerTemplates:
    """Template choice and rendering for the sent pushes of a server.

    Args:
        catalog: The template catalog (validated on load).
        policy: A :class:`TemplatePolicy` or :class:`UniformTemplate`.
        label: The policy's ``name@version`` (``template_policy`` in answers).
        state: The server state (users, items, feature state).
        arm_ids: Arms of a uniform policy (a trained policy brings its own).
        seed: Seed of the template draws (their own generator: the engine's draws are
            unchanged by templates).

    Raises:
        TemplateError: an arm is not approved in the catalog, a slot's item column is
            missing or too long for the channel, or the policy's columns do not fit the
            server's catalog.
    """

    def __init__(self, catalog: TemplateCatalog, policy: ItemPolicy, label: str,
                 state: ServerState, *, arm_ids: tuple[str, ...] = (),
                 seed: int | None = None) -> None:
        self.catalog = catalog
        self.policy = policy
        self.label = label
        self.ref = f"{catalog.name}@{catalog.version}"
        ids = policy.arm_ids if isinstance(policy, TemplatePolicy) else arm_ids
        approved = {t.id for t in catalog.arms()}
        bad = [a for a in ids if a not in approved]
        if bad or not ids:
            raise TemplateError(f"template policy {label}: arm(s) {bad or '(none)'} are not "
                                f"approved templates of {self.ref}; approve them (`pushrl "
                                "templates approve`) or use the catalog the policy was trained "
                                "with")
        self.arm_ids: tuple[str, ...] = tuple(ids)
        self.arm_index = {a: j for j, a in enumerate(self.arm_ids)}
        self.rng = np.random.default_rng(None if seed is None else [seed, 17])
        self.linear: LinearTemplateScorer | None = None
        if isinstance(policy, TemplatePolicy):
            try:
                self.linear = LinearTemplateScorer.extract(policy)
            except NotLinear as exc:
                log.warning("template policy %s decides with VW text (%s)", label, exc)
        self.recency = TemplateRecency(len(state.users), len(self.arm_ids))
        self._bound: tuple[Any, Renderer, BoundTemplateScorer | None, TemplateArms] | None = None
        self._cache: dict[tuple[int, int, int], str] = {}
        self._uses_top: list[bool] = []
        self._top_fs: Any = None  # the feature state the top-category cache is of
        self._top_memo: dict[tuple[float, ...], int] = {}
        self.bind(state)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, catalog: str | Path, policy: str | None, state: ServerState, *,
             seed: int | None = None) -> ServerTemplates:
        """``--templates`` and ``--template-policy``: a catalog and a policy artifact
        directory (None: uniform over the catalog's approved arms)."""
        cat = load_catalog(catalog)
        if policy is None:  # scheduled pushes are recommendations; one locale (the first)
            rec = cat.arms(trigger=SCHEDULED_TRIGGER)
            ids = tuple(t.id for t in rec if t.locale == rec[0].locale) if rec else ()
            return cls(cat, UniformTemplate(), f"uniform-template@{cat.name}-{cat.version}",
                       state, arm_ids=ids, seed=seed)
        from pushrl.policies.registry import load_policy_of

        pol, path = load_policy_of(policy, "vw_template",
                                   f"--template-policy {policy}: not a template policy (a "
                                   "`pushrl templates train` artifact)")
        assert isinstance(pol, TemplatePolicy)  # the vw_template loader's type
        return cls(cat, pol, f"{path.parent.name}@{path.name}", state, seed=seed)

    def bind(self, state: ServerState) -> None:
        """(Re)bind the renderer and the policy's tables to the server's current items;
        every check of the items against the catalog runs here."""
        live = state.catalog
        # no items yet (a fresh server): nothing to bind the policy to; PUT /v1/items checks
        cat = self._policy_columns(live) if len(live) else live
        rend = self.renderer_for(state.items_frame(), state)
        bound = None
        arms = TemplateArms(self.arm_ids, state.spec, cat, self.ref)
        if self.linear is not None and len(live):
            try:
                bound = BoundTemplateScorer.bind(self.linear, cat.features, cat.feature_names)
            except NotLinear as exc:
                raise TemplateError(f"template policy {self.label} does not fit this server's "
                                    f"items: {exc}; train it on logs with this catalog") from None
        elif isinstance(self.policy, TemplatePolicy) and len(cat):
            from pushrl.data.features import N_FEATURES

            probe = arms.context(np.zeros((1, N_FEATURES), np.float32), np.zeros(1, np.int64),
                                 np.zeros((1, len(self.arm_ids)), np.float32))
            try:
                self.policy.vw._fmt.check(probe)
            except ValueError as exc:
                raise TemplateError(f"template policy {self.label} does not fit this "
                                    f"server's items: {exc}") from None
        self._bound = (live, rend, bound, arms)
        self._uses_top = [template_uses_top(t.text) for t in rend.arms]
        self._cache = {}
        self._prerender(rend, len(live))

    def _policy_columns(self, cat: ItemCatalog) -> ItemCatalog:
        """``cat`` with its item features in the order the template policy was trained on
        (:func:`policy_item_catalog`)."""
        if not isinstance(self.policy, TemplatePolicy):
            return cat
        return policy_item_catalog(cat, self.policy.vw.layout.shared_names,
                                   f"template policy {self.label}", TemplateError)

    def renderer_for(self, items: Any, state: ServerState) -> Renderer:
        """A renderer of the arms over ``items`` (an ``items`` table); raises
        :class:`TemplateError` when an item cannot fill a slot or renders too long."""
        arms = [self.catalog.get(a) for a in self.arm_ids]
        if len(items) == 0:
            items = items.assign(**{c: [] for c in ("name", "price", "discount_pct",
                                                    "category") if c not in items})
        rend = Renderer(self.catalog, items, state.spec.categories, arms)
        if self.uses_top(rend) and not rend.categories:
            raise TemplateError(f"{self.ref}: a template uses {{{{ top_category }}}} but the "
                                "server has no item categories")
        return rend

    @staticmethod
    def uses_top(rend: Renderer) -> bool:
        """True when some arm renders the user's top category."""
        return any(template_uses_top(t.text) for t in rend.arms)

    def _prerender(self, rend: Renderer, n_items: int) -> None:
        """Render every (arm, item, top category) copy now when there are at most
        :data:`PRERENDER` of them (a send is then a dict lookup); else renders are cached
        as they happen."""
        ncat = max(len(rend.categories), 1)
        tops = [range(ncat) if u else range(1) for u in self._uses_top]
        if n_items * sum(len(t) for t in tops) > PRERENDER:
            return
        for a, top in enumerate(tops):
            for i in range(n_items):
                for t in top:
                    self._cache[(a, i, t)] = rend.render(a, i, t)

    def check_item(self, state: ServerState, item_id: str, category: str | None,
                   features: dict[str, Any]) -> None:
        """Refuse an item change the templates could not render (before it is applied)."""
        frame = state.items_frame()
        row = {"item_id": item_id, "category": category, **features}
        if item_id in state.items:
            frame = frame[frame["item_id"] != item_id]
        import pandas as pd

        frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
        self._policy_columns(ItemCatalog(frame, state.spec))
        self.renderer_for(frame, state)

    # ------------------------------------------------------------------ decisions
    def _current(self, state: ServerState) -> tuple[Renderer, BoundTemplateScorer | None,
                                                     TemplateArms, ItemCatalog]:
        b = self._bound
        if b is None or b[0] is not state.catalog:
            self.bind(state)
            b = self._bound
        assert b is not None
        n = len(state.users)
        if self.recency.last.shape[0] < n:
            self.recency.add_users(n - self.recency.last.shape[0])
        return b[1], b[2], b[3], b[0]

    def choose(self, state: ServerState, u: np.ndarray, b: np.ndarray, raw: np.ndarray,
               items: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Arm, its probability and the rendered copy for ``n`` sent pushes of users ``u``
        in buckets ``b`` with raw pipeline features ``raw`` and server item indices
        ``items``; records the shows (the recency of later decisions)."""
        rend, bound, arms, _ = self._current(state)
        hours = self.recency.hours(u, b)
        if bound is not None:
            arm, p = bound.decide(raw, items, hours, self.rng)
        else:
            d = self.policy.decide_batch(arms.context(raw, items, hours), self.rng)
            arm, p = np.asarray(d.action, np.int64), np.asarray(d.pscore, np.float64)
        self.recency.record(u, b, arm)
        al = arm.tolist()
        top = self._top(state, u, rend, al)
        texts = []
        cache = self._cache
        if len(cache) > RENDER_CACHE:
            cache.clear()
        for a, i, t in zip(al, items.tolist(), top, strict=True):
            key = (a, i, t)
            txt = cache.get(key)
            if txt is None:
                txt = cache[key] = rend.render(a, i, t)
            texts.append(txt)
        return arm, p, texts

    def _top(self, state: ServerState, u: np.ndarray, rend: Renderer,
             arm: list[int]) -> list[int]:
        """The users' top categories (the pipeline's category affinity; ties: the first)
        where the chosen arm renders it, else 0 (the copy does not depend on it)."""
        need = [j for j, a in enumerate(arm) if self._uses_top[a]]
        out = [0] * len(arm)
        if not need:
            return out
        ncat = len(rend.categories)
        uu = u[need] if len(need) < len(arm) else u
        cats = np.arange(ncat)[None, :]  # (1, ncat): one user's row without a broadcast
        aff = state.fs.affinity(uu, cats if uu.size == 1 else np.repeat(cats, uu.size, axis=0))
        for j, t in zip(need, np.argmax(aff, axis=1).tolist(), strict=True):
            out[j] = t
        return out

    def _top_one(self, state: ServerState, user: int, n_categories: int) -> int:
        """:meth:`_top` of one user whose arm renders the top category, cached by the
        user's category counts (the affinity's only per-user input; the cache is per
        feature state), computed on a miss by the pipeline's affinity of one user
        (:meth:`FeatureState.affinity_one`, plain floats: ~5x cheaper than the array call)."""
        fs = state.fs
        if self._top_fs is not fs:
            self._top_fs, self._top_memo = fs, {}
        key = tuple(fs.a.cat[:, user].tolist())
        t = self._top_memo.get(key)
        if t is None:
            if len(self._top_memo) >= TOP_CACHE:
                self._top_memo.clear()
            aff = fs.affinity_one(user, n_categories)
            t = self._top_memo[key] = aff.index(max(aff))  # the first highest, as argmax
        return t

    def _apply_one(self, state: ServerState, o: dict[str, Any], user: int, bucket: int,
                   raw: list[float]) -> list[Statement] | None:
        """:meth:`apply` of one sent push on plain Python values (the request path; the
        same arm, probability and copy as the vectorised step); None when the closed form's
        one-row path does not apply (VW text, new-arm floor, non-finite features)."""
        rend, bound, _, _ = self._current(state)
        if bound is None:
            return None
        item = state.items[str(o["item_id"])]
        got = bound.decide_one(raw, item, self.recency.hours_one(user, bucket), self.rng)
        if got is None:
            return None
        a, p = got
        self.recency.record_one(user, bucket, a)
        top = self._top_one(state, user, len(rend.categories)) if self._uses_top[a] else 0
        cache = self._cache
        if len(cache) > RENDER_CACHE:
            cache.clear()
        key = (a, item, top)
        txt = cache.get(key)
        if txt is None:
            txt = cache[key] = rend.render(a, item, top)
        tid = self.arm_ids[a]
        o["template_id"], o["template_text"] = tid, txt
        o["pscore_template"], o["template_policy"] = p, self.label
        return [(TEMPLATE_SQL, (tid, p, o["decision_id"]))]

    def apply(self, state: ServerState, out: list[dict[str, Any]], u: np.ndarray,
              b: np.ndarray, raw: np.ndarray, send: np.ndarray) -> list[Statement]:
        """The engine's step: template the sent rows of a pass (``out``: their answers,
        updated in place; ``send`` ``(n,)`` bool) and return their log updates."""
        if send.size == 1 and send.item():  # one decision (a /v1/decide request)
            one = self._apply_one(state, out[0], u.item(), b.item(), raw.tolist()[0])
            if one is not None:
                return one
        idx = np.flatnonzero(send)
        items = np.array([state.items[str(out[i]["item_id"])] for i in idx.tolist()], np.int64)
        if idx.size < send.size:
            u, b, raw = u[idx], b[idx], raw[idx]
        arm, p, texts = self.choose(state, u, b, raw, items)
        stmts: list[Statement] = []
        ids, pl = self.arm_ids, p.tolist()
        for j, i in enumerate(idx.tolist()):
            o = out[i]
            tid = ids[arm[j]]
            o["template_id"], o["template_text"] = tid, texts[j]
            o["pscore_template"], o["template_policy"] = pl[j], self.label
            stmts.append((TEMPLATE_SQL, (tid, pl[j], o["decision_id"])))
        return stmts

    # ------------------------------------------------------------------ restart
    def rebuild(self, state: ServerState, log_: LogReads) -> None:
        """Rebuild the recency from the log's sent decisions with a template of this
        policy, in log order (what :func:`~pushrl.data.features.template_recency_replay`
        computes from the exported log)."""
        self.recency = TemplateRecency(len(state.users), len(self.arm_ids))
        rows = log_.query("SELECT user_id, ts, template_id FROM decisions WHERE sent=1 AND "
                          "template_id IS NOT NULL ORDER BY seq")
        keep = [(state.users[uid], ts // HOUR, self.arm_index[t]) for uid, ts, t in rows
                if t in self.arm_index and uid in state.users]
        for uu, bb, aa in keep:  # in order: a pair shown twice keeps its last two buckets
            self.recency.record_one(uu, bb, aa)
