"""`pushrl evaluate` of a trigger-delay artifact (a card with ``trigger_policy``): IPW/DR vs a
delay baseline and the deployment gate (:mod:`pushrl.ope.evaluate_delay_log`), recorded in
the card for `pushrl policies promote`. Exit 0 = passes, 1 = blocked, 2 = a user error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from pushrl.cli._common import console, emit, out, progress_bar

#: The estimators of the delay path (DR decides, IPW is reported).
DELAY_ESTIMATORS = ("ipw", "dr")


def is_delay_artifact(policy: str) -> bool:
    """``policy`` names a registry artifact whose card has ``trigger_policy`` (cheap: reads
    the card only, no OPE imports)."""
    from pushrl.errors import ArtifactError
    from pushrl.policies.registry import read_card, resolve

    if not Path(policy).exists():
        return False
    try:
        return isinstance(read_card(resolve(policy)).get("trigger_policy"), dict)
    except ArtifactError:
        return False


def _refuse_options(estimators: list[str] | None, reward: str | None, split: str | None,
                    segment: str) -> None:
    from pushrl.errors import PushrlError

    bad = [e for e in estimators or [] if e not in DELAY_ESTIMATORS]
    if bad:
        raise PushrlError(f"--estimators {','.join(bad)}: a delay policy is evaluated with "
                          f"{','.join(DELAY_ESTIMATORS)} (DR decides the gate)")
    for flag, val in (("--reward", reward), ("--split", split)):
        if val is not None:
            raise PushrlError(f"{flag} does not apply to a delay policy: its reward and its "
                              "user split come from its model card (`pushrl train triggers`)")
    if segment != "day":
        raise PushrlError("--segment does not apply to a delay policy (one round per trigger)")


def _print(res: dict[str, Any]) -> None:
    dr, ipw = res["estimates"]["dr"], res["estimates"]["ipw"]
    g = res["gate"]
    out.print(escape(
        f"{res['policy']['label']} (delay policy) on {res['rounds']:,} trigger rounds "
        f"({res['censored']:,} censored; {res['evaluated']}; reward model "
        f"{res['reward_model']}) vs {res['baseline']}:"))
    for name, e in (("dr", dr), ("ipw", ipw)):
        out.print(escape(f"  {name}: candidate {e['candidate']:.6g}, baseline "
                         f"{e['baseline']:.6g}, difference {e['difference']:+.6g} "
                         f"[{e['lower']:+.6g}, {e['upper']:+.6g}], ESS {e['ess']:.1f}"))
    verdict = "[green]PASS[/]" if g["passed"] else "[red]BLOCK[/]"
    out.print(f"gate: {verdict}  (DR)")
    for rule, msg in zip(g["failed_rules"], g["messages"], strict=False):
        out.print(escape(f"  failed {rule}: {msg}"))
    if res.get("shadow"):
        c = res.get("logged_check") or {}
        out.print(escape(
            f"shadow {res['shadow']['label']}: {res['shadow']['decisions']:,} logged "
            f"decisions; its logged probabilities vs the artifact's on the replayed contexts: "
            f"{c.get('agree', float('nan')):.1%} agree (max |diff| "
            f"{c.get('max_abs_diff', float('nan')):.3g})"), soft_wrap=True)
    if res.get("card"):
        out.print(escape(f"model card: {res['card']}"))


def run_shadow(data: Path | None, state: Path | None, registry: Path, *, label: str | None,
               baseline: str | None, estimators: list[str] | None, reward: str | None,
               split: str | None, segment: str, out_dir: Path | None, n_bootstrap: int,
               seed: int, allow_in_sample: bool, record: bool, as_json: bool,
               sample_users: int | None = None) -> None:
    """``pushrl evaluate --shadow``: the server's delay shadow on its live log
    (:mod:`pushrl.ope.evaluate_delay_shadow`); exits with the gate's verdict."""
    import tempfile

    from pushrl.errors import PushrlError
    from pushrl.ope.evaluate_delay_shadow import evaluate_delay_shadow

    _refuse_options(estimators, reward, split, segment)
    if sample_users is not None:
        raise PushrlError("--sample-users does not apply to --shadow: every trigger the "
                          "shadow decided is evaluated")
    if (data is None) == (state is None):
        raise PushrlError("--shadow reads one log: --data EXPORT (`pushrl logs export`) or "
                          "--state DIR (the server's)")
    with tempfile.TemporaryDirectory(prefix="pushrl-shadow-") as tmp:
        src = data
        if src is None:
            from pushrl.serve.config import state_dir
            from pushrl.serve.export import export

            src = Path(export(state_dir(state), Path(tmp) / "export")["out"])
        with progress_bar("evaluating", 1, enabled=not as_json) as update:
            def progress(stage: str, done: int, total: int) -> None:
                if not as_json:
                    console.print(f"[dim]{escape(stage)}[/]")
                update(done, max(total, 1))

            res = evaluate_delay_shadow(src, registry, label=label, baseline=baseline,
                                        n_bootstrap=n_bootstrap, seed=seed,
                                        allow_in_sample=allow_in_sample, progress=progress)
            update(1, 1)
    if data is None:  # the temporary export is gone: name the state
        res["data"] = {**res["data"], "path": f"state {state}"}
    _finish(res, out_dir, record, as_json)


def run(data: Path, policy: str, *, baseline: str | None, estimators: list[str] | None,
        reward: str | None, split: str | None, segment: str, out_dir: Path | None,
        n_bootstrap: int, seed: int, sample_users: int | None, sample_seed: int,
        allow_in_sample: bool, record: bool, as_json: bool) -> None:
    """Evaluate the delay artifact ``policy`` on ``data`` and exit with the gate's verdict."""
    from pushrl.ope.evaluate_delay import BASELINE
    from pushrl.ope.evaluate_delay_log import delay_baseline, evaluate_delay_artifact

    _refuse_options(estimators, reward, split, segment)
    delay_baseline(baseline or BASELINE, policy)  # a bad name fails before the data loads
    with progress_bar("evaluating", 1, enabled=not as_json) as update:
        def progress(stage: str, done: int, total: int) -> None:
            if not as_json:
                console.print(f"[dim]{escape(stage)}[/]")
            update(done, max(total, 1))

        res = evaluate_delay_artifact(policy, data, baseline=baseline or BASELINE,
                                      n_bootstrap=n_bootstrap, seed=seed,
                                      sample_users=sample_users, sample_seed=sample_seed,
                                      allow_in_sample=allow_in_sample, progress=progress)
        update(1, 1)
    _finish(res, out_dir, record, as_json)


def _finish(res: dict[str, Any], out_dir: Path | None, record: bool, as_json: bool) -> None:
    """Write the report JSON, record the gate in the card, print, exit 0 (pass) / 1."""
    from pushrl.ope.evaluate_delay import record_delay_evaluation

    art = Path(res["policy"]["artifact"])
    target = out_dir or art / "ope" / f"vs_{res['baseline'].replace('/', '_')}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "ope_delay.json").write_text(json.dumps(res, indent=2, sort_keys=True,
                                                      default=str))
    res["report"] = {"json": str(target / "ope_delay.json")}
    if record:
        res["card"] = str(record_delay_evaluation(art, res, res["data"]))
    if as_json:
        emit(res, True)
    else:
        _print(res)
    raise typer.Exit(0 if res["gate"]["passed"] else 1)
