"""VW text from item contexts: values, labels, masks, and the two formatting paths agree."""

from __future__ import annotations

import numpy as np
import pytest
from vowpalwabbit import pyvw

from pushrl.policies.base import ItemContext
from pushrl.policies.vw_format import CBLabels, VWFormatter, VWLayout, vw_name


def _ctx(n: int = 6, k: int = 5, seed: int = 0, masked: bool = True,
         position: bool = True) -> tuple[ItemContext, VWLayout]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 3, (n, 3)).astype(np.float32)
    shared[0, 1] = 0.0
    shared[:, 2] = rng.integers(0, 2, n)  # one-hot logged context
    items = rng.normal(size=(8, 2)).astype(np.float32)
    cand = np.stack([rng.permutation(8)[:k] for _ in range(n)])
    mask = np.ones((n, k), bool)
    if masked:
        mask[1, 3:] = False
        mask[4, 1] = False
    aff = rng.uniform(0, 2000, (n, k, 1)).astype(np.float32)
    aff[2, 0, 0] = -1.23456
    cf = np.concatenate([items[cand], aff], axis=2)
    ctx = ItemContext(shared, cand, mask, cf, ("hour_sin", "engagement", "ctx_f=a b"),
                      ("price", "quality", "affinity"),
                      np.arange(n) % 3 if position else None)
    lay = VWLayout.from_catalog(ctx.shared_names, ctx.candidate_feature_names,
                                np.array([f"i:{j}" for j in range(8)]), items,
                                ("price", "quality"))
    return ctx, lay


def _parse(text: str) -> list[list[tuple[str, ...]]]:
    """Tokens of each line with values as rounded floats (whitespace-insensitive)."""
    out = []
    for line in text.strip().split("\n"):
        toks: list[tuple[str, ...]] = []
        for tok in line.split():
            if ":" in tok and not tok[0].isdigit():
                name, v = tok.rsplit(":", 1)
                toks.append((name, f"{float(v):.4f}"))
            else:
                toks.append((tok,))
        out.append(toks)
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_vectorised_and_string_paths_write_the_same_features(masked: bool) -> None:
    ctx, lay = _ctx(masked=masked)
    fmt = VWFormatter(lay)
    small = fmt.to_rounds(ctx)
    big = fmt.to_bytes(ctx).decode()
    assert big.endswith("\n\n")
    rounds = big[:-2].split("\n\n")
    assert len(small) == len(rounds) == len(ctx)
    for a, b, m in zip(small, rounds, ctx.mask, strict=True):
        assert _parse(a) == _parse(b)
        assert len(a.split("\n")) == 1 + m.sum()  # masked candidates are not written


def test_values_names_and_items() -> None:
    ctx, lay = _ctx(masked=False)
    lines = VWFormatter(lay).to_rounds(ctx)[2].split("\n")
    shared = dict(t for t in _parse(lines[0])[0] if len(t) == 2)
    assert shared["hour_sin"] == f"{round(float(ctx.shared[2, 0]), 4):.4f}"
    assert vw_name("ctx_f=a b") == "ctx_f=a_b"
    assert lines[0].startswith("shared |U ") and " |C " in lines[0] and "pos=2" in lines[0]
    first = lines[1]
    assert first.startswith(f"|I id=i_{ctx.candidates[2, 0]} ")
    assert ("affinity", "-1.2346") in _parse(first)[0]  # negative, rounded to 4 decimals
    # an exact zero is not written (a no-op feature in VW)
    assert "engagement" not in VWFormatter(lay).to_rounds(ctx)[0].split("\n")[0]


def test_labels_put_the_logged_action_first() -> None:
    ctx, lay = _ctx(masked=False)
    action = np.array([0, 2, 4, 1, 3, 2])
    lab = CBLabels(action, -np.array([1.0, 0, 0.5, 0, 0, 1]), np.full(6, 0.2))
    rounds = VWFormatter(lay).to_bytes(ctx, lab).decode()[:-2].split("\n\n")
    for i, r in enumerate(rounds):
        lines = r.split("\n")
        assert lines[1].startswith(f"0:{lab.cost[i]:.6f}:0.20000000 |I id=i_"
                                   f"{ctx.candidates[i, action[i]]} ")
        assert sum(line[0].isdigit() for line in lines) == 1
        assert len(lines) == 1 + ctx.candidates.shape[1]


