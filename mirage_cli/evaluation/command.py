"""What ``mirage eval`` does: check the flags and the output path, load LPIPS's weights where the
reference needs them, read the inputs, measure, print the table and notes on stderr, and write the
JSON document (stdout) and the HTML page where asked.

Everything a user gives is checked before the measuring starts (the inputs in the order of
``evaluation.inputs``); a bad input is one InputError (exit 2) naming the file and the flag.
"""

from __future__ import annotations

import os
from pathlib import Path

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.files import check_output
from mirage_cli.evaluation.document import evaluate, table
from mirage_cli.evaluation.inputs import load_inputs
from mirage_cli.evaluation.lpips import BACKBONE_FILE, LINEAR_FILE, LPIPS, find_weights, load_lpips
from mirage_cli.evaluation.page import write_page


def _check_html(html: Path, inputs: list[Path | None]) -> None:
    """``--html`` must be a writable file path (``base.files.check_output``) that is none of the inputs."""
    check_output(html, "--html")
    for path in inputs:
        if path is not None and os.path.exists(path) and os.path.exists(html) and os.path.samefile(path, html):
            raise InputError(Problem(file=None, field="--html", message=f"{html} is an input of this command; the page would "
                                                                        "overwrite it: give another file name"))


def _lpips_metric(folder: Path | None) -> LPIPS | None:
    """LPIPS from ``folder`` (every file there checked; a missing one refused), or from where
    ``evaluation.lpips`` looks without it (None when not found there: the document notes it)."""
    if folder is None:
        files = find_weights(None)
        return None if files is None else load_lpips(files, field=None)
    if not folder.is_dir():
        why = f"is not a folder (it should hold {BACKBONE_FILE} and {LINEAR_FILE})"
        raise InputError(Problem(file=str(folder), field="--lpips", message=why))
    for name in (BACKBONE_FILE, LINEAR_FILE):
        if not os.path.lexists(folder / name):
            why = f"holds no {name} (LPIPS needs {BACKBONE_FILE} and {LINEAR_FILE}; mirage eval never downloads them)"
            raise InputError(Problem(file=str(folder), field="--lpips", message=why))
    return load_lpips((folder / BACKBONE_FILE, folder / LINEAR_FILE), field="--lpips")


def run_eval(target: Path, camera: Path | None, depth: Path | None, reference: Path | None, lpips: Path | None,
             html: Path | None, depth_model: str | None = None) -> dict:
    """The eval document of ``target`` (a run directory or a video); InputError (exit 2) on bad input."""
    from rich.console import Console

    if lpips is not None and reference is None:
        raise InputError(Problem(file=None, field="--lpips", message="LPIPS compares against reference frames: give "
                                                                    "--reference too, or leave --lpips out"))
    if html is not None:
        _check_html(html, [target, target / "video.mp4", target / "camera.json", camera, depth, reference])
    metric = None if reference is None else _lpips_metric(lpips)
    inputs = load_inputs(target, camera, depth, reference, depth_model)
    console = Console(stderr=True)
    with console.status("measuring (optical flow on every compared pair)..."):
        document = evaluate(inputs, lpips, metric)
    console.print(table(document))
    for note in document["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)
    if html is not None:
        write_page(html, document, inputs.frames, inputs.world_from_cam)
        console.print(f"wrote {html}", markup=False, highlight=False)
    return document
