"""What ``mirage eval`` does: read the inputs, measure, print the table and notes on stderr, and write
the JSON document (stdout) and the HTML page where asked."""

from __future__ import annotations

from pathlib import Path

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.evaluation.document import evaluate, table
from mirage_cli.evaluation.inputs import load_inputs
from mirage_cli.evaluation.page import write_page


def run_eval(target: Path, camera: Path | None, depth: Path | None, reference: Path | None, lpips: Path | None,
             html: Path | None, depth_model: str | None = None) -> dict:
    """The eval document of ``target`` (a run directory or a video); InputError (exit 2) on bad input."""
    from rich.console import Console

    if lpips is not None and not lpips.is_dir():
        why = "is not a folder (it should hold alexnet-owt-7be5be79.pth and alex.pth)"
        raise InputError(Problem(file=str(lpips), field="--lpips", message=why))
    inputs = load_inputs(target, camera, depth, reference, depth_model)
    console = Console(stderr=True)
    with console.status("measuring (optical flow on every compared pair)..."):
        try:
            document = evaluate(inputs, lpips)
        except ValueError as exc:  # LPIPS weights that do not fit: the message names the files
            raise InputError(Problem(file=str(lpips or "LPIPS weights"), field="--lpips", message=str(exc))) from None
    console.print(table(document))
    for note in document["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)
    if html is not None:
        write_page(html, document, inputs.frames, inputs.world_from_cam)
        console.print(f"wrote {html}", markup=False, highlight=False)
    return document
