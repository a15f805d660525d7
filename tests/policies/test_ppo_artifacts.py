"""Every shipped PPO timing artifact still loads and decides exactly as before.

The expected numbers were computed with the code as it was before the observation moved to
:mod:`pushrl.envs.observation` (the v1 cards list 19 ``obs_names``, the v2 cards 21): the
actor's send probability on fixed contexts, and the actions of ``decide_batch`` with a fixed
seed (argmax for the artifacts whose card says ``deterministic``). The contexts come from a
hand-driven :class:`~pushrl.data.features.FeatureState` only, so no simulator refit can move
them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pushrl.data.features import FeatureSpec, FeatureState
from pushrl.policies.base import TimingContext
from pushrl.policies.registry import load_policy
from pushrl.rules.guardrails import Guardrails

ROOT = Path(__file__).resolve().parents[2]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
START = 489_984  # UTC midnight of 2025-11-24, as an hour bucket
HOURS = (5, 8, 10, 12, 14, 16, 18, 20)  # UTC hours of day 15 at which the contexts are taken


def fixed_contexts() -> TimingContext:
    """32 decisions: 4 users with two weeks of peaked activity and pushes, at 6 hours."""
    rng = np.random.default_rng(20261204)
    spec = FeatureSpec(("a", "b", "c"), {}, tuple([1 / 168] * 168), (0.5, 0.3, 0.2))
    fs = FeatureState(spec, ZONES, START)
    peaks = np.array([8, 13, 19, 21])
    for h in range(14 * 24):
        b = START + h
        users = np.arange(4)
        fs.advance(users, b)
        hour, _, _ = fs.local_time(users, b)
        near = np.abs(((hour - peaks) + 12) % 24 - 12) <= 1
        act = users[rng.random(4) < np.where(near, 0.8, 0.08)]
        if act.size:
            fs.record_activity(act, b, rng.integers(0, 3, act.size))
        push = users[rng.random(4) < 0.03]
        if push.size:
            fs.record_push(push, b, rng.random(push.size) < 0.4)
    u = np.repeat(np.arange(4), len(HOURS))
    b = START + 14 * 24 + np.tile(np.array(HOURS), 4)
    raw = fs.features(u, b)
    g = Guardrails(22, 8, 2, 10)
    allowed = ~g.quiet(raw[:, 0].astype(np.int64))
    sends_today = rng.integers(0, 2, u.size).astype(np.float64)
    return TimingContext(raw, allowed, u, b, fs, sends_today)


# computed before the change (see the module docstring): P(send) of the actor, and the
# decide_batch actions with np.random.default_rng(0)
EXPECTED: dict[str, tuple[list[float], str]] = {
    'ppo-timing/v1': (
        [0.9991834, 0.0000026, 0.0000003, 0.0000461, 0.0000013, 0.0000016, 0.0000035,
         0.0000020, 0.9998033, 0.8952904, 0.0001091, 0.9698546, 0.0000196, 0.0000978,
         0.0002949, 0.0232036, 0.9946927, 0.9980118, 0.9926729, 0.9996868, 0.0000029,
         0.0000014, 0.0000135, 0.0000010, 0.0021744, 0.9791405, 0.0206024, 0.0780881,
         0.6053251, 0.9998335, 0.9999065, 0.9999128],
        '00000000010100000000000001001100'),
    'ppo-timing/v2': (
        [0.9886810, 0.0031691, 0.0000012, 0.0000204, 0.0000109, 0.0000143, 0.0000311,
         0.0000129, 0.9990499, 0.2933193, 0.0052906, 0.4706202, 0.0000324, 0.0005559,
         0.0000350, 0.0261985, 0.8265836, 0.8192514, 0.4178777, 0.9910638, 0.0000767,
         0.0000027, 0.0001371, 0.0000014, 0.0004837, 0.1654081, 0.0149480, 0.0216104,
         0.0074918, 0.9976426, 0.9823733, 0.9994619],
        '00000000000000000000000000000100'),
    'ppo-timing-fatigue2/v1': (
        [0.9034265, 0.0000003, 0.0000001, 0.0000011, 0.0000002, 0.0000002, 0.0000003,
         0.0000003, 0.9962803, 0.0001899, 0.0000008, 0.0002288, 0.0000005, 0.0000007,
         0.0000018, 0.0000098, 0.5153534, 0.1000815, 0.2935372, 0.9740463, 0.0000002,
         0.0000002, 0.0000002, 0.0000002, 0.0000056, 0.0013355, 0.0000606, 0.0002316,
         0.0002464, 0.9992651, 0.9998039, 0.9999359],
        '00000000000000000000000000000100'),
    'ppo-timing-fatigue2/v2': (
        [0.7546255, 0.0000043, 0.0000004, 0.0000010, 0.0000019, 0.0000023, 0.0000034,
         0.0000016, 0.9627988, 0.0000083, 0.0000017, 0.0000075, 0.0000009, 0.0000017,
         0.0000014, 0.0000079, 0.0123180, 0.0080816, 0.0018832, 0.0835445, 0.0000015,
         0.0000007, 0.0000027, 0.0000006, 0.0000053, 0.0003755, 0.0001602, 0.0003806,
         0.0003838, 0.9039873, 0.9913322, 0.9996885],
        '00000000000000000000000000000100'),
    'ppo-timing-fatigue2-truth/v1': (
        [0.9657740, 0.0003112, 0.0000007, 0.0000025, 0.0000033, 0.0000035, 0.0000050,
         0.0000061, 0.9984491, 0.0132309, 0.0057972, 0.1244964, 0.0001722, 0.0013709,
         0.0001007, 0.0395615, 0.5015139, 0.6654626, 0.1790713, 0.9449420, 0.0000309,
         0.0000043, 0.0000602, 0.0000032, 0.0006132, 0.1112563, 0.2964109, 0.4608035,
         0.0124805, 0.9989526, 0.9993997, 0.9997573],
        '00000000000000000000000000110100'),
    'ppo-timing-shift2h/v1': (
        [0.9997499, 0.0000024, 0.0000004, 0.0005974, 0.0000035, 0.0000043, 0.0000075,
         0.0000018, 0.9999043, 0.9203394, 0.0004073, 0.9959174, 0.0001092, 0.0004372,
         0.0005099, 0.0141379, 0.9960900, 0.9991846, 0.9960108, 0.9998785, 0.0000025,
         0.0000014, 0.0000367, 0.0000013, 0.0017181, 0.9968742, 0.0681198, 0.1358775,
         0.6193046, 0.9998536, 0.9999567, 0.9999507],
        '00000000010100000000000001001100'),
    'ppo-timing-shift2h/v2': (
        [0.9455487, 0.0001865, 0.0000021, 0.0000683, 0.0000272, 0.0000341, 0.0000597,
         0.0000143, 0.9973569, 0.4102492, 0.0070991, 0.7703892, 0.0002393, 0.0016047,
         0.0002498, 0.0240444, 0.5255247, 0.6987591, 0.5094770, 0.9899209, 0.0001037,
         0.0000141, 0.0004243, 0.0000092, 0.0005615, 0.2111825, 0.0109700, 0.0138225,
         0.0085460, 0.9915220, 0.9891649, 0.9974855],
        '00000000010000000000000000100100'),
    'ppo-timing-shift2h-truth/v1': (
        [0.9976539, 0.0105923, 0.0000012, 0.0000171, 0.0000205, 0.0000205, 0.0000295,
         0.0000237, 0.9997598, 0.9625517, 0.9298719, 0.9978064, 0.1731017, 0.8013075,
         0.0135686, 0.9736730, 0.9950244, 0.9979798, 0.9845078, 0.9992512, 0.0032174,
         0.0000413, 0.0265434, 0.0000242, 0.0051842, 0.9589516, 0.6122680, 0.6977749,
         0.1116575, 0.9993890, 0.9996349, 0.9997570],
        '00000000011110010000000001110100'),
    'ppo-timing-truth/v1': (
        [0.9979734, 0.1799509, 0.0000021, 0.0000243, 0.0000672, 0.0000743, 0.0001670,
         0.0002129, 0.9997773, 0.9833041, 0.9776171, 0.9978877, 0.3994400, 0.9372078,
         0.1080430, 0.9954989, 0.9703435, 0.9965677, 0.9359201, 0.9979497, 0.0068249,
         0.0000368, 0.0470317, 0.0000156, 0.0308622, 0.9743440, 0.8409894, 0.9145721,
         0.6572921, 0.9996874, 0.9997608, 0.9997476],
        '00000000011110010000000001111100'),
}


@pytest.mark.parametrize("artifact", sorted(EXPECTED))
def test_shipped_ppo_artifact_decides_as_before(artifact: str) -> None:
    policy = load_policy(ROOT / "policies" / artifact)
    ctx = fixed_contexts()
    p_send, actions = EXPECTED[artifact]
    got = policy.actor.probs(policy.observation(ctx))[:, 1]
    np.testing.assert_allclose(got, p_send, atol=2e-6)
    d = policy.decide_batch(ctx, np.random.default_rng(0))
    assert "".join(map(str, np.asarray(d.action).tolist())) == actions


def test_every_shipped_ppo_artifact_is_covered() -> None:
    shipped = sorted(str(p.parent.relative_to(ROOT / "policies"))
                     for p in (ROOT / "policies").glob("ppo-timing*/v*/card.json"))
    assert shipped == sorted(EXPECTED)
