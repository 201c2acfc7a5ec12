"""Imports every method module so each registers itself (see ``register_method``)."""
from importlib import import_module

_MODULES = ["supervised", "grefel", "mcd", "dann", "afn", "cucn", "face2exp"]

for _m in _MODULES:
    try:
        import_module(f"{__package__}.{_m}")
    except ModuleNotFoundError as e:  # a method module that is not part of this build
        if e.name != f"{__package__}.{_m}":
            raise
