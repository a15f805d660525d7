"""The policy server: FastAPI app, durable log, feature state, guardrails, registry ops.

Run it::

    pushrl serve --registry policies --host 127.0.0.1 --port 8000 [--state DIR]
                 [--api-keys FILE | --insecure] [--catalog DATASET] [--sync full|normal]

With nothing promoted it serves the default baselines (``most-active-hour`` timing with its
daily cap, ``most-popular`` item; a fresh state dir seeds its catalog from the data the item
baseline was fit on). ``pushrl policies promote NAME`` (OPE gate, or ``--force --reason``)
swaps policies in a running server within ~1 s; ``pushrl logs export --out DIR`` writes the
decision log as pushlog v1 for the next round of training.

Modules (each one concern):

================  ==========================================================================
``app``           HTTP routes, error mapping (4xx ``{error, detail}``), auth dependencies
``server``        request logic: users, events, micro-batched decisions, feedback joins,
                  policy swaps, kill switch
``engine``        features -> guardrails -> timing policy -> item policy -> log rows, shadow,
                  look-ahead (``horizon_hours``)
``state``         users, items and the :class:`~pushrl.data.features.FeatureState`; rebuilt
                  from the op journal on restart
``store``         SQLite WAL durable log with a group-committing writer thread
``guardrails``    quiet hours (local time), daily / weekly caps, counted from the log
``policyset``     active / shadow policies (verified artifacts or default baselines)
``registry_ops``  active pointer, promote (OPE gate) / rollback, audit log
``auth``          hashed API keys with scopes; ``python -m pushrl.serve.auth new``
``export``        the log as pushlog v1
``metrics``       Prometheus ``serve_*`` metrics and the latency middleware
================  ==========================================================================
"""

from __future__ import annotations

from pushrl.rules.guardrails import Guardrails
from pushrl.serve.config import ServeConfig

__all__ = ["Guardrails", "ServeConfig"]
