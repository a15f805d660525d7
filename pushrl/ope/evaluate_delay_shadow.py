"""Off-policy evaluation of a server's ``delay`` shadow from its own log (issue #16).

A shadow delay policy (``pushrl policies promote NAME --shadow`` of a delay artifact) decides
every new trigger beside the live one and is never acted on; its arms and probabilities are
logged in ``trigger_shadow`` (``pushrl logs export``: ``trigger_shadow.parquet``). Its value
is estimated from the triggers the live policy actually served, with the live arms' logged
probabilities (``triggers.pscore``), by THE delay OPE
(:func:`pushrl.ope.evaluate_delay_log.evaluate_delay_artifact` ->
:func:`pushrl.ope.evaluate_delay.evaluate_delay_policy`: IPW, DR, the deployment gate):

* **Candidate**: the shadow's artifact, found in the registry by its logged label
  (``NAME@vN`` -> ``REGISTRY/NAME/vN``); the evaluated rounds are the triggers it decided
  (its ``trigger_shadow`` rows), and its logged probability of each logged shadow arm is
  checked against the artifact's on the replayed context (``logged_check``: the artifact is
  the policy that ran, and the log replay's context is the server's).
* **Baseline**: the live policy (the log's ``triggers.policy`` label: the server's own
  ``fixed-Nh@heuristic`` is the baseline ``delay-fixed-Nh``, ``NAME@baseline`` a delay
  baseline, ``NAME@vN`` a registry artifact), unless one is named.

The result is the same as ``pushrl evaluate --policy REGISTRY/NAME/vN --data EXPORT`` on the
shadow's triggers, and is recorded in the shadow artifact's card, so ``pushrl policies
promote NAME`` applies its gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pushrl.errors import ArtifactError, DataError
from pushrl.ope.evaluate_delay_log import Progress, delay_spec, evaluate_delay_artifact

#: The exported shadow delay decisions (``pushrl logs export``).
SHADOW_FILE = "trigger_shadow.parquet"


def read_shadow(data: str | Path) -> pd.DataFrame:
    """The ``trigger_shadow`` rows of an exported log.

    Raises:
        DataError: the export has none.
    """
    p = Path(data) / SHADOW_FILE
    if not p.exists():
        raise DataError(f"{data} has no {SHADOW_FILE}: no delay shadow ran (promote a delay "
                        "artifact with `pushrl policies promote NAME --shadow` on a server with "
                        "--triggers) or the log was not exported with `pushrl logs export`")
    df = pd.read_parquet(p)
    if not len(df):
        raise DataError(f"{p} has no rows: the shadow decided no trigger")
    return df


def _artifact_of(label: str, registry: Path) -> Path:
    """``REGISTRY/NAME/vN`` of a logged ``NAME@vN`` label, verified to be a delay artifact."""
    name, _, version = label.rpartition("@")
    path = Path(registry) / name / version
    if not name or delay_spec(path) is None:
        raise ArtifactError(f"the shadow {label!r} is not a delay artifact in {registry} "
                            f"(looked for {path}); pass the server's --registry")
    return path


def shadow_label(shadow: pd.DataFrame, label: str | None = None) -> str:
    """The shadow to evaluate: ``label``, else the only one in the log, else the latest.

    Raises:
        DataError: ``label`` did not run as a shadow on this log.
    """
    ran = shadow.sort_values("decided_ts", kind="stable")["policy"].astype(str)
    if label is None:
        return str(ran.iloc[-1])
    if label not in set(ran):
        raise DataError(f"{label!r} never ran as the delay shadow on this log; shadows: "
                        f"{', '.join(sorted(set(ran)))}")
    return label


def live_baseline(triggers: pd.DataFrame, registry: Path) -> str:
    """The delay baseline name or artifact path of the live policy that decided ``triggers``.

    Raises:
        DataError: several live policies, or one that is neither a delay baseline nor a
            registry artifact (pass a baseline explicitly).
    """
    from pushrl.policies.baselines import registry as baselines

    labels = sorted(set(triggers["policy"].astype(str)))
    if len(labels) != 1:
        raise DataError(f"the shadow's triggers were served by {len(labels)} live delay "
                        f"policies ({', '.join(labels)}); pass --baseline")
    label = labels[0]
    name, _, version = label.rpartition("@")
    if version == "heuristic" and name.startswith("fixed-"):
        name = f"delay-{name}"
    if version in ("heuristic", "baseline"):
        if name in baselines():
            return name
    else:
        path = Path(registry) / name / version
        if delay_spec(path) is not None:
            return str(path)
    raise DataError(f"the live delay policy {label!r} is neither a delay baseline nor a delay "
                    f"artifact in {registry}; pass --baseline")


def evaluate_delay_shadow(data: str | Path, registry: str | Path, *, label: str | None = None,
                          baseline: str | None = None, n_bootstrap: int = 1000,
                          seed: int = 0, alpha: float = 0.05, allow_in_sample: bool = False,
                          progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate the delay shadow of the exported log ``data`` (module docstring).

    Args:
        data: A ``pushrl logs export`` directory (``trigger_shadow.parquet``).
        registry: The server's registry (the shadow's artifact).
        label: Which shadow (``NAME@vN``) when several ran; default the latest.
        baseline: A delay baseline name or artifact; default the live policy.
        n_bootstrap, seed, alpha, allow_in_sample, progress: As
            :func:`~pushrl.ope.evaluate_delay_log.evaluate_delay_artifact`.

    Returns:
        :func:`~pushrl.ope.evaluate_delay_log.evaluate_delay_artifact`'s result plus
        ``shadow`` (``{"label", "artifact", "decisions"}``).
    """
    from pushrl.data.io import read_tables

    sh = read_shadow(data)
    lab = shadow_label(sh, label)
    art = _artifact_of(lab, Path(registry))
    mine = sh[sh["policy"].astype(str) == lab]
    if baseline is None:
        t = read_tables(data)["triggers"]
        baseline = live_baseline(t[t["trigger_id"].astype(str).isin(
            mine["trigger_id"].astype(str))], Path(registry))
    out = evaluate_delay_artifact(art, data, baseline=baseline, n_bootstrap=n_bootstrap,
                                  seed=seed, alpha=alpha, allow_in_sample=allow_in_sample,
                                  progress=progress, logged=mine)
    out["shadow"] = {"label": lab, "artifact": str(art), "decisions": len(mine)}
    return out
