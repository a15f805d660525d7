"""Where pushrl finds the files it reads at run time (scenarios, baseline definitions, data).

Search order, most specific first:

1. the current directory (``./envs``, ``./policies/baselines``, ``./simulator_data``): a
   user's own files win;
2. the repository checkout pushrl runs from, if any (an editable install or ``PYTHONPATH``);
3. the copy shipped inside the wheel, ``pushrl/_resources/`` (see ``setup.py``), which has
   the repository's layout, so a scenario's relative paths (``../simulator_data/synth``)
   resolve there too.

An explicit path always wins over a name.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: The repository root when pushrl runs from a checkout, else None.
CHECKOUT: Path | None = (_HERE.parent if (_HERE.parent / "pyproject.toml").is_file()
                         and (_HERE.parent / "envs").is_dir() else None)
#: The files shipped in the wheel (absent in a checkout, which holds the originals).
PACKAGED = _HERE / "_resources"


def shipped_root() -> Path:
    """The root holding the shipped ``envs/``, ``policies/baselines/`` and ``simulator_data/``:
    the checkout if pushrl runs from one, else the wheel's copy."""
    return CHECKOUT if CHECKOUT is not None else PACKAGED


def roots() -> list[Path]:
    """Directories searched for run-time files, most specific first (no duplicates)."""
    out: list[Path] = []
    for r in (Path.cwd(), CHECKOUT, PACKAGED):
        if r is not None and r.resolve() not in out:
            out.append(r.resolve())
    return out


def candidates(rel: str | Path) -> list[Path]:
    """``root / rel`` for every search root, most specific first (existing or not)."""
    return [r / rel for r in roots()]


def find(rel: str | Path) -> Path | None:
    """The first existing ``root / rel`` in search order, or None."""
    return next((p for p in candidates(rel) if p.exists()), None)
