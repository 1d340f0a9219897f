"""Internal errors (bugs): one line on stderr naming a file that holds the whole traceback.

A bug cannot be produced on purpose without one, so these tests plant one: a stage of the real
render (or of validate) is replaced by a function that raises. Everything else is the real CLI
entry point, ``cli.main``, as the ``mirage`` console script runs it.
"""

from __future__ import annotations

import json
import sys
import tempfile

import pytest
from render_helpers import SMALL

from mirage_cli.base.signals import release_process_stop
from mirage_cli.cli import main as cli


def _main(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["mirage", *map(str, args)])
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        release_process_stop()  # main() installs stop handlers for the life of a process: not this one's
    return exit_info.value.code


def _planted_bug(*args, **kwargs):
    raise RuntimeError("planted bug " + "x" * 1000)


def test_a_crash_in_a_render_leaves_its_traceback_in_the_run_directory(monkeypatch, capsys, tmp_path, small_scene):
    from mirage_cli.render.session import RenderSession

    monkeypatch.setattr(RenderSession, "load_components", _planted_bug)
    run = tmp_path / "run"
    assert _main(monkeypatch, "render", small_scene, "--out", run, *SMALL) == 1
    err = capsys.readouterr().err
    reports = list(run.glob("crash-*.txt"))
    assert len(reports) == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("internal error: RuntimeError: planted bug xxx") and lines[0].endswith(" ...")
    assert len(lines[0]) < 400, "the message is cut; the file holds all of it"
    assert str(reports[0]) in lines[1]
    text = reports[0].read_text()
    assert "Traceback (most recent call last)" in text and "_planted_bug" in text and "x" * 1000 in text
    assert "command: mirage render" in text and "torch" in text


def test_a_crash_outside_a_render_goes_to_a_temporary_file(monkeypatch, capsys, tmp_path, small_scene):
    import mirage_cli.spec.plan

    monkeypatch.setattr(mirage_cli.spec.plan, "load_plan", _planted_bug)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert _main(monkeypatch, "validate", small_scene) == 1
    err = capsys.readouterr().err
    reports = list(tmp_path.glob("mirage-crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in err
    assert "Traceback" in reports[0].read_text()


def test_jsonl_progress_reports_a_crash_as_one_failed_event(monkeypatch, capsys, tmp_path, small_scene):
    from mirage_cli.render.session import RenderSession

    monkeypatch.setattr(RenderSession, "load_components", _planted_bug)
    run = tmp_path / "run"
    assert _main(monkeypatch, "render", small_scene, "--out", run, "--progress", "jsonl", *SMALL) == 1
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert events[-1]["event"] == "failed" and events[-1]["exit_code"] == 1
    assert events[-1]["message"].startswith("internal error: RuntimeError: planted bug")
    assert events[-1]["crash_report"] == str(next(run.glob("crash-*.txt")))
