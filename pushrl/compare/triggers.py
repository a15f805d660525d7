"""`pushrl compare --triggers DATA`: delay policies compared on the same triggers, paired.

The timing simulator has no trigger dynamics, so delay policies are compared on a trigger
log (pushlog v1.1 with a ``triggers`` table): every policy decides on the same logged
trigger contexts (:func:`~pushrl.policies.delay_data.delay_rounds`, the one delay
context), and its arm distribution is valued with each (trigger, arm)'s expected outcomes
(:mod:`pushrl.sim.trigger_metrics`, the one definition of the metrics) from

* ``truth``: the trigger world's exact per-trigger truth
  (``ground_truth_triggers.parquet`` of ``pushrl data synth --world triggers``), or
* ``fitted``: the trigger simulator fitted from the log itself
  (:class:`~pushrl.sim.trigger_fit.TriggerSim`: organic return and response per kind x
  arm, IPW-weighted by the logged pscores).

Common random numbers: the triggers, their contexts and outcome models are the same for
every policy and the values are expectations, so a difference between two policies is paired
per user; 95 % CIs come from the spread over users (normal / delta method of
:mod:`pushrl.compare.stats`, one unit = one user). Metrics per user: recovered (push-attributed)
conversions, incremental conversions over organic, organic conversions, sends,
unsubscribes, incremental revenue (truth), overall and by trigger kind; ratios (sends per
recovered conversion, incremental over organic) by the delta method. The delay
distribution of each policy (share of triggers per arm and kind) is in
:attr:`~pushrl.compare.result.CompareResult.delays` and plotted in the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.compare.result import CompareResult
from pushrl.compare.runner import PolicySpec, reference_label
from pushrl.compare.stats import summarize
from pushrl.compare.trigger_holdout import apply_holdouts, held_out_rounds, kind_lift
from pushrl.errors import PushrlError
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.holdout import Holdout
from pushrl.rules.triggers import TriggerConfig, TriggerKind
from pushrl.sim.trigger_metrics import METRICS, ArmOutcomes, arm_columns, trigger_outcomes

SOURCES = ("auto", "truth", "fitted")
TRUTH_FILE = "ground_truth_triggers.parquet"


def trigger_metric_defs(kinds: Sequence[str] = ()) -> dict[str, tuple[str, str | None, bool]]:
    """:mod:`pushrl.compare.stats` definitions of the trigger metrics, overall and for each
    kind in ``kinds`` (suffix ``:KIND``): per-user sums and two ratios of sums."""
    out: dict[str, tuple[str, str | None, bool]] = {}
    for sfx in ("", *(f":{k}" for k in kinds)):
        col = {m: f"trigger_{m}{sfx.replace(':', '__')}" for m in METRICS}
        for m in METRICS:
            out[f"trigger_{m}_per_user{sfx}"] = (col[m], None, False)
        out[f"trigger_sends_per_recovered{sfx}"] = (col["sends"], col["recovered"], False)
        out[f"trigger_incremental_over_organic{sfx}"] = (col["incremental"], col["organic"],
                                                         False)
    return out


def _rules(data: Path, triggers: TriggerConfig | None
           ) -> tuple[TriggerConfig, Guardrails]:
    """The trigger rules and guardrails the log was made with (its ``ground_truth.json``
    when it has one, else the defaults)."""
    gt = data / "ground_truth.json"
    doc = json.loads(gt.read_text()).get("triggers", {}) if gt.exists() else {}
    cfg = triggers or TriggerConfig.parse(doc.get("config"))
    g = Guardrails(**doc["guardrails"]) if isinstance(doc.get("guardrails"), dict) \
        else Guardrails()
    return cfg, g


def _is_delay_policy(pol: Any, spec: PolicySpec) -> None:
    from pushrl.policies.delay_baselines import FixedDelay, NextActiveHour

    if isinstance(pol, FixedDelay | NextActiveHour):
        return
    p = Path(spec.source)
    if p.exists():
        from pushrl.policies.registry import read_card, resolve

        if "trigger_policy" in read_card(resolve(p)):
            return
    raise PushrlError(f"--policy {spec.label!r} is not a delay policy; with --triggers "
                      "compare delay-fixed-1h, delay-fixed-24h, delay-next-active-hour or a "
                      "`pushrl train triggers` artifact")


def _policies(policies: Sequence[str], reference: str | None
              ) -> tuple[list[PolicySpec], list[Any], str]:
    """The specs, the loaded delay policies and the reference label (checked)."""
    specs = [PolicySpec.parse(p) for p in policies]
    labels = [s.label for s in specs]
    if not specs:
        raise PushrlError("give at least one --policy (e.g. --policy delay-fixed-1h)")
    ref = reference_label(labels, reference)
    loaded = [s.load() for s in specs]
    for pol, s in zip(loaded, specs, strict=True):
        _is_delay_policy(pol, s)
    return specs, loaded, ref


def compare_triggers(policies: Sequence[str], data: str | Path, *, source: str = "auto",
                     reference: str | None = None, triggers: TriggerConfig | None = None,
                     horizon_h: int = 168, holdout_frac: float = 0.0,
                     split_seed: int = 0,
                     trigger_holdouts: Mapping[TriggerKind, Holdout] | None = None
                     ) -> CompareResult:
    """Compare delay policies on the triggers of ``data`` (module docstring).

    Args:
        policies: Policy specs (delay baselines, ``pushrl train triggers`` artifacts,
            ``label=SPEC``).
        data: A pushlog v1.1 directory with a ``triggers`` table.
        source: ``truth`` (the trigger world's truth file), ``fitted`` (a trigger simulator
            fitted from ``data``) or ``auto`` (truth when the file is there).
        reference: Label every other policy is compared with (default: the first).
        triggers: The trigger rules of the log (default: its ``ground_truth.json``, else
            the defaults).
        horizon_h: Conversion window after a trigger (the rounds' reward).
        holdout_frac: > 0: compare on the held-out users of the seeded user split
            (:class:`~pushrl.data.split.UserSplit`, the one a ``pushrl train triggers
            --holdout-frac F --split-seed S`` policy left out) instead of every user.
        split_seed: Seed of that split.
        trigger_holdouts: Per-kind live holdouts (:mod:`pushrl.compare.trigger_holdout`):
            the same users as ``pushrl serve --trigger-holdout`` are held out of each kind
            under every policy, and ``meta["holdout_lift"]`` has the lift each would measure.
            Triggers the log's own server held out (``triggers.holdout``) are never used to
            fit the ``fitted`` source (their logged arm was not applied).

    Returns:
        A :class:`CompareResult` (``meta["mode"] == "triggers"``): per-user trigger
        metrics, summary and paired differences (overall and ``:KIND``), the delay
        distribution in ``delays``.
    """
    from pushrl.data.validate import load_dataset
    from pushrl.policies.delay_data import delay_rounds

    t0 = time.perf_counter()
    d = Path(data)
    if source not in SOURCES:
        raise PushrlError(f"--trigger-source must be one of {list(SOURCES)}, got {source!r}")
    if not d.is_dir():
        raise PushrlError(f"--triggers {str(d)!r} is not a directory; pass a pushlog v1.1 "
                          "directory with a triggers table (`pushrl data synth --world "
                          "triggers --out DIR`)")
    if source == "auto":
        source = "truth" if (d / TRUTH_FILE).exists() else "fitted"
    if source == "truth" and not (d / TRUTH_FILE).exists():
        raise PushrlError(f"{d} has no {TRUTH_FILE} (only the trigger world has a truth); "
                          "use --trigger-source fitted")
    specs, loaded, ref = _policies(policies, reference)
    labels = [s.label for s in specs]
    config, g = _rules(d, triggers)
    split = None
    if holdout_frac > 0:
        from pushrl.data.split import UserSplit

        split = UserSplit(holdout_frac, split_seed, "heldout")
    ds, _ = load_dataset(d, quarantine=False, split=split)
    rounds = delay_rounds(ds, config, g, horizon_h=horizon_h, keep_held_out=True, due=False)
    held = held_out_rounds(rounds.user_id, rounds.kind, trigger_holdouts or {})
    unfitted: list[str] = []
    if source == "truth":
        truth = pd.read_parquet(d / TRUTH_FILE).set_index("trigger_id")
        missing = ~pd.Index(rounds.trigger_id).isin(truth.index)
        if missing.any():
            raise PushrlError(f"{int(missing.sum())} triggers of the log have no row in "
                              f"{TRUTH_FILE}; use --trigger-source fitted")
        outcomes = ArmOutcomes.from_truth(truth.loc[rounds.trigger_id].reset_index(),
                                          rounds.arms)
    else:
        from pushrl.sim.trigger_fit import TriggerSim

        fit = rounds if rounds.held_out is None else rounds.take(~rounds.held_out)
        sim = TriggerSim.fit(fit.kind, fit.action, fit.pscore, fit.converted,
                             fit.sent, fit.arms, recovered=fit.push_converted,
                             unsubscribed=fit.unsubscribed)
        outcomes = ArmOutcomes.from_sim(sim, rounds.kind)
        unfitted = sorted(sim.unfitted)  # no dropped trigger: left out (zeros)
    kinds = sorted(set(map(str, rounds.kind)))
    users, user = np.unique(rounds.user_id, return_inverse=True)
    frames, delays = [], []
    holdout_lift: list[dict[str, Any]] = []
    cols = arm_columns(rounds.arms)
    for label, pol in zip(labels, loaded, strict=True):
        dist = apply_holdouts(np.asarray(pol.action_dist(rounds.context), float), held,
                              rounds.arms)
        v = trigger_outcomes(dist, outcomes)
        for tk, h in (trigger_holdouts or {}).items():
            if h.active and (rounds.kind == tk.value).any():
                holdout_lift.append({"policy": label, **kind_lift(
                    rounds.user_id, rounds.kind, held, v, tk, h)})
        f = pd.DataFrame({"policy": label, "seed": 0, "user": np.arange(len(users)),
                          "user_id": users})
        for m, x in v.items():
            f[f"trigger_{m}"] = np.bincount(user, x, len(users))
            for kd in kinds:
                f[f"trigger_{m}__{kd}"] = np.bincount(user, np.where(rounds.kind == kd, x, 0.0),
                                                      len(users))
        f["triggers"] = np.bincount(user, minlength=len(users))
        frames.append(f)
        for kd in ("all", *kinds):
            sel = np.ones(rounds.n_rounds, bool) if kd == "all" else rounds.kind == kd
            share = dist[sel].mean(0) if sel.any() else np.zeros(len(cols))
            delays.append(pd.DataFrame({"policy": label, "kind": kd, "arm": cols,
                                        "share": share, "triggers": int(sel.sum())}))
    per_user = pd.concat(frames, ignore_index=True)
    ts = pd.to_datetime(ds.triggers["event_ts"], utc=True)
    days = max(1, int(np.ceil((ts.max() - ts.min()).total_seconds() / 86400)))
    defs = trigger_metric_defs(kinds)
    summary, paired = summarize(per_user, reference=ref, days=days, metrics=defs)
    meta = {"mode": "triggers", "scenario": f"triggers:{d.name}", "scenario_ref": str(d),
            "source": outcomes.source, "users": len(users), "days": days, "seeds": 1,
            "reference": ref, "policies": labels, "sources": [s.source for s in specs],
            "triggers": rounds.n_rounds, "kinds": kinds, "arms": cols,
            "trigger_rules": config.to_dict(), "horizon_h": horizon_h,
            "split": None if split is None else {"part": "heldout", "frac": holdout_frac,
                                                 "seed": split_seed},
            "unfitted_kinds": unfitted, "seconds": round(time.perf_counter() - t0, 2)}
    if trigger_holdouts:
        meta["trigger_holdouts"] = {k.value: h.to_dict() for k, h in trigger_holdouts.items()}
        meta["held_out_triggers"] = int(held.sum())
        meta["holdout_lift"] = holdout_lift
    empty_daily = pd.DataFrame({"policy": [], "day": [], "objective": [], "subscribed": []})
    empty_hourly = pd.DataFrame({"policy": [], "local_hour": [], "sends": []})
    return CompareResult(per_user, summary, paired, {}, empty_daily, empty_hourly, [], meta,
                         delays=pd.concat(delays, ignore_index=True))
