"""Imports every method module so each registers itself (see ``register_method``)."""
from . import afn, cucn, dann, face2exp, grefel, mcd, supervised  # noqa: F401

__all__ = ["afn", "cucn", "dann", "face2exp", "grefel", "mcd", "supervised"]
