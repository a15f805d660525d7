"""The policy server: FastAPI app, durable log, feature state, guardrails, registry ops.

``pushrl serve`` runs :func:`pushrl.serve.app.create_app` under uvicorn.
"""

from __future__ import annotations

from pushrl.serve.config import GuardrailConfig, ServeConfig

__all__ = ["GuardrailConfig", "ServeConfig"]
