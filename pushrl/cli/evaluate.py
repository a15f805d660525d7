"""`pushrl evaluate`: off-policy evaluation of a policy on logged data, with the deployment gate.

The exit code carries the verdict: 0 = the candidate passes the gate, 1 = blocked, 2 = a user
error (bad path, unknown policy or estimator, logs without ``pscore``), printed as one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from pushrl.cli._common import console, emit, out, progress_bar


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label.strip("/")) or "policy"


def _default_out(policy: str, baseline: str | None) -> Path:
    """``<artifact>/ope/vs_<baseline>`` for an artifact (the evidence stays with it), else
    ``reports/<policy>_vs_<baseline>``."""
    versus = _slug(baseline or "logging")
    if Path(policy).exists():
        from pushrl.errors import ArtifactError
        from pushrl.policies.registry import resolve

        try:
            return resolve(policy) / "ope" / f"vs_{versus}"
        except ArtifactError:
            pass  # evaluate_policy reports it with the full message
    return Path("reports") / f"{_slug(policy)}_vs_{versus}"


def _print_summary(res: Any) -> None:
    d = res.to_dict()
    unit = d["data"].get("value_unit", "expected reward per round")
    t = Table(title=escape(f"{d['policy']['label']} ({d['kind']} policy): {unit}"))
    for c in ("estimator", "value", "95% lower", "95% upper"):
        t.add_column(c, justify="left" if c == "estimator" else "right")
    for who, ests in (("", res.estimates), ("baseline: ", res.baseline_estimates)):
        for name, e in ests.items():
            t.add_row(escape(f"{who}{name}"), f"{e.value:.6g}", f"{e.lower:.6g}",
                      f"{e.upper:.6g}")
    out.print(t)
    g, c = res.gate, res.gate.comparison
    verdict = "[green]PASS[/]" if g.passed else "[red]BLOCK[/]"
    out.print(f"gate: {verdict}  " + escape(
        f"improvement over {d['baseline']['label']} ({res.gate_estimator}) {c.difference:.6g}, "
        f"{100 * (1 - c.alpha):g}% CI [{c.lower:.6g}, {c.upper:.6g}]"
        + (f" (lower end: one-sided {100 * (1 - c.alpha / 2):g}% bound)" if g.one_sided else "")
        + f"; ESS {res.diagnostics.ess:.1f} (floor {g.ess_floor:.1f}"
        + (f", support ESS {g.support_ess:.1f})" if g.support_ess is not None else ")")))
    for rule, msg in zip(g.failed_rules, g.messages, strict=True):
        out.print(escape(f"  failed {rule}: {msg}"))
    for note in res.notes:
        out.print("[yellow]note:[/] " + escape(note))
    for kind in ("markdown", "html"):
        if kind in res.report:
            out.print(escape(f"{kind} report: {res.report[kind]}"))


def names_of(estimators: str | None) -> list[str] | None:
    """``--estimators``' comma-separated names (None: every applicable one)."""
    return None if not estimators else [e.strip() for e in estimators.split(",") if e.strip()]


def _data_split(data: Path, scenario: str | None, split: str | None) -> Any:
    """The :class:`~pushrl.data.split.UserSplit` part of DATA to evaluate on: the scenario's
    ``heldout`` part by default when DATA is the data of a scenario with a ``[split]``."""
    from pushrl.envs.scenario import load_scenario
    from pushrl.errors import PushrlError

    if split not in (None, "heldout", "train", "all"):
        raise PushrlError(f"--split must be heldout, train or all, got {split!r}")
    sc = load_scenario(scenario) if scenario is not None else None
    if sc is None or sc.split is None or Path(data).resolve() != sc.data.resolve():
        if split not in (None, "all"):
            raise PushrlError(f"--split {split}: --data {data} is not the data of a scenario "
                              "with a [split]; write one with `pushrl init DATA --out DIR`")
        return None
    return None if split == "all" else sc.data_split(split or "heldout")


def _shadow_or_policy(shadow: bool, state: Path | None, policy: str | None,
                      run_shadow: Callable[[], None]) -> str:
    """``--shadow``: ``run_shadow()`` (it exits); else the ``--policy`` to evaluate.

    Raises:
        PushrlError: ``--state`` without ``--shadow``, or no ``--policy``.
    """
    from pushrl.errors import PushrlError

    if shadow:
        run_shadow()
    if state is not None:
        raise PushrlError("--state goes with --shadow (other evaluations read --data)")
    if policy is None:
        raise PushrlError("pass --policy (an artifact or a baseline name), or --shadow")
    return policy


