"""`pushrl evaluate` of a trigger-delay artifact (:mod:`pushrl.ope.evaluate_delay_log`): on the
log it was trained on a part of, the same evidence as `pushrl train triggers --holdout-frac`;
on a new log, the cross-fitted DR gate; the evidence goes into the card and `pushrl policies
promote` applies it without --force, refusing or passing by it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pushrl.data.split import user_uniform
from pushrl.data.validate import load_dataset
from pushrl.data.worlds import world_config
from pushrl.errors import ArtifactError
from pushrl.ope.evaluate import evaluate_policy
from pushrl.ope.evaluate_delay import (
    HELD_OUT_RULE,
    crossfit_kind_arm_reward_model,
    kind_arm_reward_model,
)
from pushrl.ope.evaluate_delay_log import evaluate_delay_artifact
from pushrl.policies.delay_data import delay_rounds
from pushrl.rules.guardrails import Guardrails
from pushrl.rules.triggers import TriggerConfig
from pushrl.serve.pointer import read_active
from pushrl.sim.trigger_world import WORLD_TRIGGERS, synthesize_triggers
from tests.cli_runner import run_pushrl

FRAC, SPLIT_SEED = 0.3, 4


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two 300-user, 10-day trigger worlds: ``train`` (seed 4, the artifacts' log) and ``new``
    (seed 5, a later log of other users)."""
    d = tmp_path_factory.mktemp("delaylog")
    out = {"train": d / "w4", "new": d / "w5"}
    for path, seed in zip(out.values(), (4, 5), strict=True):
        synthesize_triggers(path, world_config("triggers", users=300, days=10, seed=seed))
    return out


