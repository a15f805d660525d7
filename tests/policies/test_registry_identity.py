"""Registry artifacts: the identity is the registry path; unreadable cards are clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pushrl.errors import ArtifactError
from pushrl.policies.registry import load_policy, read_card, save_artifact, verify_artifact


def _artifact(reg: Path, name: str = "good") -> Path:
    return save_artifact(reg / name, kind="timing", loader="baseline", files={"n.txt": b"x"},
                         card={"baseline": "never-send", "params": {},
                               "ope": {"gate": {"passed": True}}})


@pytest.mark.parametrize("target", ["my-experiment/v1", "good/v7"])
def test_copied_or_renamed_directory_is_refused(tmp_path: Path, target: str) -> None:
    src = _artifact(tmp_path)
    assert verify_artifact(src)["name"] == "good"
    dst = tmp_path / target
    shutil.copytree(src, dst)
    with pytest.raises(ArtifactError, match="identity is its registry path"):
        verify_artifact(dst)
    with pytest.raises(ArtifactError, match=r"says it is good@v1 but it lives at"):
        load_policy(dst)


def test_ad_hoc_export_directory_still_loads(tmp_path: Path) -> None:
    d = save_artifact(tmp_path / "export", kind="timing", loader="baseline",
                      files={"n.txt": b"x"}, card={"baseline": "never-send"}, versioned=False)
    assert load_policy(d).kind == "timing"


@pytest.mark.parametrize(("text", "match"), [
    ("[]", "must be a JSON object, got list"),
    ("{not json", "not valid JSON"),
    ('"card"', "must be a JSON object, got str"),
])
def test_bad_card_is_an_artifact_error(tmp_path: Path, text: str, match: str) -> None:
    d = _artifact(tmp_path)
    (d / "card.json").write_text(text)
    with pytest.raises(ArtifactError, match=match):
        read_card(d)
    with pytest.raises(ArtifactError, match=match):
        verify_artifact(d)


def test_files_must_be_a_mapping(tmp_path: Path) -> None:
    d = _artifact(tmp_path)
    card = json.loads((d / "card.json").read_text())
    card["files"] = ["n.txt"]
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="`files` must map"):
        verify_artifact(d)