def command(
    data: Path | None = typer.Option(
        None, "--data", help="Logged data directory (pushlog v1); default: the --scenario's "
                             "data (its held-out users)."),
    policy: str | None = typer.Option(
        None, "--policy", help="Candidate: artifact policies/NAME or policies/NAME/vN, or a "
                               "baseline name (with --shadow: which shadow NAME@vN, default "
                               "the latest)."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="What to beat: artifact or baseline name; default: the logging "
                                 "policy (its on-policy value)."),
    estimators: str | None = typer.Option(
        None, "--estimators", help="Comma-separated (default: every applicable one). Item: "
                                   "dm,ipw,snipw,dr,sndr,switch-dr,dr-os,dr-cf; timing: "
                                   "pdis,wpdis,wdr,fqe."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Report directory (default: <artifact>/ope/vs_<baseline> for an "
                            "artifact, else reports/<policy>_vs_<baseline>)."),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=1, help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and cross-fitting."),
    scenario: str | None = typer.Option(
        None, "--scenario", help="Guardrails and timing reward weights: DIR/scenario.toml "
                                 "(pushrl init) or a name in envs/; default: the scenario "
                                 "written by `pushrl init` for DATA, or `default` for its data."),
    segment: str = typer.Option("day", "--segment",
                                help="Timing trajectories: day (user-days) or none (whole users)."),
    reward: str | None = typer.Option(None, "--reward",
                                      help="Item reward as \\[w*]column terms over opened, "
                                           "clicked, converted, revenue, e.g. "
                                           "'clicked+0.01*revenue'; default: the candidate's "
                                           "training reward."),
    split: str | None = typer.Option(
        None, "--split", help="Part of a `pushrl init` scenario's data: heldout (default), "
                              "train or all; only when DATA is the scenario's data."),
    allow_in_sample: bool = typer.Option(
        False, "--allow-in-sample", help="Do not block a candidate trained on these logs "
                                         "(its estimate is optimistic)."),
    sample_users: int | None = typer.Option(
        None, "--sample-users", min=0, metavar="<int>",
        help="Evaluate on a seeded sample of this many users (default: 20000 when the log has "
             "more than 8M decisions, else every user; 0 = every user)."),
    sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of the user sample."),
    record: bool = typer.Option(True, "--record/--no-record",
                                help="Write the gate evidence into the candidate artifact's card."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    shadow: bool = typer.Option(
        False, "--shadow", help="Evaluate the server's delay shadow (`policies promote NAME "
        "--shadow`) on its live log: the triggers it decided, with the live arms' logged "
        "probabilities, vs the live delay policy (or --baseline); --data is an export "
        "(`pushrl logs export`) or pass --state."),
    state: Path | None = typer.Option(None, "--state", help="With --shadow: the server's state "
                                      "directory (exported to a temporary directory first)."),
    registry: Path = typer.Option(Path("policies"), "--registry", help="With --shadow: the "
                                  "server's registry (the shadow's artifact)."),
) -> None:
    """Estimate a policy's value on logged data and apply the deployment gate (exit 0 / 1)."""
    from pushrl.data.sample import load_bounded
    from pushrl.envs.scenario import scenario_for_data
    from pushrl.errors import PushrlError
    from pushrl.rules.reward import RewardWeights

    def shadow_run() -> None:
        from pushrl.cli.evaluate_delay import run_shadow

        run_shadow(data, state, registry, label=policy, baseline=baseline,
                   estimators=names_of(estimators), reward=reward, split=split,
                   segment=segment, out_dir=out_dir, n_bootstrap=n_bootstrap, seed=seed,
                   allow_in_sample=allow_in_sample, record=record, as_json=as_json,
                   sample_users=sample_users)

    policy = _shadow_or_policy(shadow, state, policy, shadow_run)
    if data is None and scenario is None:
        raise PushrlError("pass --scenario DIR/scenario.toml (from `pushrl init`) or --data DIR")
    if data is None:
        from pushrl.envs.scenario import load_scenario

        data = load_scenario(str(scenario)).data
    from pushrl.cli.evaluate_delay import is_delay_artifact

    if is_delay_artifact(policy):  # a trigger-delay artifact: its own rounds and gate
        from pushrl.cli.evaluate_delay import run

        run(data, policy, baseline=baseline, estimators=names_of(estimators), reward=reward,
            split=split, segment=segment, out_dir=out_dir, n_bootstrap=n_bootstrap,
            seed=seed, sample_users=sample_users, sample_seed=sample_seed,
            allow_in_sample=allow_in_sample, record=record, as_json=as_json)
    if scenario is None and (found := scenario_for_data(data)) is not None:
        scenario = str(found.path)
        if not as_json:
            console.print(f"[dim]scenario: {escape(scenario)}[/]")
    part = _data_split(data, scenario, split)
    if part is not None and not as_json:
        console.print(f"[dim]evaluating on the {part.part} users of {escape(str(data))} "
                      "(the scenario's \\[split])[/]")
    names = names_of(estimators)
    weights = RewardWeights.parse(reward) if reward else None  # fails before loading data
    target = out_dir or _default_out(policy, baseline)
    with progress_bar("evaluating", 1, enabled=not as_json) as update:
        stage: list[str] = [""]

        def progress(name: str, done: int, total: int) -> None:
            if name != stage[0]:
                stage[0] = name
                console.print(f"[dim]{escape(name)}[/]")
            update(done, max(total, 1))

        progress("loading data", 0, 1)
        ds, _, sample = load_bounded(data, sample_users=sample_users, seed=sample_seed,
                                     split=part)
        if sample is not None and not as_json:
            console.print(f"[dim]a seeded sample of {sample['users']:,} of "
                          f"{sample['of_users']:,} users (seed {sample['seed']}; "
                          "--sample-users 0 loads every user)[/]")
        # imported after the data loaded: a bad path fails without the OPE stack's import cost
        from pushrl.ope.evaluate import evaluate_policy, record_evaluation, resolve_policy

        cand = resolve_policy(policy, ds, reward=weights)
        if scenario is None:
            if cand.policy.kind == "timing":
                from pushrl.errors import ScenarioError

                raise ScenarioError(
                    f"no scenario for --data {data}: pass --scenario DIR/scenario.toml (write "
                    f"one with `pushrl init {data} --out DIR`); the default scenario's "
                    "guardrails and reward belong to the synthetic world")
            scenario = "default"  # item policies do not read the scenario
        res = evaluate_policy(ds, cand, baseline, estimators=names, n_bootstrap=n_bootstrap,
                              seed=seed, out=target, reward=weights, scenario=scenario,
                              segment=segment, allow_in_sample=allow_in_sample,
                              progress=progress)
        progress("done", 1, 1)
    artifact = res.policy.get("artifact")
    if record and artifact:
        res.report["card"] = str(record_evaluation(artifact, res))
    if as_json:
        emit(res.to_dict(), True)
    else:
        _print_summary(res)
    raise typer.Exit(res.exit_code)
