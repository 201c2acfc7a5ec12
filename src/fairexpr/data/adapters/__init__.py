"""One module per published dataset layout; importing this package registers every adapter.

Formats: ``fer2013``, ``ferplus``, ``ckplus``, ``jaffe``, ``rafdb``, ``affectnet``, ``sfew``, ``folder``,
``csv``, ``faces`` (plus any other module placed in this package, e.g. ``synthetic``).
"""
from __future__ import annotations

import importlib
import pkgutil

from . import affectnet, ckplus, csv, faces, fer2013, ferplus, folder, jaffe, rafdb, sfew  # noqa: F401

# register adapters contributed by other modules of this package (e.g. ``synthetic``)
for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["affectnet", "ckplus", "csv", "faces", "fer2013", "ferplus", "folder", "jaffe", "rafdb", "sfew"]
