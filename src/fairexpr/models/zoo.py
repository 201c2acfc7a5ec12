"""Imports every architecture module so its ``@register_model`` builders are in the registry."""
from . import dlib_resnet, ir50, mobilefacenet, mobilenet, resnet  # noqa: F401
from . import grefel, reliability  # noqa: F401  (GReFEL; after the backbones it builds on)
from . import uda_heads  # noqa: F401  (MCD / AFN networks built on any backbone)
from . import agra  # noqa: F401  (AGRA/DIFC landmark head on a four-stage backbone)
from . import ensemble  # noqa: F401  (trained networks averaged as calibrated probabilities)

__all__ = ["agra", "dlib_resnet", "ensemble", "grefel", "ir50", "mobilefacenet", "mobilenet", "reliability", "resnet",
           "uda_heads"]
