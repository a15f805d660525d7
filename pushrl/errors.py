"""Domain errors. The CLI maps them to one line and a non-zero exit; the server to a 4xx body."""

from __future__ import annotations


class PushrlError(Exception):
    """Base class for every error a user can cause and fix."""


class SchemaError(PushrlError, ValueError):
    """A pushlog table is missing, or a column is missing, unparsable or of the wrong dtype."""


class DataError(PushrlError, ValueError):
    """Data is well formed but unusable for the requested stage (e.g. no ``pscore`` for OPE)."""


class ArtifactError(PushrlError):
    """A registry artifact is missing, malformed, or fails its checksum."""


class ScenarioError(PushrlError, ValueError):
    """A scenario file is missing or invalid."""



class TemplateError(PushrlError, ValueError):
    """A message template catalog is invalid (unknown slot, too long, bad syntax, unknown id)."""
