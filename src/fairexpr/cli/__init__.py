"""`fairexpr` command line. Each sub-command lives in its own module exposing a click command named
``command``; the group imports them lazily so ``fairexpr --help`` stays fast and a command's heavy
dependencies (torch, onnxruntime, fastapi) load only when it runs."""
from __future__ import annotations

import importlib
import importlib.util
import sys

import click

#: sub-command name -> module (relative to this package)
COMMANDS: dict[str, str] = {
    "audit": ".audit",
    "train": ".train",
    "eval": ".evaluate",
    "embed": ".embed",
    "predict": ".predict",
    "report": ".report",
    "list-models": ".list_models",
    "list-datasets": ".list_datasets",
    "adapt": ".adapt",
    "adapt-report": ".adapt_report",
    "calibrate": ".calibrate",
    "export": ".export",
    "serve": ".serve",
    "zoo": ".zoo",
    "demo": "..demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, mod in COMMANDS.items() if importlib.util.find_spec(mod, __name__) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        mod = COMMANDS.get(name)
        if mod is None or importlib.util.find_spec(mod, __name__) is None:
            return None
        return importlib.import_module(mod, __name__).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fairexpr")
def cli() -> None:
    """fairexpr: balanced facial expression recognition (train, adapt, evaluate, predict, export)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: known errors (bad data, bad config) become one clear line and exit code 2."""
    from .common import run_cli

    return run_cli(cli, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
