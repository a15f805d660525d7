"""PPO training end to end at toy scale: artifact, checksums, export, checkpoints, resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pushrl.envs import rollout
from pushrl.errors import ArtifactError
from pushrl.policies.base import TimingContext
from pushrl.envs.observation import TIMING_OBS_NAMES
from pushrl.policies.ppo import ACTOR_FILE, PPOTimingPolicy
from pushrl.train.ppo import train_timing
from pushrl.train.ppo_config import PPOConfig, load_weights, make_model, make_vec_env
from pushrl.policies.registry import load_policy

TINY = PPOConfig(n_envs=8, n_steps=64, batch_size=256, n_epochs=2, checkpoint_every=512,
                 eval_users=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ppo")
    res = train_timing("default", out=root / "policies" / "ppo-test", timesteps=1024, seed=3,
                       config=TINY, run_dir=root / "run", evaluate=False)
    return res.artifact, root / "run"


def test_artifact_card_and_logs(trained: tuple[Path, Path]) -> None:
    art, run = trained
    card = json.loads((art / "card.json").read_text())
    assert card["loader"] == "ppo" and card["kind"] == "timing"
    assert set(card["files"]) == {ACTOR_FILE, "model.zip", "vecnormalize.npz"}
    assert card["scenario"]["name"] == "default" and card["seed"] == 3
    assert card["timesteps"] == 1024 and card["config"]["n_envs"] == 8
    assert card["env_id"] == "pushrl/PushTiming-v1"
    assert card["obs_names"] == list(TIMING_OBS_NAMES)
    assert (run / "progress.csv").is_file()
    # TensorBoard event files only when tensorboard is installed (it is not a dependency)
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    assert bool(list(run.glob("events.out.tfevents*"))) == tensorboard
    header = (run / "progress.csv").read_text().splitlines()[0]
    assert "sim/sends_per_user_day" in header and "train/value_loss" in header
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1024", "step_512"]


def test_exported_actor_matches_the_sb3_model(trained: tuple[Path, Path]) -> None:
    art, _ = trained
    pol = load_policy(art)
    assert isinstance(pol, PPOTimingPolicy)
    torch.set_num_threads(1)
    venv = make_vec_env(TINY, "default", seed=0)
    model = make_model(TINY, venv, seed=0)
    load_weights(model, venv, art)  # the artifact doubles as a checkpoint
    venv.training = False  # keep the loaded statistics fixed while stepping
    obs = np.concatenate([venv.unnormalize_obs(venv.reset())] + [
        venv.unnormalize_obs(venv.step(np.random.default_rng(i).integers(0, 2, 8))[0])
        for i in range(60)])
    t, _ = model.policy.obs_to_tensor(venv.normalize_obs(obs))
    with torch.no_grad():
        want = model.policy.get_distribution(t).distribution.probs.numpy()
    got = pol.actor.probs(obs)
    assert np.abs(got - want).max() < 1e-6
    assert (got.argmax(1) == want.argmax(1)).all()


def test_policy_builds_the_env_observation(trained: tuple[Path, Path]) -> None:
    """Inside a rollout the policy's observation is the environment's, column for column;
    the training env produces the same array."""
    pol = load_policy(trained[0])
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    class Spy:
        name = "spy"

        def decide_batch(self, ctx, rng):  # type: ignore[no-untyped-def]
            seen.append((pol.observation(ctx), ctx.extra["obs"]))
            return pol.decide_batch(ctx, rng)

    rollout(Spy(), "default", n_users=20, days=2, seed=1)
    assert seen
    for mine, env in seen:
        np.testing.assert_array_equal(mine, env)
    venv = make_vec_env(TINY, "default", seed=4)
    wrapped = venv.venv.reset()  # below VecNormalize: the raw v1 observation
    sim = venv.unwrapped.venv.sim
    o = sim.observe()
    ctx = TimingContext(o.raw, o.allowed, sim.slots, o.bucket, sim.state, o.sends_today)
    np.testing.assert_array_equal(wrapped, pol.observation(ctx))


def test_resume_adds_timesteps(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    res = train_timing("default", out=tmp_path / "p", timesteps=512, seed=3, config=TINY,
                       resume=run / "checkpoints" / "step_512", run_dir=tmp_path / "r",
                       evaluate=False)
    assert res.timesteps == 1024 and res.card["resumed_from"].endswith("step_512")
    assert res.card["timesteps_executed_this_run"] == 512  # not the resumed run's 1024
    assert res.card["train/steps_per_second"] == round(512 / res.seconds)


def test_steps_per_second_divides_the_executed_steps(tmp_path: Path) -> None:
    # 600 requested; SB3 runs whole rollouts of 8 x 64 = 512 steps, so 1024 execute
    res = train_timing("default", out=tmp_path / "p", timesteps=600, seed=1, config=TINY,
                       run_dir=tmp_path / "r", evaluate=False)
    card = res.card
    assert card["timesteps_this_run"] == 600 and res.timesteps == 1024
    assert card["timesteps_executed_this_run"] == 1024
    assert card["train/steps_per_second"] == round(1024 / res.seconds)
    assert card["train/steps_per_second"] != round(600 / res.seconds)


def test_modified_checkpoint_or_artifact_is_refused(trained: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    art, run = trained
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(run / "checkpoints" / "step_512", ck)
    with open(ck / "model.zip", "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for model\.zip"):
        train_timing("default", out=tmp_path / "p", timesteps=512, config=TINY, resume=ck,
                     run_dir=tmp_path / "r", evaluate=False)
    bad = tmp_path / "art"
    shutil.copytree(art, bad)
    with open(bad / ACTOR_FILE, "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_policy(bad)


def test_cli_is_registered() -> None:
    from typer.testing import CliRunner

    from pushrl.cli.main import app

    res = CliRunner().invoke(app, ["train", "timing", "--help"])
    assert res.exit_code == 0
    for flag in ("--scenario", "--timesteps", "--seed", "--out", "--resume", "--json"):
        assert flag in res.output


@pytest.mark.slow
def test_cli_trains_and_writes_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pushrl.cli.main import app

    res = CliRunner().invoke(app, ["train", "timing", "--out", str(tmp_path / "p"),
                                   "--timesteps", "16384", "--no-eval", "--json",
                                   "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["timesteps"] == 16384 and Path(out["artifact"]).is_dir()


def test_cli_select_ships_the_heuristic_over_an_untrained_agent(tmp_path: Path) -> None:
    # --select: a 512-step agent (it pushes ~5 % of hours at random) loses to
    # most-active-hour on validation users: the selection says to ship the heuristic, with
    # the measured reason, and records it in the card
    from typer.testing import CliRunner

    from pushrl.cli.main import app

    res = CliRunner().invoke(app, [
        "train", "timing", "--out", str(tmp_path / "p"), "--timesteps", "512", "--no-eval",
        "--hp", "n_envs=8", "--hp", "n_steps=64", "--hp", "batch_size=256", "--hp",
        "n_epochs=2", "--select", "200", "--json", "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    sel = json.loads(res.stdout)["selection"]
    assert sel["ships"] == "most-active-hour"
    assert sel["reason"].startswith("ships most-active-hour: the learned agent is not better")
    assert sel["validation_users"] == 200 and sel["qualified"] == []
    card = json.loads((Path(json.loads(res.stdout)["artifact"]) / "card.json").read_text())
    assert card["selection"]["ships"] == "most-active-hour"
