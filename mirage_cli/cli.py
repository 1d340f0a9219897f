"""The ``mirage`` command line: parses arguments, calls into the library, maps errors to exit codes.

No logic lives here. Results go to stdout (``--json`` for machines); progress, logs and warnings
go to stderr. Exit codes (DESIGN.md section 6): 0 done, 1 runtime failure, 2 bad usage or input,
75 interrupted with a checkpoint saved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from mirage_cli.errors import EXIT_FAILURE, EXIT_USAGE, InputError, MirageError

app = typer.Typer(
    name="mirage",
    help="Render long, 3D-consistent camera-controlled videos on Wan2.2-TI2V-5B with a latent spatial memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Work with a run's latent memory cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(fn: Callable[[], Optional[int]]) -> None:
    """Run a command body and turn library errors into one clear message and an exit code."""
    try:
        code = fn()
    except InputError as e:
        for p in e.problems:
            _err(f"error: {p}")
        raise typer.Exit(EXIT_USAGE)
    except MirageError as e:
        _err(f"error: {e}")
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130)
    raise typer.Exit(int(code or 0))


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- mirage validate -----------------------------------------------------------------------------


@app.command()
def validate(
    scene: Path = typer.Argument(..., help="Scene spec (YAML)."),
    json_out: bool = typer.Option(False, "--json", help="Print the resolved plan as one JSON object."),
) -> None:
    """Check a scene spec and print the resolved plan (frames, chunks, camera path)."""

    def body():
        from mirage_cli.spec import load_plan

        plan = load_plan(scene)
        if json_out:
            _print_json(plan.summary())
        else:
            print(plan.describe())

    _run(body)


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=True)
    except SystemExit as e:
        # click maps its own usage errors to exit 2 already; keep every other code as is.
        raise
    except Exception as e:  # a bug, not a user error: say so without hiding the cause
        _err(f"internal error: {type(e).__name__}: {e}")
        _err("This is a bug in mirage; please report it with the command you ran.")
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
