"""pushrl: learn what and when to push from logged push notifications.

Layers import downward only: ``data -> sim -> envs -> policies -> ope -> serve/cli``.
"""

__version__ = "0.1.0"
