"""A trained VW template policy without VW at decision time: its scores as a bilinear form.

A :class:`~pushrl.policies.template_policy.TemplatePolicy` is VW ``cb_explore_adf`` with
SquareCB over a linear regressor (``--cb_type mtr``). When every interaction pairs one
shared namespace (``U`` user, ``C`` logged context) with one candidate namespace (``I``
template id, ``A`` per-candidate features), the score of arm ``a`` is exactly bilinear::

    score[a] = [1, x] @ coef[a] @ [1, r_a]

with ``x`` the shared columns and ``r_a`` arm ``a``'s per-candidate columns (as VW sees them:
rounded to the formatter's 4 decimals). :meth:`LinearTemplateScorer.extract` reads ``coef``
off the model by asking VW for its per-action regressor scores (``partial_prediction``) on
``(1 + d_shared) x (1 + d_cand)`` probe contexts (unit vectors), reads SquareCB's ``gamma``
off VW's PMF, and then *proves* the form on random contexts (VW's PMF vs this one; refuses
above :data:`PARITY_TOL`). A decision is then one small ``einsum`` and SquareCB's closed
form, ~50x cheaper than writing and parsing VW text (the server's template slot; a model that
does not qualify keeps the VW path).

SquareCB (VW 9, ``cb_explore_adf_squarecb``): with ``K`` allowed actions, scores ``s`` (costs)
and ``a* = argmin s``, ``p[a] = 1 / (K + gamma (s[a] - s[a*]))`` for ``a != a*`` and
``p[a*] = 1 - sum``. ``gamma = gamma_scale * t ** gamma_exponent`` depends on the examples
learnt ``t``: the scorer is for a frozen model (what a server loads).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import copysign

import numpy as np

from pushrl.data.features import (
    F,
    encode,
    encode_row,
    encode_template_recency,
    encode_template_recency_one,
    warm_encode_row,
)
from pushrl.data.item_context import activity_bin, activity_bin_one, warm_activity_bins
from pushrl.policies.base import ItemContext
from pushrl.policies.template_policy import TemplatePolicy
from pushrl.policies.vw import _LIB, VWItemPolicy
from pushrl.policies.vw_format import NS_CAND, NS_CONTEXT, NS_USER, vw_name

#: Largest |VW PMF - bilinear PMF| accepted when the form is proved at extraction.
PARITY_TOL = 1e-4
_SHARED_NS, _CAND_NS = frozenset("UC"), frozenset("IA")
_SCALE = 10_000.0  # the VW formatter's 4 decimals
_SCALE64 = np.float64(_SCALE)  # a numpy scalar: float32 arrays times it are float64
_ACT7D = F["activity_7d"]


def _vw_round(v: float) -> float:
    """VW text's rounding of an encoded value: ``np.rint(v * 1e4)`` in float64 (``copysign``:
    rint keeps the sign of a zero). ValueError / OverflowError when ``v`` is not finite."""
    return copysign(float(round(v * _SCALE)), v)


class NotLinear(ValueError):
    """The model is not an exactly bilinear SquareCB scorer (use the VW path)."""


def _interactions(args: list[str]) -> list[str]:
    out = []
    for i, a in enumerate(args):
        if a in ("--interactions", "-q", "--quadratic"):
            out.append(args[i + 1])
        elif a in ("--cubic", "--keep", "--ignore", "--ignore_linear", "--redefine"):
            raise NotLinear(f"VW option {a} is not supported by the bilinear scorer")
    return out


def _check_args(args: list[str]) -> None:
    if "--squarecb" not in args or "--large_action_space" in args:
        raise NotLinear("only SquareCB exploration has the closed form (vw_args "
                        f"{' '.join(args)})")
    for q in _interactions(args):
        if len(q) != 2 or len({*q} & _SHARED_NS) != 1 or len({*q} & _CAND_NS) != 1:
            raise NotLinear(f"interaction {q!r} is not shared x candidate; the score is not "
                            "bilinear")


@dataclass(frozen=True)
class LinearTemplateScorer:
    """A frozen template policy's decision rule without VW.

    Attributes:
        policy: The template policy (its new-arm floor is applied as it applies it).
        coef: ``(n_arms, 1 + d_shared, 1 + d_cand)`` bilinear coefficients (float64).
        gamma: SquareCB's ``gamma`` of the loaded model.
        max_error: Largest PMF difference to VW seen when the form was proved.
    """

    policy: TemplatePolicy
    coef: np.ndarray
    gamma: float
    max_error: float

    @property
    def has_new(self) -> bool:
        """True when some arm gets the policy's new-arm exploration floor."""
        pol = self.policy
        return bool(pol.new_explore > 0 and (pol.shows < pol.new_min_shows).any())

    # ------------------------------------------------------------ extraction
    @classmethod
    def extract(cls, policy: TemplatePolicy, *, checks: int = 64,
                seed: int = 0) -> LinearTemplateScorer:
        """Read the bilinear form off ``policy``'s VW model and prove it.

        Args:
            policy: A trained template policy.
            checks: Random contexts on which VW's PMF and this one must agree within
                :data:`PARITY_TOL`.
            seed: Seed of those contexts.

        Raises:
            NotLinear: the model's options do not give a bilinear SquareCB scorer, or the
                proof fails.
        """
        vw = policy.vw
        _check_args(list(vw.args))
        lay = vw.layout
        if lay.static_names or (policy.vw.model is None and policy.vw.model_sha256 is None):
            raise NotLinear("static template features (or an unsaved, learning model) are not "
                            "supported by the bilinear scorer")
        coef, scores = bilinear_coef(vw)
        gamma = _gamma(policy, scores)
        out = cls(policy, coef, gamma, 0.0)
        err = out._prove(checks, seed)
        if err > PARITY_TOL:
            raise NotLinear(f"the bilinear form differs from VW by {err:.2e} in probability "
                            f"(> {PARITY_TOL:g}); serving with VW")
        return cls(policy, coef, gamma, err)

    def _prove(self, checks: int, seed: int) -> float:
        """Largest |PMF difference| to VW on ``checks`` random contexts (some with ties)."""
        rng = np.random.default_rng(seed)
        lay = self.policy.vw.layout
        d_s, d_c, k = len(lay.shared_names), len(lay.candidate_feature_names), self.coef.shape[0]
        err = 0.0
        for i in range(checks):
            x = np.round(rng.normal(0, 1, d_s) * (rng.random(d_s) < 0.6), 4)
            r = (rng.random((k, d_c)) < 0.5).astype(np.float64)
            if i % 4 == 0:
                r[:] = r[0]  # every arm alike: only the arm's own weights differ
            mask = np.asarray(rng.random(k) < 0.8) if i % 3 == 0 else np.ones(k, bool)
            if not mask.any():
                mask[0] = True
            _, pmf = vw_scores(self.policy.vw, x, r, mask)
            mine = self.pmf(self.scores(x[None], r[None]), mask[None])[0]
            err = max(err, float(np.abs(mine - pmf).max()))
        return err

    # ------------------------------------------------------------ decisions
    def scores(self, shared: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """``(n, n_arms)`` regressor scores (costs) of ``shared`` ``(n, d_shared)`` and
        ``cand`` ``(n, n_arms, d_cand)``, both rounded as VW text rounds them."""
        n = shared.shape[0]
        x = np.empty((n, 1 + shared.shape[1]))
        x[:, 0] = 1.0
        x[:, 1:] = np.rint(np.asarray(shared, np.float64) * _SCALE) / _SCALE  # as VW text
        r = np.empty((n, cand.shape[1], 1 + cand.shape[2]))
        r[:, :, 0] = 1.0
        r[:, :, 1:] = np.rint(np.asarray(cand, np.float64) * _SCALE) / _SCALE
        return np.einsum("ns,asj,naj->na", x, self.coef, r, optimize=False)

    def pmf(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """SquareCB's PMF ``(n, n_arms)`` over the allowed arms (0 elsewhere)."""
        s = np.where(mask, scores, np.inf)
        best = np.argmin(s, axis=1)
        k = mask.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):  # gamma 0 x inf on masked arms: dropped below
            p = np.where(mask, 1.0 / (k + self.gamma * (s - s[np.arange(len(s)), best][:, None])),
                         0.0)
        p[np.arange(len(s)), best] = 0.0
        p[np.arange(len(s)), best] = 1.0 - p.sum(axis=1)
        return p

    def action_dist(self, shared: np.ndarray, cand: np.ndarray,
                    mask: np.ndarray | None = None) -> np.ndarray:
        """The policy's normalised ``(n, n_arms)`` action distribution (what
        ``policy.action_dist`` gives on the same context, within :attr:`max_error`)."""
        m = np.ones((shared.shape[0], self.coef.shape[0]), bool) if mask is None else mask
        dist = self.policy.with_new_floor(self.pmf(self.scores(shared, cand), m), m)
        return self.policy._normalise(dist, m)

    def action_dist_ctx(self, ctx: ItemContext) -> np.ndarray:
        """:meth:`action_dist` of an :class:`ItemContext` built for the policy."""
        return self.action_dist(np.asarray(ctx.shared), np.asarray(ctx.candidate_features),
                                np.asarray(ctx.mask, bool))


def bilinear_coef(vw: VWItemPolicy) -> tuple[np.ndarray, np.ndarray]:
    """The bilinear coefficients ``(n_arms, 1 + d_shared, 1 + d_dyn)`` of a VW
    ``cb_explore_adf`` model whose interactions are all shared x candidate (the caller checks
    the options), read off VW's per-action scores on unit-vector probes, and those probe
    scores ``(1 + d_shared, 1 + d_dyn, n_arms)``. ``d_dyn``: the layout's dynamic candidate
    columns (static arm features are part of each arm's text, so of its coefficients)."""
    lay = vw.layout
    d_s, d_c = len(lay.shared_names), len(lay.dynamic_columns)
    k = len(lay.item_ids)
    scores = np.empty((1 + d_s, 1 + d_c, k))
    for s in range(1 + d_s):
        x = np.zeros(d_s)
        if s:
            x[s - 1] = 1.0
        for j in range(1 + d_c):
            r = np.zeros((k, d_c))
            if j:
                r[:, j - 1] = 1.0
            scores[s, j] = vw_scores(vw, x, r)[0]
    b = scores
    coef = np.empty((k, 1 + d_s, 1 + d_c))
    base = b[0, 0]
    coef[:, 0, 0] = base
    coef[:, 1:, 0] = (b[1:, 0] - base).T
    coef[:, 0, 1:] = (b[0, 1:] - base).T
    coef[:, 1:, 1:] = np.transpose(b[1:, 1:] - b[1:, :1] - b[:1, 1:] + base, (2, 0, 1))
    return coef, scores


def vw_scores(vw: VWItemPolicy, x: np.ndarray, r: np.ndarray,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """VW's per-arm regressor scores and PMF for one context: shared values ``x`` and
    per-arm dynamic candidate values ``r`` ``(n_arms, d_dyn)`` (arms outside ``mask`` left
    out)."""
    lay = vw.layout
    names = [vw_name(n) for n in lay.shared_names]
    ucols, ccols = set(lay.user_columns.tolist()), set(lay.context_columns.tolist())

    def toks(cols: set[int]) -> str:
        return " ".join(f"{names[j]}:{x[j]:.4f}" for j in sorted(cols) if x[j] != 0)

    lines = [f"shared |{NS_USER} {toks(ucols)} |{NS_CONTEXT} {toks(ccols)}"]
    cnames = [vw_name(lay.candidate_feature_names[j]) for j in lay.dynamic_columns]
    k = len(lay.item_ids)
    keep = np.ones(k, bool) if mask is None else mask
    for a in np.flatnonzero(keep).tolist():
        cand = " ".join(f"{cnames[j]}:{r[a, j]:.4f}" for j in range(r.shape[1]) if r[a, j])
        lines.append(f"{vw._fmt._item_text[a]} |{NS_CAND} {cand}")
    ws = vw._ws
    exs = _LIB._parse(ws, "\n".join(lines))
    try:
        _LIB.predict_multi(ws, exs)
        pmf = np.zeros(k)
        pmf[keep] = exs[0].get_action_scores()
        sc = np.full(k, np.nan)
        sc[keep] = [e.get_partial_prediction() for e in exs[1:]]
    finally:
        _LIB._finish_example_multi_ex(ws, exs)
    return sc, pmf


def _gamma(policy: TemplatePolicy, scores: np.ndarray) -> float:
    """SquareCB's ``gamma`` from VW's PMF on the probe with the widest score spread:
    ``1 / p[a] = K + gamma (s[a] - s[a*])`` for a non-greedy ``a``."""
    k = scores.shape[2]
    if k < 2:
        return 0.0
    flat = scores.reshape(-1, k)
    i = int(np.argmax(flat.max(axis=1) - flat.min(axis=1)))
    spread = float(flat[i].max() - flat[i].min())
    if spread <= 0:
        return 0.0  # every arm scores alike everywhere (untrained): gamma never matters
    d_c = scores.shape[1] - 1
    s, j = divmod(i, d_c + 1)
    lay = policy.vw.layout
    x = np.zeros(len(lay.shared_names))
    if s:
        x[s - 1] = 1.0
    r = np.zeros((k, d_c))
    if j:
        r[:, j - 1] = 1.0
    sc, pmf = vw_scores(policy.vw, x, r)
    a = int(np.argmax(sc))
    return float((1.0 / pmf[a] - k) / (sc[a] - sc.min()))


@dataclass(frozen=True)
class BoundTemplateScorer:
    """A :class:`LinearTemplateScorer` bound to an item catalog: the template context's
    columns folded into lookup tables, so a decision is ~20 numpy calls whatever its size.

    The score of arm ``a`` splits along the template context's shared columns
    (:func:`~pushrl.data.item_context.template_context_arrays`): ``encode(raw)`` (a matrix
    product), the one hot activity bin (a table row) and the chosen item's features (a table
    row per item, computed here), times ``[1, affinity = 1, tmpl_seen_24h, tmpl_seen_7d]``.
    Values are rounded as VW text rounds them, so the result equals :meth:`LinearTemplateScorer
    .action_dist` of the full context (``tests/policies/test_template_fast.py``).

    Attributes:
        scorer: The scorer.
        enc: ``(N_ENCODED, n_arms * 3)`` coefficients of the encoded user features.
        bins: ``(n_bins, n_arms * 3)`` constant + activity-bin terms.
        items: ``(n_items, n_arms * 3)`` chosen-item terms of each catalog item.
        has_new: Some arm gets the policy's new-arm floor (the frozen policy's
            :attr:`LinearTemplateScorer.has_new`).
    """

    scorer: LinearTemplateScorer
    enc: np.ndarray
    bins: np.ndarray
    items: np.ndarray
    has_new: bool = False
    _bins_l: list[list[float]] = field(init=False, repr=False, compare=False)
    _items_l: list[list[float]] = field(init=False, repr=False, compare=False)

    _scaled: dict[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # the tables as lists: the one-row path adds floats
        object.__setattr__(self, "_bins_l", self.bins.tolist())
        object.__setattr__(self, "_items_l", self.items.tolist())
        object.__setattr__(self, "_scaled", {})  # encoded value -> _vw_round (they repeat)
        warm_encode_row()
        warm_activity_bins()

    @classmethod
    def bind(cls, scorer: LinearTemplateScorer, item_features: np.ndarray,
             item_feature_names: tuple[str, ...]) -> BoundTemplateScorer:
        """Tables of ``scorer`` for a catalog's ``item_features`` ``(n_items, d_item)``.

        Raises:
            NotLinear: the policy's columns are not the template context's of this catalog
                (``ValueError``: the caller says which catalog the policy wants).
        """
        from pushrl.data.features import ENCODED_NAMES, N_ENCODED, TEMPLATE_RECENCY_NAMES
        from pushrl.data.item_context import (
            ACTIVITY_BIN_NAMES,
            AFFINITY,
            CHOSEN_ITEM_PREFIX,
        )

        lay = scorer.policy.vw.layout
        want = (*ENCODED_NAMES, *ACTIVITY_BIN_NAMES,
                *(CHOSEN_ITEM_PREFIX + n for n in item_feature_names))
        if lay.shared_names != want:
            raise NotLinear(f"the template policy's shared columns {list(lay.shared_names)} are "
                            f"not this catalog's template context {list(want)}")
        if lay.candidate_feature_names != (AFFINITY, *TEMPLATE_RECENCY_NAMES):
            raise NotLinear(f"unexpected template candidate columns "
                            f"{list(lay.candidate_feature_names)}")
        c = scorer.coef  # (K, 1 + d_s, 4): [1, affinity, seen_24h, seen_7d]
        k, nb = c.shape[0], len(ACTIVITY_BIN_NAMES)
        folded = np.concatenate([c[:, :, :1] + c[:, :, 1:2], c[:, :, 2:]], axis=2)  # aff = 1
        flat = np.transpose(folded, (1, 0, 2)).reshape(c.shape[1], k * 3)  # (1 + d_s, K*3)
        enc = flat[1:1 + N_ENCODED]
        bins = flat[0][None, :] + flat[1 + N_ENCODED:1 + N_ENCODED + nb]
        feats = np.rint(np.asarray(item_features, np.float64) * _SCALE) / _SCALE
        items = feats @ flat[1 + N_ENCODED + nb:]
        # encoded features enter as integers of 1e-4 (rounded as VW text): scale the table
        return cls(scorer, np.ascontiguousarray(enc / _SCALE), np.ascontiguousarray(bins),
                   np.ascontiguousarray(items), scorer.has_new)

    def action_dist(self, raw: np.ndarray, items: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """The template policy's ``(n, n_arms)`` distribution for raw pipeline features
        ``raw`` ``(n, N_FEATURES)``, chosen catalog items ``items`` ``(n,)`` and hours since
        each arm was shown ``hours`` ``(n, n_arms)`` (every arm allowed)."""
        s = self._scores(raw, items, hours)
        n = s.shape[0]
        sc = self.scorer
        rows = np.arange(n)
        best = np.argmin(s, axis=1)
        p = 1.0 / (s.shape[1] + sc.gamma * (s - s[rows, best][:, None]))
        p[rows, best] = 0.0
        p[rows, best] = 1.0 - p.sum(axis=1)
        if self.has_new:
            p = sc.policy.with_new_floor(p, np.ones(p.shape, bool))
        return p

    def _terms(self, raw: np.ndarray, items: np.ndarray,
               hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, n_arms, 3)`` score terms (constant, x tmpl_seen_24h, x tmpl_seen_7d) and the
        ``(n, n_arms, 2)`` recency encoding."""
        e = np.rint(encode(raw) * _SCALE64)  # float64 (VW text rounds the float64 value)
        y = e @ self.enc + self.bins[activity_bin(raw)] + self.items[items]
        return y.reshape(raw.shape[0], -1, 3), encode_template_recency(hours)

    def _scores(self, raw: np.ndarray, items: np.ndarray, hours: np.ndarray) -> np.ndarray:
        y, rec = self._terms(raw, items, hours)
        return y[:, :, 0] + y[:, :, 1] * rec[:, :, 0] + y[:, :, 2] * rec[:, :, 1]

    def decide(self, raw: np.ndarray, items: np.ndarray, hours: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Arm and its probability for each of ``n`` decisions (arguments as
        :meth:`action_dist`), drawn as ``policy.decide_batch`` draws (one uniform per row
        from ``rng``): the same arms for the same generator state.

        Returns:
            ``(n,)`` arm indices and ``(n,)`` probabilities.
        """
        if raw.shape[0] == 1 and not self.has_new:
            got = self.decide_one(raw[0].tolist(), int(items[0]), np.asarray(hours)[0].tolist(),
                                  rng)
            if got is not None:
                return np.array([got[0]], np.int64), np.array([got[1]])
        d = self.scorer.policy.sample(self.action_dist(raw, items, hours), rng)
        return np.asarray(d.action, np.int64), np.asarray(d.pscore, np.float64)

    def decide_one(self, raw: list[float], item: int, hours: Sequence[float],
                   rng: np.random.Generator) -> tuple[int, float] | None:
        """:meth:`decide` of ONE decision in plain Python floats (the request path of
        ``/v1/decide``: a numpy call costs ~1 us there), the same arithmetic as the
        vectorised path, so the same arm and the same probability bit for bit
        (``tests/policies/test_template_fast.py``).

        Args:
            raw: The decision's ``N_FEATURES`` raw pipeline features (``raw[i].tolist()``).
            item: Its chosen catalog item index.
            hours: Hours since each arm was shown (:meth:`TemplateRecency.hours_one`).
            rng: One uniform is drawn from it, as :meth:`decide` draws.

        Returns:
            ``(arm, probability)``, or None (nothing drawn) when the one-row path does not
            apply: some arm gets the new-arm floor, or a feature is not finite.
        """
        if self.has_new:
            return None
        enc = encode_row(raw)
        scaled = self._scaled
        try:
            e = [scaled[v] for v in enc]
        except KeyError:  # round the new values only (a miss is a new activity share)
            if len(scaled) > 65_536:
                scaled.clear()
            try:
                e = [scaled[v] if v in scaled else scaled.setdefault(v, _vw_round(v))
                     for v in enc]
            except (ValueError, OverflowError):  # NaN / inf: the vectorised path decides
                return None
        # the vectorised path's matmul on the same (1, N_ENCODED) float64 row
        m = (np.frombuffer(array("d", e)).reshape(1, -1) @ self.enc).tolist()[0]
        bins, its = self._bins_l[activity_bin_one(raw[_ACT7D])], self._items_l[item]
        s = []  # per arm: (constant + recency terms), added as the vectorised path adds them
        for a, (r24, r7d) in enumerate(encode_template_recency_one(hours)):
            j, j1, j2 = 3 * a, 3 * a + 1, 3 * a + 2
            s.append(((m[j] + bins[j]) + its[j]) + ((m[j1] + bins[j1]) + its[j1]) * r24
                     + ((m[j2] + bins[j2]) + its[j2]) * r7d)
        k = len(s)
        best = s.index(min(s))  # the first lowest, as argmin
        low, g = s[best], self.scorer.gamma
        p = [0.0 if a == best else 1.0 / (k + g * (s[a] - low)) for a in range(k)]
        p[best] = 1.0 - sum(p)
        u = rng.random()  # the same double as rng.random((1, 1))
        c, cdf = 0.0, []
        for q in p:
            c += q
            cdf.append(c)
        u *= cdf[-1]
        a = min(sum(u >= x for x in cdf), k - 1)
        return a, p[a]
