"""A trained VW delay policy without VW at decision time: its scores as a bilinear form and
epsilon-greedy's closed form.

The delay learner (:mod:`pushrl.train.delay`) is VW ``cb_explore_adf`` with ``--epsilon``
over a linear regressor whose interactions pair a shared namespace (``U`` user, ``C``
trigger context) with a candidate one (``I`` arm id and its static columns, ``A`` per-round
arm columns). The score of arm ``a`` is then exactly bilinear, as for the template slot
(:mod:`pushrl.policies.template_fast`, which reads the coefficients off VW with
:func:`~pushrl.policies.template_fast.bilinear_coef`)::

    score[a] = [1, x] @ coef[a] @ [1, r_a]

with ``x`` the shared columns and ``r_a`` arm ``a``'s dynamic columns, both rounded as VW
text rounds them (``I`` is constant per arm, so ``IA`` and ``CI`` fold into ``coef[a]``; an
interaction of two shared or two ``A`` namespaces is refused). Epsilon-greedy (VW 9 ``cb_explore_adf_greedy``), with ``K`` allowed arms
and ``T`` arms tied at the lowest score (cost)::

    p[a] = eps / K + (1 - eps) / T   for the tied best arms,   eps / K   otherwise

in float32 as VW computes it (tied: within VW's relative tolerance :data:`TIE_RTOL` of the
lowest; an arm within float rounding of that boundary may be classed otherwise, which the
parity test counts). :meth:`LinearDelayScorer.extract` proves the form on random
contexts (VW's PMF vs this one; refuses a model that disagrees by more than
:data:`PARITY_TOL`). A decision is one small ``einsum``: ~VW's text formatting and parsing
saved (the server's delay choice, :class:`pushrl.serve.triggers.ContextDelay`).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from pushrl.policies.base import BatchDecision, ItemContext
from pushrl.policies.template_fast import (
    _SCALE,
    _SHARED_NS,
    NotLinear,
    _interactions,
    bilinear_coef,
    vw_scores,
)
from pushrl.policies.vw import VWItemPolicy

#: Largest |VW PMF - closed-form PMF| accepted when the form is proved at extraction.
PARITY_TOL = 1e-6
#: VW's tie tolerance (``VW::math::are_same_rel``, ``DEFAULT_TOLERANCE``): arms whose scores
#: are this close (relative) to the lowest share the greedy mass.
TIE_RTOL = 1e-4


def _epsilon(args: list[str]) -> float:
    """``--epsilon`` of an epsilon-greedy ``cb_explore_adf`` model (refuses the others)."""
    other = {"--squarecb", "--cover", "--bag", "--large_action_space", "--softmax",
             "--regcb", "--regcbopt", "--rnd", "--synthcover", "--first", "--first_only"}
    used = other.intersection(args)
    if used or "--epsilon" not in args:
        raise NotLinear(f"only plain epsilon-greedy exploration has this closed form (vw_args "
                        f"{' '.join(args)})")
    for q in _interactions(args):  # at most one shared and one per-round arm factor
        if len(q) != 2 or sum(c in _SHARED_NS for c in q) > 1 or q.count("A") > 1:
            raise NotLinear(f"interaction {q!r} multiplies two shared or two per-round arm "
                            "namespaces; the score is not bilinear")
    return float(args[args.index("--epsilon") + 1])


@dataclass(frozen=True)
class LinearDelayScorer:
    """A frozen VW delay policy's decision rule without VW.

    Attributes:
        policy: The VW policy (its masking, normalisation and sampling are used as is).
        coef: ``(n_arms, 1 + d_shared, 1 + d_dyn)`` bilinear coefficients (float64).
        epsilon: The exploration share.
        dyn: Indices of the dynamic candidate columns (the ``r_a`` of the form).
        max_error: Largest PMF difference to VW seen when the form was proved.
    """

    policy: VWItemPolicy
    coef: np.ndarray
    epsilon: float
    dyn: np.ndarray
    max_error: float

    @classmethod
    def extract(cls, policy: VWItemPolicy, *, checks: int = 64,
                seed: int = 0) -> LinearDelayScorer:
        """Read the bilinear form off ``policy``'s VW model and prove it.

        Args:
            policy: A trained (saved or loaded) VW delay policy.
            checks: Random contexts on which VW's PMF and this one must agree within
                :data:`PARITY_TOL`.
            seed: Seed of those contexts.

        Raises:
            NotLinear: the options do not give a bilinear epsilon-greedy scorer, the model
                is still learning (unsaved), or the proof fails.
        """
        if not isinstance(policy, VWItemPolicy):
            raise NotLinear(f"not a VW item policy: {type(policy).__name__}")
        eps = _epsilon(list(policy.args))
        if policy.model is None and policy.model_sha256 is None:
            raise NotLinear("an unsaved, learning model has no frozen closed form")
        coef, _ = bilinear_coef(policy)
        out = cls(policy, coef, eps, policy.layout.dynamic_columns, 0.0)
        err = out._prove(checks, seed)
        if err > PARITY_TOL:
            raise NotLinear(f"the closed form differs from VW by {err:.2e} in probability "
                            f"(> {PARITY_TOL:g}); deciding with VW")
        return cls(policy, coef, eps, out.dyn, err)

    def _prove(self, checks: int, seed: int) -> float:
        """Largest |PMF difference| to VW on ``checks`` random contexts (some masked)."""
        rng = np.random.default_rng(seed)
        k, d_s1, d_c1 = self.coef.shape
        err = 0.0
        for i in range(checks):
            x = np.round(rng.normal(0, 1, d_s1 - 1) * (rng.random(d_s1 - 1) < 0.6), 4)
            r = np.round(rng.normal(0, 1, (k, d_c1 - 1)) * (rng.random((k, d_c1 - 1)) < 0.7),
                         4)
            mask = np.asarray(rng.random(k) < 0.8) if i % 3 == 0 else np.ones(k, bool)
            if not mask.any():
                mask[0] = True
            _, pmf = vw_scores(self.policy, x, r, mask)
            mine = self.pmf(self.scores(x[None], r[None]), mask[None])[0]
            err = max(err, float(np.abs(mine - pmf).max()))
        return err

    def scores(self, shared: np.ndarray, dyn: np.ndarray) -> np.ndarray:
        """``(n, n_arms)`` regressor scores (costs) of ``shared`` ``(n, d_shared)`` and the
        dynamic candidate columns ``dyn`` ``(n, n_arms, d_dyn)``, rounded as VW text."""
        n = shared.shape[0]
        x = np.empty((n, 1 + shared.shape[1]))
        x[:, 0] = 1.0
        x[:, 1:] = np.rint(np.asarray(shared, np.float64) * _SCALE) / _SCALE
        r = np.empty((n, dyn.shape[1], 1 + dyn.shape[2]))
        r[:, :, 0] = 1.0
        r[:, :, 1:] = np.rint(np.asarray(dyn, np.float64) * _SCALE) / _SCALE
        return np.einsum("ns,asj,naj->na", x, self.coef, r, optimize=False)

    def pmf(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Epsilon-greedy's PMF ``(n, n_arms)`` over the allowed arms (0 elsewhere), in
        float32 arithmetic as VW's: the arms tied with the lowest score (VW's
        ``are_same_rel``: ``|s - s_min| <= 1e-4 (|s| + |s_min|)``, tested in ascending score
        order up to the first that is not; the test is monotone in ``s``, so no sort is
        needed) share ``1 - eps``."""
        f = np.float32
        s = np.where(mask, scores, np.inf).astype(np.float32)
        low = s.min(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            tied = mask & (np.abs(s - low) <= f(TIE_RTOL) * (np.abs(s) + np.abs(low)))
        eps = f(self.epsilon)
        k = np.count_nonzero(mask, axis=1)[:, None].astype(np.float32)
        t = np.count_nonzero(tied, axis=1)[:, None].astype(np.float32)
        base = eps / k
        p = np.where(tied, base + (f(1.0) - eps) / t, base)
        return np.where(mask, p, f(0.0)).astype(np.float64)

    def action_dist(self, ctx: ItemContext) -> np.ndarray:
        """The policy's normalised ``(n, n_arms)`` distribution on a delay context (what
        ``policy.action_dist(ctx)`` gives, within :attr:`max_error`)."""
        mask = np.asarray(ctx.mask, bool)
        cf = np.asarray(ctx.candidate_features)[:, :, self.dyn]
        dist = self.pmf(self.scores(np.asarray(ctx.shared), cf), mask)
        return self.policy._normalise(dist, mask)

    def decide_batch(self, ctx: ItemContext, rng: np.random.Generator) -> BatchDecision:
        """``policy.decide_batch(ctx, rng)`` without VW: the same draws (one uniform per row
        from ``rng``). One round (a server's single trigger) takes :meth:`_decide_one`: the
        same scores, PMF, normalisation and draw in python over the arms."""
        if len(ctx) == 1:
            return self._decide_one(ctx, rng)
        return self.policy.sample(self.action_dist(ctx), rng)

    def _pmf_one(self, scores: list[float], mask: list[bool]) -> list[float]:
        """:meth:`pmf` of one row: the same float32 operations in the same order, each
        computed in double and rounded to float32 (``array("f")``; exact for ``+ - * /``:
        double has more than twice float32's precision), so the same values
        (tests/policies/test_delay_fast.py)."""
        if not any(mask):  # nothing allowed: pmf's 0 everywhere
            return [0.0] * len(mask)
        inf = float("inf")
        s = _f32([x if m else inf for x, m in zip(scores, mask, strict=True)])
        low = min(s)
        a_low = abs(low)
        diff = _f32([abs(x - low) if m else inf for x, m in zip(s, mask, strict=True)])
        bound = _f32([_RTOL * y for y in _f32([abs(x) + a_low if m else 0.0
                                                for x, m in zip(s, mask, strict=True)])])
        tied = [m and d <= b for d, b, m in zip(diff, bound, mask, strict=True)]
        eps = self._eps32
        base, = _f32([eps / float(sum(mask))])
        n_tied = sum(tied)
        best = _f32([base + _f32([_f32([1.0 - eps])[0] / n_tied])[0]])[0] if n_tied else base
        return [(best if t else base) if m else 0.0 for t, m in zip(tied, mask, strict=True)]

    def _decide_one(self, ctx: ItemContext, rng: np.random.Generator) -> BatchDecision:
        """:meth:`decide_batch` of a one-round context: equal action, pscore and
        distribution for the same ``rng`` state (one uniform drawn, as ``rng.random((1,
        1))`` draws it)."""
        mask = np.asarray(ctx.mask, bool)
        cf = np.asarray(ctx.candidate_features)[:, :, self.dyn]
        scores = self.scores(np.asarray(ctx.shared), cf)[0].tolist()
        p = self._pmf_one(scores, mask[0].tolist())
        dist = np.array([p])
        tot = float(dist.sum(axis=1, keepdims=True)[0, 0])  # (the sum _normalise takes)
        if not tot > 0:  # nothing allowed: _normalise's fallback
            dist = self.policy._normalise(dist, mask)
            row = dist[0].tolist()
        else:
            row = [x / tot for x in p]
            dist = np.array([row])
        cdf, acc = [], 0.0
        for i, x in enumerate(row):  # np.cumsum's sequential sums
            acc = x if i == 0 else acc + x
            cdf.append(acc)
        u = rng.random() * cdf[-1]
        a = min(sum(u >= c for c in cdf), len(row) - 1)
        return BatchDecision(np.array([a], np.int64), np.array([row[a]]), dist)

    @property
    def _eps32(self) -> float:
        """:attr:`epsilon` rounded to float32."""
        return _f32([self.epsilon])[0]


def _f32(xs: list[float]) -> list[float]:
    """Each of ``xs`` rounded to the nearest float32 (as a python float)."""
    return array("f", xs).tolist()


#: :data:`TIE_RTOL` as float32.
_RTOL = _f32([TIE_RTOL])[0]
