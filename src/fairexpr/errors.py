"""The errors a user can fix, in the bottom layer so that every layer may raise them without importing
another layer. Each names the file, field or key and what was expected; the CLI prints one as a single
``error: ...`` line (exit 2) instead of a traceback. All are ``ValueError`` subclasses, so callers that
catch ``ValueError`` keep working.
"""
from __future__ import annotations

__all__ = ["FairexprError", "DataError", "ConfigError", "ModelError", "CheckpointError"]


class FairexprError(ValueError):
    """Base of the package's user-fixable errors."""


class DataError(FairexprError):
    """Bad or missing input data. The message always names the file/field and what was expected."""


class ConfigError(FairexprError):
    """A bad config file, key or value. The message names the key and what was expected."""


class ModelError(FairexprError):
    """Unknown model name, bad model option or an unloadable weight file."""


class CheckpointError(FairexprError):
    """Missing/corrupt checkpoint, or one that would need arbitrary unpickling."""
