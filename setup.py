"""Packaging of run-time files that live outside ``pushrl/`` in the repository.

The repository keeps scenarios (``envs/``), baseline definitions (``policies/baselines/``) and
the embedded synthetic data with its fitted simulator (``simulator_data/``) where users look
for them. A wheel ships the same files under ``pushrl/_resources/`` with the same relative
layout, so a scenario's relative paths (``../simulator_data/synth``) resolve in both places.
There is one copy of each file: the mapping below, not a duplicate tree. Everything else is
in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

_RESOURCES = {
    "pushrl._resources.envs": ("envs", ["*.toml"]),
    "pushrl._resources.policies.baselines": ("policies/baselines", ["*.toml"]),
    "pushrl._resources.simulator_data.synth": ("simulator_data/synth", ["*.parquet", "*.json"]),
    "pushrl._resources.simulator_data.fitted.synth": ("simulator_data/fitted/synth",
                                                      ["*.npz", "*.json"]),
    "pushrl._resources.simulator_data.obd.random": ("simulator_data/obd/random",
                                                    ["*.parquet", "*.json"]),
    "pushrl._resources.simulator_data.obd.bts": ("simulator_data/obd/bts",
                                                 ["*.parquet", "*.json"]),
    "pushrl._resources.simulator_data.fitted.obd": ("simulator_data/fitted/obd",
                                                    ["*.npz", "*.json"]),
    "pushrl._resources.templates.default": ("templates/default", ["v*/*.json"]),
}

setup(
    # namespace discovery, as pyproject's `packages.find` did: pushrl.compare has no __init__
    packages=[*find_namespace_packages(include=["pushrl", "pushrl.*"],
                                       exclude=["*.__pycache__"]), *_RESOURCES],
    package_dir={name: src for name, (src, _) in _RESOURCES.items()},
    package_data={"pushrl": ["py.typed"],
                  **{name: globs for name, (_, globs) in _RESOURCES.items()}},
)
