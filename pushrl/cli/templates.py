"""`pushrl templates`: list, propose (generator), approve / reject, render message templates."""

from __future__ import annotations

from pathlib import Path

import typer

from pushrl.cli._common import emit, out

app = typer.Typer(help="Message templates: list, propose (pending), approve, render.",
                  no_args_is_help=True)

_CAT = typer.Option(Path("templates/default"), "--catalog",
                    help="Catalog templates/NAME (newest version) or templates/NAME/vN; new "
                         "versions are written to templates/NAME under the working directory.")
_JSON = typer.Option(False, "--json", help="Print JSON.")


def _out_dir(catalog: Path) -> Path:
    """Where the next version goes: ``templates/NAME`` (a version directory's parent)."""
    return catalog.parent if catalog.name[1:].isdigit() and catalog.name[:1] == "v" else catalog


@app.command("list")
def list_(catalog: Path = _CAT,
          status: str | None = typer.Option(None, "--status",
                                            help="Only approved, pending or rejected."),
          as_json: bool = _JSON) -> None:
    """Every template of the catalog with its status (approved ones are the arms)."""
    from pushrl.policies.templates import load_catalog

    cat = load_catalog(catalog)
    rows = [t for t in cat.templates if status is None or t.status == status]
    if as_json:
        emit({"catalog": f"{cat.name}@{cat.version}",
              "templates": [t.__dict__ for t in rows]}, True)
        return
    out.print(f"templates {cat.name}@{cat.version} (approved = arms)", highlight=False)
    w = max((len(x.id) for x in rows), default=2)
    for x in rows:
        out.print(f"{x.id:<{w}}  {x.status:<8}  {x.trigger}/{x.locale}/{x.channel}  "
                  f"{x.source}  {x.text}", highlight=False, markup=False, soft_wrap=True)


@app.command("propose")
def propose(trigger: str = typer.Option(..., "--trigger", help="Campaign / trigger type."),
            locale: str = typer.Option("en", "--locale", help="Locale of the variants."),
            channel: str = typer.Option("push", "--channel", help="Channel of the variants."),
            n: int = typer.Option(3, "--n", help="Most variants to propose."),
            generator: str = typer.Option("combine", "--generator",
                                          help="combine (deterministic phrase combinations) or "
                                               "module:attribute of your own generator."),
            catalog: Path = _CAT, as_json: bool = _JSON) -> None:
    """Propose new variants; they are `pending` (not arms) until approved."""
    from pushrl.policies.template_gen import get_generator
    from pushrl.policies.template_gen import propose as do_propose
    from pushrl.policies.templates import load_catalog, save_catalog

    cat = load_catalog(catalog)
    new_cat, new = do_propose(cat, get_generator(generator), trigger=trigger, locale=locale,
                              channel=channel, n=n)
    res = {"proposed": [t.id for t in new], "catalog": f"{cat.name}@{cat.version}"}
    if new:
        saved = save_catalog(new_cat, _out_dir(catalog),
                             change=f"proposed {len(new)} by {generator}")
        res["catalog"] = f"{saved.name}@{saved.version}"
    if as_json:
        emit(res, True)
        return
    if not new:
        out.print(f"no new variant: every combination exists in {cat.name}@{cat.version}")
    for t in new:
        out.print(f"pending {t.id}: {t.text}", highlight=False, markup=False, soft_wrap=True)
    if new:
        out.print(f"wrote {res['catalog']}; approve with `pushrl templates approve ID`")


def _set_status(template_id: str, catalog: Path, status: str, as_json: bool) -> None:
    from pushrl.policies.templates import load_catalog, save_catalog

    cat = load_catalog(catalog)
    saved = save_catalog(cat.with_status(template_id, status), _out_dir(catalog),
                         change=f"{status} {template_id}")
    res = {"template": template_id, "status": status, "catalog": f"{saved.name}@{saved.version}"}
    if as_json:
        emit(res, True)
    else:
        out.print(f"{template_id} is {status} in {res['catalog']}")


@app.command("approve")
def approve(template_id: str = typer.Argument(..., help="Template id."),
            catalog: Path = _CAT, as_json: bool = _JSON) -> None:
    """Approve a template: it becomes an arm (writes the next catalog version)."""
    _set_status(template_id, catalog, "approved", as_json)


@app.command("reject")
def reject(template_id: str = typer.Argument(..., help="Template id."),
           catalog: Path = _CAT, as_json: bool = _JSON) -> None:
    """Reject a template: it is no longer an arm (writes the next catalog version)."""
    _set_status(template_id, catalog, "rejected", as_json)


@app.command("render")
def render(data: Path = typer.Argument(..., help="pushlog v1 directory (its items table)."),
           template_id: list[str] = typer.Option([], "--template",
                                                 help="Template id (repeat; default: every "
                                                      "approved one)."),
           item: str | None = typer.Option(None, "--item", help="item_id (default: the first)."),
           top_category: str | None = typer.Option(None, "--top-category",
                                                   help="The user's top category (default: "
                                                        "the item's)."),
           trigger: str | None = typer.Option(None, "--trigger", help="Only this trigger."),
           locale: str | None = typer.Option(None, "--locale", help="Only this locale."),
           catalog: Path = _CAT, as_json: bool = _JSON) -> None:
    """Validate the catalog against DATA's items (slots, lengths) and render for one item."""
    from pushrl.data.io import read_raw
    from pushrl.errors import DataError, TemplateError
    from pushrl.policies.templates import Renderer, load_catalog

    cat = load_catalog(catalog)
    items = read_raw(data, "items")
    if items is None:
        raise DataError(f"{data} has no items table; pass a pushlog v1 directory")
    arms = [cat.get(t) for t in template_id] or list(cat.arms(trigger=trigger, locale=locale))
    pending = [t.id for t in arms if t.status != "approved"]
    if pending:
        raise TemplateError(f"template(s) {pending} are not approved; approve them first")
    cats = sorted(items["category"].astype(str).unique()) if "category" in items else []
    r = Renderer(cat, items, cats, arms)
    ids = items["item_id"].astype(str).tolist()
    if item is not None and item not in ids:
        raise DataError(f"unknown item {item!r}; pass an item_id of {data}/items")
    j = ids.index(item) if item is not None else 0
    top = top_category if top_category is not None else (
        str(items["category"].iloc[j]) if "category" in items else "")
    texts = {t.id: r.render(a, j, top) for a, t in enumerate(r.arms)}
    if as_json:
        emit({"catalog": f"{cat.name}@{cat.version}", "item": ids[j], "top_category": top,
              "texts": texts}, True)
        return
    for tid, text in texts.items():
        out.print(f"{tid}: {text}", highlight=False, markup=False)
