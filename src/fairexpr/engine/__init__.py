"""The training engine (Lightning Fabric). The checkpoint format lives in :mod:`fairexpr.checkpoint`; its
loaders are re-exported here for convenience."""
from ..checkpoint import CheckpointError, load_model, save_model


def fit(*args, **kwargs):
    from .loop import fit as _fit

    return _fit(*args, **kwargs)


fit.__doc__ = "Train as configured; see :func:`fairexpr.engine.loop.fit`."

__all__ = ["CheckpointError", "fit", "load_model", "save_model"]
