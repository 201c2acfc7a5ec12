"""Training recipes: each implements the protocol of :mod:`fairexpr.methods.base` and registers by name
(``supervised``, ``cucn``, ``grefel``, ``face2exp``, ``mcd``, ``dann``, ``safn``)."""
from .base import DataInfo, Method, StepContext, get_method, list_methods, register_method

__all__ = ["DataInfo", "Method", "StepContext", "get_method", "list_methods", "register_method"]
