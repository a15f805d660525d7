"""Errors the server maps to 4xx JSON bodies ``{"error": code, "detail": message}``."""

from __future__ import annotations

from pushrl.errors import PushrlError


class ServeError(PushrlError):
    """A client error with an HTTP status and a machine-readable code."""

    status = 400

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(ServeError):
    """404: unknown user, item, decision or policy."""

    status = 404


class Conflict(ServeError):
    """409: the request is valid but conflicts with the server's state."""

    status = 409


class Unprocessable(ServeError):
    """422: a value is well-typed but not acceptable."""

    status = 422