@pytest.fixture(scope="module")
def registry(logs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``learned``: trained on the train part of a 0.3 split (send cost 0.06); ``dropper``:
    trained on the whole log at send cost 3 with a 48 h window (it learns to drop)."""
    reg = tmp_path_factory.mktemp("reg") / "policies"
    for name, args in (("learned", ("--holdout-frac", FRAC, "--split-seed", SPLIT_SEED,
                                    "--send-cost", "0.06")),
                       ("dropper", ("--send-cost", "3", "--horizon-h", "48"))):
        r = run_pushrl("train", "triggers", "--data", logs["train"], "--out", reg / name,
                       "--passes", "2", "--json", *args)
        assert r.returncode == 0, r.stderr
    return reg


def test_on_its_training_log_the_evidence_equals_train_triggers(logs: dict[str, Path],
                                                                registry: Path) -> None:
    card = json.loads((registry / "learned" / "v1" / "card.json").read_text())
    ope = card["ope"]  # written by `train triggers --holdout-frac`
    res = evaluate_delay_artifact(registry / "learned", logs["train"], n_bootstrap=1000,
                                  seed=0)
    assert res["evaluated"] == "heldout part of the artifact's split"
    assert res["reward_model"] == "training rounds"
    assert (res["rounds"], res["censored"]) == (ope["rounds"], ope["censored"])
    assert res["estimates"] == ope["estimates"]  # the same numbers, bit for bit
    assert list(res["gate"]["failed_rules"]) == ope["gate"]["failed_rules"]
    assert res["data"]["split"]["part"] == "heldout"


def test_a_new_log_is_evaluated_whole_with_a_crossfitted_model_and_promote_refuses(
        logs: dict[str, Path], registry: Path) -> None:
    r = run_pushrl("evaluate", "--data", logs["new"], "--policy", registry / "learned",
                   "--json")
    assert r.returncode == 1, r.stderr  # blocked
    res = json.loads(r.stdout)
    assert res["evaluated"] == "whole log" and res["reward_model"] == "cross-fitted"
    ds, rep = load_dataset(logs["new"])
    tp = json.loads((registry / "learned" / "v1" / "card.json").read_text())["trigger_policy"]
    rounds = delay_rounds(ds, TriggerConfig.parse(tp["triggers"]), Guardrails(),
                          horizon_h=tp["horizon_h"], send_cost=tp["send_cost"],
                          unsub_cost=tp["unsub_cost"])
    assert res["rounds"] == int(rounds.complete.sum()) > 500
    assert res["data"]["fingerprint"] == rep.fingerprint
    g = res["gate"]
    assert HELD_OUT_RULE not in g["failed_rules"] and not g["passed"]
    card = json.loads((registry / "learned" / "v1" / "card.json").read_text())
    assert card["ope"]["data"]["fingerprint"] == rep.fingerprint
    assert card["ope"]["gate"]["failed_rules"] == g["failed_rules"]
    assert card["ope"]["reward_model"] == "cross-fitted"
    assert Path(res["report"]["json"]).exists()
    r = run_pushrl("policies", "promote", "learned", "--registry", registry)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "OPE gate failed (" in line
    assert all(rule in line for rule in g["failed_rules"])
    assert read_active(registry)["delay"]["active"] is None


def test_passing_evidence_from_evaluate_is_promoted_without_force(logs: dict[str, Path],
                                                                  registry: Path) -> None:
    """The dropper against fixed 1 h under its own reward (a send costs 3): sending after
    1 h loses ~2 per round, so the gate passes on the new log's ~2,200 complete rounds."""
    r = run_pushrl("evaluate", "--data", logs["new"], "--policy", registry / "dropper",
                   "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    dr = res["estimates"]["dr"]
    assert res["gate"]["passed"] and dr["lower"] > 1.0 and dr["ess"] >= 100
    r = run_pushrl("policies", "promote", "dropper", "--registry", registry, "--json")
    assert r.returncode == 0, r.stderr
    assert read_active(registry)["delay"]["active"] == "dropper@v1"


def test_its_own_whole_training_log_fails_the_held_out_rule_unless_waived(
        logs: dict[str, Path], registry: Path) -> None:
    res = evaluate_delay_artifact(registry / "dropper", logs["train"], n_bootstrap=200)
    assert res["evaluated"] == "whole log"
    assert HELD_OUT_RULE in res["gate"]["failed_rules"] and not res["gate"]["passed"]
    res = evaluate_delay_artifact(registry / "dropper", logs["train"], n_bootstrap=200,
                                  allow_in_sample=True)
    assert HELD_OUT_RULE not in res["gate"]["failed_rules"] and res["allow_in_sample"]


def test_the_crossfitted_model_never_sees_the_predicted_users_rounds(
        logs: dict[str, Path]) -> None:
    ds, _ = load_dataset(logs["new"])
    r = delay_rounds(ds, TriggerConfig.parse(WORLD_TRIGGERS), Guardrails(), send_cost=0.06,
                     unsub_cost=1.0)
    q = crossfit_kind_arm_reward_model(r, n_folds=5, seed=3)
    assert q.shape == (r.n_rounds, len(r.arms), 1)
    fold = np.minimum((user_uniform(np.asarray(r.user_id, dtype=object),
                                    "pushrl-delay-crossfit:3:") * 5).astype(int), 4)
    for f in range(5):  # by brute force: fold f's model is fitted on the other folds only
        at = np.flatnonzero(fold == f)
        fit = r.take(np.flatnonzero((fold != f) & r.complete))
        assert np.array_equal(q[at], kind_arm_reward_model(fit, r.take(at)))
    # no user's rounds are spread over two folds
    users = {}
    for u, f in zip(r.user_id, fold, strict=True):
        assert users.setdefault(u, f) == f
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        crossfit_kind_arm_reward_model(r, n_folds=1)


@pytest.mark.parametrize("args, match", [
    (("--estimators", "pdis"), "a delay policy is evaluated with ipw,dr"),
    (("--reward", "clicked"), "--reward does not apply to a delay policy"),
    (("--baseline", "most-popular"), "neither a delay artifact nor a delay baseline"),
])
def test_bad_options_for_a_delay_artifact_are_one_line(logs: dict[str, Path], registry: Path,
                                                       args: tuple[str, ...],
                                                       match: str) -> None:
    r = run_pushrl("evaluate", "--data", logs["new"], "--policy", registry / "learned", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert match in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_item_path_refuses_a_delay_artifact(logs: dict[str, Path], registry: Path) -> None:
    ds, _ = load_dataset(logs["new"])
    with pytest.raises(ArtifactError, match="is a trigger delay policy"):
        evaluate_policy(ds, str(registry / "learned"), n_bootstrap=10)
