import sys, json
sys.path.insert(0, "benchmarks")
import numpy as np
from volume_target import volume, per_send_ci
from pushrl.compare.runner import PolicySpec
from pushrl.envs.rollout import rollout
from pushrl.rules.volume import VolumeTarget
from pushrl.data.features import F
pol = PolicySpec.parse("most-active-hour:sends_per_day=2").load()
def mk(ke, pf, extra=None):
    def v(raw):
        e = raw[:, F["engagement"]].astype(float); s = raw[:, F["sends_7d"]].astype(float)
        out = e ** ke / (1 + s) ** pf
        if extra == "h24":
            out = out / (1 + raw[:, F["sends_24h"]].astype(float))
        return out
    return v
variants = {"e1p2": mk(1, 2), "e2p2": mk(2, 2), "e3p2": mk(3, 2)}
for seed in [int(x) for x in sys.argv[1:]]:
    kw = dict(n_users=5000, days=28, seed=seed, truth=True)
    c = rollout(pol, "default", max_sends_per_week=2, **kw)
    V = volume(c)
    for name, fn in variants.items():
        p = rollout(pol, "default", volume=VolumeTarget(V), value=fn, **kw)
        rel, lo, hi = per_send_ci(p, c, reps=500)
        print(seed, name, round(volume(p) / V - 1, 4), round(rel, 4), round(lo, 4), round(hi, 4), flush=True)
