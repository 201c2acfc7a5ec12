"""fairexpr: facial expression recognition that stays accurate and balanced across classes."""
from __future__ import annotations

__version__ = "0.1.0"

from .labels import CANONICAL7, CANONICAL8  # noqa: E402


def create_model(*args, **kwargs):  # noqa: D103 - thin re-export that keeps `import fairexpr` light
    from .models import create_model as _cm

    return _cm(*args, **kwargs)


create_model.__doc__ = "Build a registered model by name; see :func:`fairexpr.models.create_model`."

__all__ = ["CANONICAL7", "CANONICAL8", "create_model", "__version__"]
