"""Helpers shared by the CLI commands: error translation and ``--json`` output."""
from __future__ import annotations

import json
from typing import Any

import click


class UserError(click.ClickException):
    """An error caused by the user's input; printed as one line, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = []
    from ..data.base import DataError
    from ..labels import LabelError
    from ..errors import ConfigError

    errs += [DataError, LabelError, ConfigError]
    try:
        from ..checkpoint import CheckpointError

        errs.append(CheckpointError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from ..models.registry import ModelError

        errs.append(ModelError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from ..engine.embed import EmbeddingsError

        errs.append(EmbeddingsError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def run_cli(group: click.Group, argv: list[str] | None = None) -> int:
    try:
        group.main(args=argv, standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.UsageError as e:
        # one style for every error the CLI prints: "error: <what>", plus where to look for the usage
        cmd = e.ctx.command_path if e.ctx is not None else "fairexpr"
        click.echo(f"error: {e.format_message()} (see `{cmd} --help`)", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except SystemExit as e:  # click --help / --version
        return int(e.code or 0)
    except _known_errors() as e:
        click.echo(f"error: {e}", err=True)
        return 2


def emit(obj: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``obj`` as JSON (``--json``) or the human-readable text."""
    if as_json:
        click.echo(json.dumps(obj, indent=2, default=_default))
    elif human is not None:
        click.echo(human)


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


CHECKPOINT_HELP = ("Run directory / model.json / .safetensors, or a packaged model's name (`fairexpr zoo`); "
                   "default: the shipped default model.")


def checkpoint_option(help: str = CHECKPOINT_HELP):
    """``--checkpoint`` taking a path or a packaged model reference (``default``, a zoo name); optional."""
    return click.option("--checkpoint", default=None, metavar="PATH|NAME", help=help)


def resolve_checkpoint_arg(value: str | None) -> str:
    """A ``--checkpoint`` value -> an existing checkpoint path (``None``/``default`` = the shipped default model).
    One clear line when it is neither an existing path nor a packaged model's name."""
    from pathlib import Path

    from ..zoo import index, resolve

    p = resolve(value)
    if not p.exists():
        hint = ""
        if value is not None and "/" not in str(value):
            hint = f" and not a packaged model name (known: {', '.join(['default', *index()['models']])})"
        raise UserError(f"--checkpoint {value}: no such file or folder{hint}")
    return str(Path(p))


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")

#: ``--tta`` of predict / eval / serve; the modes are ``fairexpr.evaluation.tta.TTA_MODES`` (kept literal here so the
#: CLI does not import the evaluation package at start-up; a test checks they agree) plus ``auto``
TTA_CHOICES = ("none", "hflip", "crops")
_TTA_HELP = ("hflip averages the probabilities of each face and its mirror (two forward passes); crops adds five crops "
             "of 95 % of the side (centre, corners), each mirrored too (twelve passes).")
tta_option = click.option("--tta", type=click.Choice(("auto", *TTA_CHOICES)), default="auto", show_default=True,
                          help="Test-time augmentation: auto = the mode the model recommends (the shipped default "
                               "model: crops, the mode its model-card figures were measured in; a model that names "
                               "none, e.g. one you trained: none); " + _TTA_HELP + " --tta none is the fastest.")
#: ``--tta`` of embed: an explicit mode, none by default (cached embeddings should not change with a model's advice)
tta_option_plain = click.option("--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
                                help="Test-time augmentation: " + _TTA_HELP)


def train_overrides(epochs: int | None = None, minutes: float | None = None, no_progress: bool = False) -> dict[str, Any]:
    """The ``train`` section set by the shared ``--epochs / --minutes / --no-progress`` options (empty if none)."""
    tr: dict[str, Any] = {}
    if epochs is not None:
        tr["epochs"] = epochs
    if minutes is not None:
        tr["max_minutes"] = minutes
    if no_progress:
        tr["progress"] = False
    return tr

