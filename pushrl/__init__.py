"""pushrl: learn what and when to push from logged push notifications.

Layers import downward only: ``data -> sim -> envs -> policies -> ope -> serve/cli``.

Importing pushrl registers its Gymnasium environments (``pushrl/PushTiming-v1``, the
17-column ``pushrl/PushTiming-v0``, ``pushrl/PushItem-v1`` and the first OBD observation's
``pushrl/PushItem-v0``; see :mod:`pushrl.envs`) by
entry-point string (the one registration), so ``gymnasium.make`` works right after
``import pushrl`` while the environment code (and torch, ray) load only when an env is made.
"""

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


_register_envs()