def test_vw_reads_every_round() -> None:
    ctx, lay = _ctx(masked=True)
    ws = pyvw.Workspace("--cb_explore_adf --quiet")
    try:
        for text, m in zip(VWFormatter(lay).to_rounds(ctx), ctx.mask, strict=True):
            pmf = ws.predict(text.split("\n"))
            assert len(pmf) == m.sum()
    finally:
        ws.finish()


def test_layout_round_trip_and_checks() -> None:
    ctx, lay = _ctx()
    assert VWLayout.from_dict(lay.to_dict()) == lay
    fmt = VWFormatter(lay)
    bad = ItemContext(ctx.shared, ctx.candidates, ctx.mask, ctx.candidate_features,
                      ("a", "b", "c"), ctx.candidate_feature_names)
    with pytest.raises(ValueError, match="shared_names"):
        fmt.to_rounds(bad)
    out = ItemContext(ctx.shared, ctx.candidates + 100, ctx.mask, ctx.candidate_features,
                      ctx.shared_names, ctx.candidate_feature_names)
    with pytest.raises(ValueError, match="outside"):
        fmt.to_bytes(out)
    nan = ItemContext(ctx.shared * np.nan, ctx.candidates, ctx.mask, ctx.candidate_features,
                      ctx.shared_names, ctx.candidate_feature_names)
    with pytest.raises(ValueError, match="non-finite"):
        fmt.to_bytes(nan)


def test_small_batches_label_the_logged_candidate_in_place() -> None:
    ctx, lay = _ctx(masked=True)
    lab = CBLabels(np.array([0, 1, 2, 0, 2, 3]), -np.full(6, 0.5), np.full(6, 0.25))
    ws = pyvw.Workspace("--cb_explore_adf --quiet")
    try:
        for text, a, m in zip(VWFormatter(lay).to_rounds(ctx, lab), lab.action, ctx.mask,
                              strict=True):
            exs = ws.parse(text)
            labels = [e.get_label(pyvw.LabelType.CONTEXTUAL_BANDIT).costs for e in exs[1:]]
            assert [bool(c) for c in labels] == [j == a for j in np.flatnonzero(m)]
            cost = next(c for c in labels if c)[0]
            assert cost.cost == pytest.approx(-0.5) and cost.probability == pytest.approx(0.25)
            ws.finish_example(exs)
    finally:
        ws.finish()


