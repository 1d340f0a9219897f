"""The ``mirage`` Typer application and what every command body shares: one clear line per error on
stderr and the exit code of each kind of failure (README, "Commands")."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import typer

from mirage_cli import __version__
from mirage_cli.base.errors import EXIT_USAGE, InputError, Interrupted, MirageError
from mirage_cli.base.jsonable import to_jsonable

app = typer.Typer(
    name="mirage",
    help="Render long, 3D-consistent camera-controlled videos on Wan2.2-TI2V-5B with a latent spatial memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: flags without a bogus <bool> value, no boxes in logs
)

def _print_version(value: bool) -> None:
    if value:
        print(f"mirage {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Render long, 3D-consistent camera-controlled videos on Wan2.2-TI2V-5B with a latent spatial memory."""


cache_app = typer.Typer(help="Work with a run's latent memory cache.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cache_app, name="cache")


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_body(fn: Callable[[], int | None], quiet_errors: bool = False) -> None:
    """Run a command body and turn library errors into one clear message and an exit code.

    ``quiet_errors``: the body reported the error itself (``--progress jsonl``): only exit.
    A stop signal (``mirage_cli.base.signals``) ends the command with exit 75 and a line saying so.
    """
    try:
        code = fn()
    except InputError as e:
        for p in e.problems:
            if not quiet_errors:
                err(f"error: {p}")
        raise typer.Exit(EXIT_USAGE) from None
    except Interrupted as e:
        if not quiet_errors:
            err(f"interrupted: {e}")
        raise typer.Exit(e.exit_code) from None
    except MirageError as e:
        if not quiet_errors:
            err(f"error: {e}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(130) from None
    raise typer.Exit(int(code or 0))


def print_json(obj) -> None:
    print(json.dumps(to_jsonable(obj, nonfinite="null"), indent=2))
