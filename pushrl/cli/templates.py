"""`pushrl templates`: list, propose (generator), approve / reject, render message templates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pushrl.cli._common import emit, out

if TYPE_CHECKING:
    from pushrl.data.io import Dataset
    from pushrl.policies.templates import TemplateCatalog

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


_ARMS = typer.Option(None, "--trigger", help="Arms: approved templates of this trigger "
                                             "(default: every approved template the logs show).")


def _arm_ids(cat: TemplateCatalog, ds: Dataset, trigger: str | None,
             locale: str | None) -> list[str]:
    """Approved arms of the selection that the logs show, in catalog order."""
    from pushrl.errors import DataError

    p = ds.pushes
    shown = set(p["template_id"].dropna().astype(str)) if "template_id" in p else set()
    ids = [t.id for t in cat.arms(trigger=trigger, locale=locale) if t.id in shown]
    if not ids:
        raise DataError("the logs show none of the catalog's approved templates of this "
                        "selection (`template_id` column); log templates first or pass "
                        "the catalog the logs were made with")
    return ids


@app.command("train")
def train(data: Path = typer.Argument(..., help="pushlog v1 directory with template_id and "
                                                  "pscore_template."),
          out: Path = typer.Option(Path("policies/vw-template"), "--out",
                                   help="Registry directory (a new version vN inside)."),
          trigger: str | None = _ARMS,
          locale: str | None = typer.Option(None, "--locale", help="Arms of this locale."),
          reward: str | None = typer.Option(
              None, "--reward",
              help="Reward the template slot learns from (default: `opened`, "
                   "template_policy.TEMPLATE_TRAIN_REWARD: the copy acts on the open, the item "
                   "on what follows; `logs` = the logs' objective; or a formula)."),
          learning_rate: float = typer.Option(0.02, "--learning-rate", help="VW -l."),
          new_explore: float = typer.Option(0.1, "--new-explore",
                                            help="Probability for arms seen < --new-min-shows "
                                                 "times."),
          new_min_shows: int = typer.Option(200, "--new-min-shows", min=0),
          catalog: Path = _CAT, as_json: bool = _JSON) -> None:
    """Train the template slot (VW over the approved arms, given user, item and recency)."""
    from pushrl.data.validate import load_dataset
    from pushrl.policies.template_policy import (
        TEMPLATE_TRAIN_REWARD,
        template_rounds,
        train_template_policy,
    )
    from pushrl.policies.templates import load_catalog
    from pushrl.policies.vw import VWConfig

    cat = load_catalog(catalog)
    ds, _ = load_dataset(data)
    ids = _arm_ids(cat, ds, trigger, locale)
    train_reward = (TEMPLATE_TRAIN_REWARD if reward is None
                    else None if reward in ("", "logs") else reward)
    rounds = template_rounds(ds, ids, reward=train_reward,
                             catalog_ref=f"{cat.name}@{cat.version}")
    pol = train_template_policy(rounds, VWConfig(learning_rate=learning_rate),
                                new_explore=new_explore, new_min_shows=new_min_shows)
    art = pol.save(out, {"data": str(data), "data_fingerprint": ds.fingerprint(),
                         "reward": rounds.weights.item_formula(), "n_rounds": rounds.n_rounds})
    res = {"artifact": str(art), "arms": ids, "n_rounds": rounds.n_rounds}
    if as_json:
        emit(res, True)
    else:
        typer.echo(f"wrote {art}: {len(ids)} arms, {rounds.n_rounds:,} rounds")


@app.command("evaluate")
def evaluate(policy: Path = typer.Argument(..., help="Template policy artifact "
                                                     "(policies/NAME[/vN])."),
             data: Path = typer.Option(..., "--data", help="pushlog v1 directory (held out)."),
             baseline: str = typer.Option("logging", "--baseline",
                                          help="logging, uniform or fixed:TEMPLATE_ID."),
             as_json: bool = _JSON) -> None:
    """OPE (IPW, SNIPW, DR, SNDR) of a template policy on logs, and the deployment gate."""
    from pushrl.data.validate import load_dataset
    from pushrl.errors import ArtifactError
    from pushrl.ope.evaluate_template import evaluate_template_policy
    from pushrl.policies.base import ItemPolicy
    from pushrl.policies.registry import load_policy
    from pushrl.policies.template_policy import (
        FixedTemplate,
        TemplatePolicy,
        UniformTemplate,
        template_rounds,
    )

    pol = load_policy(policy)
    if not isinstance(pol, TemplatePolicy):
        raise ArtifactError(f"{policy} is not a template policy; train one with "
                            "`pushrl templates train`")
    ds, _ = load_dataset(data)
    rounds = template_rounds(ds, pol.arm_ids, catalog_ref=pol.catalog_ref)
    base: ItemPolicy | None = None
    if baseline == "uniform":
        base = UniformTemplate()
    elif baseline.startswith("fixed:"):
        tid = baseline.split(":", 1)[1]
        if tid not in pol.arm_ids:
            raise ArtifactError(f"--baseline {baseline}: {tid!r} is not an arm; arms: "
                                f"{', '.join(pol.arm_ids)}")
        base = FixedTemplate(arm=pol.arm_ids.index(tid))
    elif baseline != "logging":
        raise ArtifactError(f"--baseline must be logging, uniform or fixed:TEMPLATE_ID, "
                            f"got {baseline!r}")
    res = evaluate_template_policy(rounds, pol, base)
    if as_json:
        emit(res, True)
        return
    echo_slot_evaluation(res, baseline)


def echo_slot_evaluation(res: dict[str, Any], baseline: str) -> None:
    """Print a slot (template, channel) OPE result: one line per estimator, then the
    on-policy value and the gate's verdict against ``baseline``."""
    for name, e in res["estimates"].items():
        typer.echo(f"{name:6s} {e['value']:.5f} [{e['lower']:.5f}, {e['upper']:.5f}]")
    g = res["gate"]
    typer.echo(f"on-policy {res['on_policy']:.5f}; gate vs {baseline}: "
               f"{'PASS' if g['passed'] else 'FAIL ' + ', '.join(g['failed_rules'])}")
