"""`pushrl evaluate` of a trigger-delay artifact on a log (issue #16): the same IPW/DR and
:class:`~pushrl.ope.gate.DeploymentGate` evidence as ``pushrl train triggers --holdout-frac``
(:func:`pushrl.ope.evaluate_delay.evaluate_delay_policy`, the one definition), for a team that
has a trained delay artifact and a log.

Which rounds are evaluated, and what fits DR's reward model:

* **The log the artifact was trained on a part of** (its card's ``data.split.of`` is this
  log's fingerprint): the other part of the same split is evaluated and the training part fits
  the reward model, exactly as :func:`~pushrl.ope.evaluate_delay.gate_trained_delay` does
  (same rounds, same numbers).
* **Any other log** (a new week of traffic, another shop): every user's rounds are evaluated
  and the reward model is cross-fitted over seeded user folds of them
  (:func:`~pushrl.ope.evaluate_delay.crossfit_kind_arm_reward_model`).
* **The log it was trained on whole** (or its own training part): the held-out rule
  ``held_out_data`` fails (waived only with ``allow_in_sample``).

The rounds are built with the artifact's own rules (its card's ``trigger_policy``: trigger
config, guardrails, horizon, send and unsubscribe costs), so the reward is the one it was
trained for and the arms are its arms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.data.split import UserSplit
from pushrl.errors import ArtifactError, DataError
from pushrl.ope.evaluate_delay import BASELINE, evaluate_delay_policy
from pushrl.policies.base import Policy
from pushrl.policies.delay_data import DelayRounds, delay_rounds
from pushrl.policies.registry import load_policy, read_card, resolve
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


def delay_spec(path: str | Path) -> dict[str, Any] | None:
    """The ``trigger_policy`` of the artifact at ``path`` (``policies/NAME[/vN]``), or None when
    it is not a delay artifact (or not an artifact)."""
    try:
        spec = read_card(resolve(path)).get("trigger_policy")
    except ArtifactError:
        return None
    return spec if isinstance(spec, dict) else None


def _rules(spec: dict[str, Any]) -> tuple[TriggerConfig, Guardrails]:
    trig = TriggerConfig.parse(spec.get("triggers")) if spec.get("triggers") else \
        TriggerConfig.parse(None)
    g = spec.get("guardrails")
    return trig, Guardrails.from_dict(g) if isinstance(g, dict) else Guardrails()


def delay_baseline(name: str, artifact: str | Path) -> Policy:
    """The baseline ``name`` of the delay artifact ``artifact``: a delay baseline by name, or
    another delay artifact over the same arms.

    Raises:
        ArtifactError: neither; DataError: an artifact over other arms.
    """
    spec = delay_spec(artifact)
    if spec is None:
        raise ArtifactError(f"{artifact} is not a trigger delay policy (its model card has no "
                            "trigger_policy)")
    return _baseline(name, tuple(spec.get("arms") or ()))


def _baseline(name: str, arms: tuple[int | None, ...]) -> Policy:
    """A delay baseline by name, or another delay artifact over the same arms."""
    from pushrl.policies.baselines import make_baseline, registry

    spec = delay_spec(name) if ("/" in name or Path(name).exists()) else None
    if spec is not None:
        theirs = tuple(spec.get("arms") or ())
        if theirs != arms:
            raise DataError(f"--baseline {name} decides over arms {list(theirs)}, the "
                            f"candidate over {list(arms)}; compare delay policies of one "
                            "trigger config")
        return load_policy(name)
    delay = sorted(n for n in registry() if n.startswith("delay-"))
    if name not in delay:
        raise ArtifactError(f"--baseline {name!r} is neither a delay artifact nor a delay "
                            f"baseline; delay baselines: {', '.join(delay)}")
    return make_baseline(name)


def _lineage(ds: Any, fingerprint: str, data: str | Path) -> dict[str, Any]:
    return {"path": str(data), "fingerprint": fingerprint, "split": ds.split}


def evaluate_delay_artifact(artifact: str | Path, data: str | Path, *,
                            baseline: str = BASELINE, n_bootstrap: int = 1000, seed: int = 0,
                            alpha: float = 0.05, sample_users: int | None = None,
                            sample_seed: int = 0, allow_in_sample: bool = False,
                            progress: Progress | None = None,
                            logged: pd.DataFrame | None = None) -> dict[str, Any]:
    """Evaluate a delay artifact on the trigger rows of the log at ``data`` (module docstring).

    Args:
        artifact: ``policies/NAME[/vN]`` of a ``pushrl train triggers`` artifact.
        data: A pushlog v1.1 directory with ``triggers`` rows.
        baseline: A delay baseline name (``delay-fixed-1h``...) or another delay artifact.
        n_bootstrap, seed, alpha: Of the gate's paired interval (``seed`` also seeds the
            cross-fitting folds).
        sample_users, sample_seed: As ``pushrl evaluate``'s
            (:func:`pushrl.data.sample.load_bounded`).
        allow_in_sample: Waive the held-out rule.
        logged: The artifact's own logged decisions on this log (a ``delay`` shadow's
            ``trigger_shadow`` rows: ``trigger_id``, ``delay_h`` (NA = drop), ``pscore``):
            only their triggers are evaluated, and each logged probability is compared with
            the artifact's on the replayed context (``logged_check``).

    Returns:
        :func:`~pushrl.ope.evaluate_delay.evaluate_delay_policy`'s result plus ``data`` (the
        evaluated rounds' lineage), ``policy`` (``{"label", "artifact"}``), ``evaluated``
        (``"heldout part of the artifact's split"`` or ``"whole log"``) and, with ``logged``,
        ``logged_check`` (``{"rows", "evaluated", "compared", "max_abs_diff", "agree"}``:
        logged rows, their triggers among the evaluated rounds, how many of those had the
        logged arm among the artifact's arms, the largest ``|logged p - replayed p|``, and the
        share within 1e-6).

    Raises:
        ArtifactError: not a delay artifact, a bad baseline.
        DataError: the log has no trigger rows, other arms, or no complete rounds.
    """
    from pushrl.data.sample import load_bounded

    def say(stage: str) -> None:
        if progress is not None:
            progress(stage, 0, 1)

    art = resolve(artifact)
    card = read_card(art)
    spec = card.get("trigger_policy")
    if not isinstance(spec, dict):
        raise ArtifactError(f"{art} is not a trigger delay policy (its model card has no "
                            "trigger_policy); `pushrl evaluate` routes item and timing "
                            "artifacts elsewhere")
    trig, guard = _rules(spec)
    arms = tuple(spec.get("arms") or ())
    base = _baseline(baseline, arms)
    say("loading data")
    ds, report, _ = load_bounded(data, sample_users=sample_users, seed=sample_seed)
    whole = (ds.split or {}).get("of") or report.fingerprint
    seen = card.get("data") or {}
    sp = seen.get("split") or {}
    horizon_h = int(spec.get("horizon_h", 168))
    send_cost, unsub_cost = float(spec.get("send_cost", 0.0)), float(spec.get("unsub_cost", 0.0))

    def rounds_of(part_ds: Any) -> DelayRounds:
        r = delay_rounds(part_ds, trig, guard, horizon_h=horizon_h, send_cost=send_cost,
                         unsub_cost=unsub_cost, due=False)
        if arms and tuple(r.arms) != arms:
            raise DataError(f"the log's trigger rounds have arms {list(r.arms)}, the artifact "
                            f"{list(arms)}")
        return r

    say("building trigger rounds")
    train: DelayRounds | None = None
    if sp.get("by") == "user" and sp.get("of") == whole and sp.get("part") == "train":
        split = UserSplit(float(sp["holdout_frac"]), int(sp["seed"]), "train")
        if ds.split is None:
            parts = {p: split.with_part(p).apply(ds, of=whole) for p in ("train", "heldout")}
        else:  # a user sample: load each part of the sample
            parts = {p: load_bounded(data, sample_users=sample_users, seed=sample_seed,
                                     split=split.with_part(p))[0]
                     for p in ("train", "heldout")}
        train, held_ds = rounds_of(parts["train"]), parts["heldout"]
        lineage = _lineage(held_ds, held_ds.fingerprint(), data)
        evaluated = "heldout part of the artifact's split"
    else:
        held_ds, lineage = ds, _lineage(ds, report.fingerprint, data)
        evaluated = "whole log" if ds.split is None else "user sample of the log"
    held = rounds_of(held_ds)
    if logged is not None:
        held = held.take(np.flatnonzero(np.isin(held.trigger_id,
                                                logged["trigger_id"].astype(str).to_numpy())))
        if not held.n_rounds:
            raise DataError("none of the logged decisions' triggers is a trigger round of this "
                            "log (held-out kinds and other logs' triggers are left out)")
    say("estimating")
    pol = load_policy(art)
    dist = np.asarray(pol.action_dist(held.context))
    check = None if logged is None else _logged_check(held, dist, logged)
    out = evaluate_delay_policy(
        train, held, dist,
        np.asarray(base.action_dist(held.context)), baseline=baseline,
        trained_on=seen or None, evaluated_on=lineage, alpha=alpha, n_bootstrap=n_bootstrap,
        seed=seed, allow_in_sample=allow_in_sample)
    out.update(data=lineage, evaluated=evaluated,
               policy={"label": str(artifact), "artifact": str(art)})
    if check is not None:
        out["logged_check"] = check
    return out


def _logged_check(rounds: DelayRounds, dist: np.ndarray, logged: pd.DataFrame
                  ) -> dict[str, Any]:
    """The logged probability of each logged arm vs the policy's ``dist`` on the replayed
    contexts of the same triggers (``evaluate_delay_artifact(logged=...)``)."""
    lg = logged.assign(trigger_id=logged["trigger_id"].astype(str)).drop_duplicates(
        "trigger_id").set_index("trigger_id")
    rows = lg.reindex(rounds.trigger_id)
    idx = {a: j for j, a in enumerate(rounds.arms)}
    d = rows["delay_h"].astype("Int64")
    arm = np.array([idx.get(None if pd.isna(x) else int(x), -1) for x in d], np.int64)
    ok = arm >= 0
    p_log = rows["pscore"].to_numpy(float)[ok]
    p_new = dist[np.flatnonzero(ok), arm[ok]]
    diff = np.abs(p_log - p_new)
    return {"rows": len(lg), "evaluated": int(rounds.n_rounds), "compared": int(ok.sum()),
            "max_abs_diff": float(diff.max()) if diff.size else float("nan"),
            "agree": float((diff <= 1e-6).mean()) if diff.size else float("nan")}
