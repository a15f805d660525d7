"""Message templates: catalog checks at load time, rendering, registry versions, generation
with approval, and the `pushrl templates` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pushrl.errors import TemplateError
from pushrl.policies.template_gen import CombineGenerator, get_generator, propose
from pushrl.policies.templates import (
    CATALOG_FILE,
    Renderer,
    TemplateCatalog,
    load_catalog,
    save_catalog,
)
from tests.cli_runner import run_pushrl

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "templates" / "default"


def _raw() -> dict[str, Any]:
    return json.loads((SHIPPED / "v1" / CATALOG_FILE).read_text())


def _items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": ["a", "b"], "name": ["Red shoe", "Blue bag"],
                         "category": ["shoes", "bags"], "price": [79.5, 120.0],
                         "discount_pct": [30.0, 0.0]})


def test_shipped_catalog_loads_verified() -> None:
    cat = load_catalog(SHIPPED)
    assert (cat.name, cat.version) == ("default", "v1")
    assert len(cat.arms(trigger="recommendation", locale="en")) == 4
    assert all(t.status == "approved" for t in cat.arms())


def _with_text(text: str, **kw: Any) -> dict[str, Any]:
    d = _raw()
    d["templates"][0] = {**d["templates"][0], "text": text, **kw}
    return d


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown slot", _with_text("Hi {{ first_name }}"), r"unknown slot\(s\) \['first_name'\]"),
    ("syntax", _with_text("Hi {{ item_name "), "syntax error on line 1"),
    ("too long", _with_text("x" * 100 + "{{ item_name }}"),
     r"renders to 132 characters .* over the push limit of 120"),
    ("channel", _with_text("{{ item_name }}", channel="sms"), "channel 'sms'"),
    ("status", _with_text("{{ item_name }}", status="maybe"), "status 'maybe'"),
    ("sandbox", _with_text("{{ item_name.__class__.__mro__ }}"), "fails to render"),
]


@pytest.mark.parametrize(("name", "raw", "match"), BAD, ids=[b[0] for b in BAD])
def test_bad_catalog_is_one_line_error_at_load(name: str, raw: dict[str, Any],
                                               match: str) -> None:
    with pytest.raises(TemplateError, match=match) as exc:
        TemplateCatalog.from_dict(raw)
    assert "\n" not in str(exc.value)


def test_duplicate_id_and_missing_slot_limit() -> None:
    d = _raw()
    d["templates"].append(dict(d["templates"][0]))
    with pytest.raises(TemplateError, match="duplicate id"):
        TemplateCatalog.from_dict(d)
    d = _raw()
    del d["slot_max_chars"]["price"]
    with pytest.raises(TemplateError, match=r"lacks \['price'\]"):
        TemplateCatalog.from_dict(d)


def test_render_fills_slots_with_locale_decimal_mark() -> None:
    cat = load_catalog(SHIPPED)
    r = Renderer(cat, _items(), ["shoes", "bags"], [cat.get("rec_urgent_en"),
                                                    cat.get("rec_personal_de"),
                                                    cat.get("drop_en")])
    assert r.render(0, 0, "bags") == "Only a few left: Red shoe for 79.50. Grab it now!"
    assert r.render(1, 1, 0) == "Für deine Liebe zu shoes: Blue bag für 120,00 €."
    assert r.render(2, 0, 0) == "Price drop: Red shoe is now 79.50, 30% off."
    assert r.render(2, 1, 0) == "Price drop: Blue bag is now 120.00."


def test_items_are_checked_against_the_catalog_at_load() -> None:
    cat = load_catalog(SHIPPED)
    with pytest.raises(TemplateError, match="no `discount_pct` column"):
        Renderer(cat, _items().drop(columns="discount_pct"), ["shoes"],
                 [cat.get("rec_deal_en")])
    long = _items().assign(name=["x" * 40, "y"])
    with pytest.raises(TemplateError, match=r"item 'a' has a item_name of 40 .*=32"):
        Renderer(cat, long, ["shoes"], [cat.get("rec_plain_en")])
    # item_name falls back to item_id
    r = Renderer(cat, _items().drop(columns="name"), ["shoes"], [cat.get("rec_plain_en")])
    assert r.render(0, 1, 0) == "b is waiting for you."


def test_exhaustive_render_catches_a_conditional_branch() -> None:
    """The worst case (every slot at its limit) passes; a branch only one item takes
    overflows and is refused at load, naming that item."""
    d = _raw()
    d["channels"]["push"] = 120
    d["templates"] = [{"id": "cond", "trigger": "t", "locale": "en", "channel": "push",
                       "text": "{% if discount_pct == 30 %}" + "z" * 115 + "{% endif %}"
                               "{{ item_name }}"}]
    cat = TemplateCatalog.from_dict(d)  # worst case 99 % takes the short branch
    with pytest.raises(TemplateError, match="renders item 'a' to 123"):
        Renderer(cat, _items().assign(name=["Red shoe", "B"]), ["shoes"])


def test_versions_are_immutable_and_checksummed(tmp_path: Path) -> None:
    cat = load_catalog(SHIPPED)
    out = tmp_path / "templates" / "default"
    v2 = save_catalog(cat.with_status("rec_deal_en", "rejected"), out)
    assert v2.version == "v2"  # continues the shipped numbering in a fresh directory
    assert "rec_deal_en" not in {t.id for t in load_catalog(out).arms()}
    f = out / "v2" / CATALOG_FILE
    f.write_text(f.read_text().replace("waiting", "WAITING"))
    with pytest.raises(TemplateError, match="checksum mismatch"):
        load_catalog(out)


def test_combine_generator_is_deterministic_and_pending() -> None:
    cat = load_catalog(SHIPPED)
    new_cat, new = propose(cat, CombineGenerator(), trigger="recommendation", locale="en", n=4)
    again = propose(cat, get_generator("combine"), trigger="recommendation", locale="en", n=4)[1]
    assert [t.id for t in new] == [t.id for t in again] and len(new) == 4
    assert new[0].text == "New for you: {{ item_name }}. Take a look."
    assert all(t.status == "pending" and t.source == "generator:combine" for t in new)
    assert not {t.id for t in new} & {t.id for t in new_cat.arms()}  # not arms yet
    approved = new_cat.with_status(new[0].id, "approved")
    assert new[0].id in {t.id for t in approved.arms()}
    # the next proposal skips texts that exist
    nxt = propose(new_cat, CombineGenerator(), trigger="recommendation", locale="en", n=1)[1]
    assert nxt[0].text not in {t.text for t in new}
    with pytest.raises(TemplateError, match="no opener/body/cta phrase"):
        propose(cat, CombineGenerator(), trigger="price_drop", locale="en")
    with pytest.raises(TemplateError, match="unknown generator"):
        get_generator("gpt")


class _Long:
    name = "long"

    def propose(self, catalog: TemplateCatalog, *, trigger: str, locale: str, channel: str,
                n: int) -> list[Any]:
        from pushrl.policies.templates import Template

        return [Template("long1", trigger, locale, channel, "w" * 200)]


def test_a_plugged_generator_passes_the_same_checks() -> None:
    with pytest.raises(TemplateError, match="over the push limit"):
        propose(load_catalog(SHIPPED), _Long(), trigger="x", locale="en")


def test_cli_list_propose_approve_render(tmp_path: Path) -> None:
    def run_cli(args: list[str]) -> Any:
        return run_pushrl(*args, cwd=tmp_path)

    shutil.copytree(SHIPPED, tmp_path / "templates" / "default")
    r = run_cli(["templates", "propose", "--trigger", "recommendation", "--n", "2", "--json"])
    assert r.returncode == 0, (r.stdout + r.stderr)
    res = json.loads(r.stdout)
    assert res["catalog"] == "default@v2" and len(res["proposed"]) == 2
    r = run_cli(["templates", "list", "--status", "pending", "--json"])
    assert [t["id"] for t in json.loads(r.stdout)["templates"]] == res["proposed"]
    r = run_cli(["templates", "approve", res["proposed"][0], "--json"])
    assert json.loads(r.stdout)["catalog"] == "default@v3"
    items = tmp_path / "data"
    items.mkdir()
    _items().to_parquet(items / "items.parquet")
    r = run_cli(["templates", "render", str(items), "--template", res["proposed"][0],
                 "--item", "b", "--json"])
    assert r.returncode == 0, (r.stdout + r.stderr)
    assert json.loads(r.stdout)["texts"] == {res["proposed"][0]:
                                             "New for you: Blue bag. Take a look."}
    for args, msg in ((["templates", "approve", "nope"], "unknown template 'nope'"),
                      (["templates", "render", str(items), "--template", res["proposed"][1]],
                       "are not approved"),
                      (["templates", "render", str(items), "--item", "zz"], "unknown item"),
                      (["templates", "list", "--catalog", "nowhere/x"],
                       "no template catalog at nowhere/x")):
        r = run_cli(args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in (r.stdout + r.stderr), (r.stdout + r.stderr)
