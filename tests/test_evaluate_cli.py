"""`pushrl evaluate`: the exit code is the gate's verdict (0 pass, 1 blocked, 2 user error),
`--json` states the failed rules, estimates and report paths, and the HTML is self-contained."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pushrl.data.synth import SynthConfig, WorldParams, synthesize
from pushrl.policies.registry import save_artifact
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pushrl("evaluate", *args)


@pytest.fixture(scope="module")
def item_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 users x 7 days, 20 items whose quality matters a lot (click_quality 3)."""
    d = tmp_path_factory.mktemp("items_world")
    params = WorldParams(p_send_levels=(0.04, 0.06, 0.08), click_quality=3.0)
    synthesize(d, SynthConfig(users=500, days=7, seed=1, items=20, params=params))
    return d


def test_blocked_candidate_exits_1_with_json_and_self_contained_report(tmp_path: Path) -> None:
    # a registry artifact (wrapping the uniform-random baseline): without --out the report
    # goes into the artifact, and the gate evidence into its card for `policies promote`
    art = save_artifact(tmp_path / "policies" / "unif", kind="item", loader="baseline",
                        files={"params.json": b"{}"}, card={"baseline": "uniform-random"})
    r = run("--data", "simulator_data/obd/random", "--policy", str(tmp_path / "policies/unif"),
            "--estimators", "ipw,dr", "--n-bootstrap", "200", "--json")
    assert r.returncode == 1, r.stderr
    card = json.loads((art / "card.json").read_text())
    assert card["ope"]["gate"]["passed"] is False
    assert card["ope"]["gate"]["failed_rules"] == ["improvement_lower_bound"]
    d = json.loads(r.stdout)
    assert d["passed"] is False and d["exit_code"] == 1 and d["kind"] == "item"
    assert d["gate"]["failed_rules"] == ["improvement_lower_bound"]
    assert d["gate"]["messages"][0].startswith("95% lower bound of the improvement is")
    assert d["gate"]["estimator"] == "dr" and d["baseline"]["label"] == "logging"
    assert set(d["estimates"]) == {"ipw", "dr"}
    for e in d["estimates"].values():
        assert e["lower"] <= e["value"] <= e["upper"] and e["alpha"] == 0.05
    assert d["diagnostics"]["ess"] == pytest.approx(10000)
    assert d["data"]["n_rounds"] == 10000 and d["settings"]["n_bootstrap"] == 200
    assert Path(d["report"]["html"]).parent == art / "ope" / "vs_logging"
    html = Path(d["report"]["html"]).read_text()
    assert Path(d["report"]["markdown"]).exists()
    assert html.count("data:image/png;base64,") == 2  # forest plot and weight histogram
    assert not re.search(r"""(src|href)=["'](?!data:)""", html), "external resource in HTML"
    assert "BLOCK" in html and "improvement_lower_bound" in html


def test_passing_candidate_exits_0(item_world: Path, tmp_path: Path) -> None:
    # most-popular is fitted on the evaluated logs, which the gate refuses unless waived
    r = run("--data", str(item_world), "--policy", "most-popular", "--estimators", "ipw,dr",
            "--n-bootstrap", "300", "--out", str(tmp_path), "--allow-in-sample")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout and "in-sample" in r.stdout
    assert (tmp_path / "ope_report.html").exists()


@pytest.mark.parametrize(("args", "pattern"), [
    (("--data", "/no/such/dir", "--policy", "uniform-random"), "does not exist"),
    (("--data", "simulator_data/obd/random", "--policy", "no-such-policy"),
     "neither a policy artifact"),
])
def test_user_error_exits_2_with_one_line(args: tuple[str, ...], pattern: str) -> None:
    r = run(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], r.stderr
