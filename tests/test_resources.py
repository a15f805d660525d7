"""Run-time files: found in the current directory, the checkout, then the wheel's copy."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from pushrl import resources
from pushrl.envs.scenario import SCENARIO_DIR, load_scenario
from pushrl.errors import ScenarioError
from pushrl.policies.baselines import DEFINITIONS, definition

ROOT = Path(__file__).resolve().parents[1]


def _wheel_mapping() -> dict[str, str]:
    """setup.py's ``package -> repository directory`` map of files shipped in the wheel."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "_RESOURCES")
    value = ast.literal_eval(node.value)
    return {pkg: src for pkg, (src, _globs) in value.items()}


def test_checkout_is_the_shipped_root() -> None:
    assert resources.CHECKOUT == ROOT
    assert SCENARIO_DIR == ROOT / "envs" and DEFINITIONS == ROOT / "policies" / "baselines"


def test_wheel_ships_every_scenario_and_what_it_reads() -> None:
    """Each package maps to the repository directory of the same relative path, so the
    scenarios' relative paths resolve inside ``pushrl/_resources`` as they do here."""
    mapping = _wheel_mapping()
    for pkg, src in mapping.items():
        assert pkg == "pushrl._resources." + src.replace("/", "."), (pkg, src)
    shipped = set(mapping.values())
    assert {"envs", "policies/baselines"} <= shipped
    for toml in sorted(SCENARIO_DIR.glob("*.toml")):
        sc = load_scenario(toml.stem)
        for d in (sc.data, sc.sim):
            assert d.relative_to(ROOT).as_posix() in shipped, (toml.name, d)
    for toml in sorted(DEFINITIONS.glob("*.toml")):
        data = definition(toml.stem).get("params", {}).get("data")
        if data:
            assert Path(data).as_posix() in shipped, (toml.name, data)


def test_user_directory_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "envs").mkdir()
    text = (SCENARIO_DIR / "default.toml").read_text().replace('name = "default"',
                                                                'name = "mine"')
    text = text.replace('"../simulator_data', f'"{ROOT}/simulator_data')
    (tmp_path / "envs" / "default.toml").write_text(text)
    (tmp_path / "envs" / "only-here.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert load_scenario("default").name == "mine"
    assert load_scenario("only-here").path == tmp_path / "envs" / "only-here.toml"
    with pytest.raises(ScenarioError, match=r"known: .*only-here"):
        load_scenario("nowhere")


def test_packaged_root_is_used_without_a_checkout(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel's layout (no checkout): names resolve in ``PACKAGED``."""
    pkg = tmp_path / "_resources"
    for rel in ("envs", "policies/baselines"):
        (pkg / rel).mkdir(parents=True)
    (pkg / "envs" / "packaged.toml").write_text('name = "packaged"\ndata = "x"\nsim = "y"\n')
    (pkg / "policies" / "baselines" / "never-send.toml").write_text('kind = "timing"\n')
    monkeypatch.setattr(resources, "CHECKOUT", None)
    monkeypatch.setattr(resources, "PACKAGED", pkg)
    monkeypatch.chdir(tmp_path)
    assert resources.shipped_root() == pkg
    assert load_scenario("packaged").data == (pkg / "envs" / "x").resolve()
    assert tomllib.loads((pkg / "policies/baselines/never-send.toml").read_text()) == \
        definition("never-send")


def test_wheel_has_every_subpackage() -> None:
    """setup.py's discovery finds every directory of modules (pushrl.compare has no
    ``__init__.py``: a plain find_packages would leave it out of the wheel)."""
    from setuptools import find_namespace_packages

    found = set(find_namespace_packages(str(ROOT), include=["pushrl", "pushrl.*"],
                                        exclude=["*.__pycache__"]))
    dirs = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
            for p in (ROOT / "pushrl").rglob("*.py") if "__pycache__" not in p.parts}
    assert dirs <= found, dirs - found
    assert "find_namespace_packages(include=[\"pushrl\", \"pushrl.*\"]" in \
        (ROOT / "setup.py").read_text()
