"""pushrl: learn what and when to push from logged push notifications.

Layers import downward only: ``data -> sim -> envs -> policies -> ope -> serve/cli``.

Importing pushrl registers its Gymnasium environments (``pushrl/PushTiming-v1``, the
17-column ``pushrl/PushTiming-v0``, ``pushrl/PushItem-v1`` and the first OBD observation's
``pushrl/PushItem-v0``; see :mod:`pushrl.envs`) by
entry-point string (the one registration), so ``gymnasium.make`` works right after
``import pushrl`` while the environment code (and torch, ray) load only when an env is made.
Gymnasium itself (~0.25 s to import) is not imported by ``import pushrl``: the environments
are registered right away when Gymnasium is already imported, otherwise the moment it is
(:class:`_RegisterWithGymnasium`), so commands that never make an env (``pushrl train
bandit``, ``pushrl data ...``) do not pay for it.
"""

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

__version__ = "0.1.0"


def _register_envs() -> None:
    from gymnasium.envs.registration import register, registry

    for env_id, module, cls, vec_module, vec_cls in (
        ("pushrl/PushTiming-v1", "push_timing", "PushTimingEnv", "push_timing_vec",
         "PushTimingVectorEnv"),
        ("pushrl/PushTiming-v0", "push_timing", "make_v0", "push_timing_vec", "make_vec_v0"),
        ("pushrl/PushItem-v1", "push_item", "PushItemEnv", "push_item", "PushItemVectorEnv"),
        ("pushrl/PushItem-v0", "push_item", "make_v0", "push_item", "make_vec_v0"),
    ):
        if env_id not in registry:
            register(id=env_id, entry_point=f"pushrl.envs.{module}:{cls}",
                     vector_entry_point=f"pushrl.envs.{vec_module}:{vec_cls}",
                     kwargs={"scenario": "default"})


class _RegisterWithGymnasium(MetaPathFinder):
    """Finds the ``gymnasium`` package like the path finder does, and registers pushrl's
    environments as soon as the package has executed (so before ``import gymnasium``, or
    ``from gymnasium.envs.registration import registry``, returns to its caller). Removes
    itself after the first import."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None,
                  ) -> ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _register_envs()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "gymnasium" in sys.modules:
    _register_envs()
elif not any(isinstance(f, _RegisterWithGymnasium) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithGymnasium())