@pytest.mark.parametrize("labelled", [False, True])
def test_plain_text_decisions_match_the_byte_columns(labelled: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision's plain-string text (SMALL_TEXT) has the byte-column path's features, and a
    VW model trained on one scores the other identically."""
    import pushrl.policies.vw_format as vf

    ctx, lay = _ctx(n=6, k=5, masked=True)
    fmt = VWFormatter(lay)
    lab = (CBLabels(np.array([0, 1, 2, 0, 2, 3]), -np.linspace(0, 1, 6), np.full(6, 0.25))
           if labelled else None)
    plain = fmt.to_rounds(ctx, lab)
    monkeypatch.setattr(vf, "SMALL_TEXT", 0)
    cols = fmt.to_rounds(ctx, lab)
    assert plain != cols  # the paths really differ (padding)
    for a, b in zip(plain, cols, strict=True):
        assert _parse(a) == _parse(b)
    ws = pyvw.Workspace("--cb_explore_adf --quiet --interactions IA --random_seed 1")
    try:
        for text in VWFormatter(lay).to_rounds(
                ctx, CBLabels(np.array([1, 0, 0, 2, 0, 1]), -np.ones(6), np.full(6, 0.5))):
            ws.learn(text.split("\n"))
        for a, b in zip(plain, cols, strict=True):
            pa = ws.predict([ln for ln in a.split("\n")])
            pb = ws.predict([ln for ln in b.split("\n")])
            assert pa == pb
    finally:
        ws.finish()


@pytest.mark.parametrize("strings", [[], [""], ["a", "", "bcd", "é€x", " pos=12"],
                                     [f"0:{c:.6f}:{p:.8f} " for c, p in
                                      [(-0.0, 0.01), (-1.0, 1 / 3), (-12.5, 1e-9)]]])
def test_string_table_pads_each_string_with_blanks(strings: list[str]) -> None:
    from pushrl.policies.vw_format import _string_table

    t = _string_table(strings)
    w = max((len(s.encode()) for s in strings), default=0)
    assert t.shape == (len(strings), w) and t.dtype == np.uint8
    assert [bytes(r) for r in t] == [s.encode().ljust(w) for s in strings]


def _swapped_first(ctx: ItemContext, action: np.ndarray) -> ItemContext:
    """The context with each round's logged candidate moved first (swapped with candidate
    0), as the formatter wrote labelled rounds before it swapped formatted lines."""
    r = np.arange(action.size)
    out = []
    for x in (ctx.candidates, ctx.mask, ctx.candidate_features):
        x = np.array(x)
        first, logged = x[:, 0].copy(), x[r, action]
        x[:, 0], x[r, action] = logged, first
        out.append(x)
    return ItemContext(ctx.shared, out[0], out[1], out[2], ctx.shared_names,
                       ctx.candidate_feature_names, ctx.position, ctx.extra)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_large_batches_equal_the_plain_gather(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training-size batches (repeated candidate columns formatted once, one candidate row
    broadcast, logged lines swapped after formatting) write exactly the bytes of the plain
    per-cell path on the context with the logged candidates moved first."""
    from pushrl.policies import vw_format

    rng = np.random.default_rng(seed)
    n, k, n_items = 300, 12, 12
    ctx, _ = _ctx(n=n, seed=seed, masked=False)  # its shared columns
    items = rng.normal(size=(n_items, 2)).astype(np.float32)
    aligned = seed % 2 == 0  # every round has the whole catalog in order, or its own list
    cand = (np.broadcast_to(np.arange(n_items), (n, k)).copy() if aligned
            else np.stack([rng.permutation(n_items)[:k] for _ in range(n)]))
    group = rng.integers(0, 4, n_items)  # a per-category value: columns repeat
    aff = rng.uniform(-3, 30, (n, 4)).astype(np.float32)[:, group][np.arange(n)[:, None], cand]
    aff[rng.random((n, k)) < 0.05 * (seed >= 2)] = 0.0  # some zeros (written as blanks)
    mask = np.ones((n, k), bool)
    if seed == 3:
        mask[rng.random((n, k)) < 0.1] = False
    cf = np.concatenate([items[cand], aff[:, :, None]], axis=2)
    ctx = ItemContext(ctx.shared, cand, mask, cf, ctx.shared_names, ctx.candidate_feature_names,
                      ctx.position)
    lay = VWLayout.from_catalog(ctx.shared_names, ctx.candidate_feature_names,
                                np.array([f"i{j}" for j in range(n_items)]), items,
                                ("price", "quality"))
    action = np.argmax(rng.random((n, k)) * mask, axis=1)
    lab = CBLabels(action, -rng.random(n), rng.uniform(0.01, 1, n))
    fmt = VWFormatter(lay)
    got = fmt.to_bytes(ctx, lab)
    monkeypatch.setattr(vw_format, "DEDUP_ROUNDS", 10**9)  # no repeated-column search
    ref = fmt.to_bytes(_swapped_first(ctx, action), CBLabels(np.zeros(n, np.int64), lab.cost,
                                                             lab.pscore))
    assert got == ref
    assert fmt.to_bytes(ctx) == VWFormatter(lay).to_bytes(ctx)  # unlabelled, no search


def test_digit_table_is_the_four_ascii_digits_of_every_value() -> None:
    from pushrl.policies.vw_format import _DIGITS

    ref = np.array([list(f"{v:04d}".encode()) for v in range(10000)], np.uint8)
    assert _DIGITS.dtype == np.uint8 and _DIGITS.shape == (10000, 4)
    np.testing.assert_array_equal(_DIGITS, ref)
