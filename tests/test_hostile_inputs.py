"""Broken and hostile inputs (tests/hostile_inputs.py) end in exit 2 naming the file and the field,
within seconds and bounded memory; ``validate`` and ``render`` give the same verdict and message.

Every case runs three ways, in this process: the library (``load_plan`` + ``inputs.preflight``, to
look at each ``Problem``), ``mirage validate`` and ``mirage render``, all with ``--preset tiny``. The render stops
where the model's weights would load (``RenderSession.load_components`` is replaced by one that
raises ``WeightsWouldLoad``): everything a render checks about its inputs comes before that point,
and what comes after needs weights that cannot exist here. Memory is measured with tracemalloc
(Python and numpy allocations), time with the wall clock.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hostile_inputs import NAMED_CASES, Case, base_spec, fuzz_cases, write_spec
from render_helpers import cli

from mirage_cli.base.errors import InputError
from mirage_cli.render.inputs import preflight
from mirage_cli.render.session import RenderSession
from mirage_cli.spec.plan import load_plan

FUZZ_CASES = fuzz_cases(300, seed=0)
HANG_SECONDS = 120.0
"""A hang guard, not a speed bound (a busy machine must not fail the suite): how fast bad input is
refused is measured by benchmarks/hostile_inputs.py."""
MAX_TRACED_BYTES = 300 << 20
WHOLE_FILE_PROBLEMS = ("spec file is empty", "expected a mapping of fields at the top level", "bytes, more than the limit",
                       "not UTF-8 text", "expected a regular file", "nested deeper than", "aliases expand", "YAML does not parse",
                       "an anchor refers to itself", "duplicate key")
"""Problems about a spec as a whole (no field to name; most still carry a line)."""


class WeightsWouldLoad(Exception):
    """Raised where the render would load the model's weights: its input checks have all run."""


def _stop_before_weights(self, settings):
    raise WeightsWouldLoad


def library_problems(spec, models: bool = True) -> tuple[list, int, float]:
    """The problems ``load_plan`` + ``preflight`` find, the peak traced bytes and the seconds taken.
    ``models=False``: as ``mirage validate`` checks (whether a model is here is only a warning there)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        preflight(load_plan(spec, preset="tiny"), models=models)
        problems = []
    except InputError as e:
        problems = e.problems
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return problems, peak, seconds


def check_case(case: Case, folder, monkeypatch) -> str:
    """Run ``case`` three ways (module docstring); returns validate's stderr."""
    spec = case.build(folder)
    problems, peak, seconds = library_problems(spec)
    assert seconds < HANG_SECONDS, f"{case.name}: still running after {seconds:.1f} s"
    assert peak < MAX_TRACED_BYTES, f"{case.name}: {peak / 2**20:.0f} MiB"
    for p in problems:
        assert p.file, f"{case.name}: a problem without its file: {p}"
        if str(p.file) == str(spec) and not (p.field or p.line):
            assert any(kind in p.message for kind in WHOLE_FILE_PROBLEMS), f"{case.name}: neither field nor line: {p}"
    validate = cli("validate", spec, "--preset", "tiny")
    assert validate.exception is None or isinstance(validate.exception, SystemExit), f"{case.name}: {validate.exception!r}"
    checked = library_problems(spec, models=False)[0]
    validate_errors = "".join(f"error: {p}\n" for p in checked)
    warnings = "".join(line + "\n" for line in validate.stderr.splitlines() if line.startswith("warning: depth_model "))
    assert (validate.exit_code, validate.stderr.replace(warnings, "")) == ((2, validate_errors) if checked else (0, "")), case.name
    if problems != checked:  # a depth model that is not here: validate warns, the render refuses
        assert not checked and warnings and problems[0].field == "depth_model", case.name
    expected_stderr = "".join(f"error: {p}\n" for p in problems)

    monkeypatch.setattr(RenderSession, "load_components", _stop_before_weights)
    render = cli("render", spec, "--out", folder / "run", "--preset", "tiny", "--quiet")
    if problems:
        errors = "".join(line + "\n" for line in render.stderr.splitlines() if line.startswith("error: "))
        assert (render.exit_code, errors) == (2, expected_stderr), f"{case.name}: validate and render disagree"
    else:
        assert isinstance(render.exception, WeightsWouldLoad), f"{case.name}: validate accepts, render: {render.stderr}"
    return validate.stderr


@pytest.mark.parametrize("case", NAMED_CASES, ids=[c.name for c in NAMED_CASES])
def test_named_case(case, tmp_path, monkeypatch):
    stderr = check_case(case, tmp_path / "case", monkeypatch)
    if case.expect is None:
        assert stderr == ""
    else:
        assert case.expect in stderr, f"{case.expect!r} not in:\n{stderr}"


def test_fuzz_cases(tmp_path, monkeypatch):
    """300 seeded mutations of the spec, the camera files of every format, images and depth maps."""
    verdicts = {"accepted": 0, "refused": 0}
    for i, case in enumerate(FUZZ_CASES):
        stderr = check_case(case, tmp_path / f"case_{i}", monkeypatch)
        verdicts["refused" if stderr else "accepted"] += 1
    assert verdicts["refused"] > 200 and verdicts["accepted"] > 10, verdicts  # the generator still reaches both sides


def test_fuzz_cases_are_reproducible(tmp_path):
    again = fuzz_cases(300, seed=0)
    assert [c.name for c in again] == [c.name for c in FUZZ_CASES]
    for i in (3, 4, 8):  # an image, a depth map, a mask: their bytes come from the seed too
        a = FUZZ_CASES[i].build(tmp_path / f"a{i}").parent
        b = again[i].build(tmp_path / f"b{i}").parent
        assert sorted(p.read_bytes() for p in a.iterdir()) == sorted(p.read_bytes() for p in b.iterdir())


# --- output paths on the command line ------------------------------------------------------------


@pytest.fixture
def folder_and_file(tmp_path):
    spec = write_spec(tmp_path / "scene", base_spec())
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_folder" / "notes.txt").write_text("keep me")
    return tmp_path, spec


@pytest.mark.parametrize("args, expect", [
    (["preview", "{spec}", "--out", "{d}/a_folder"], "--out: {d}/a_folder is a directory, expected a file name"),
    (["preview", "{spec}", "--out", "{d}/a_file/x.mp4"], "--out: cannot create {d}/a_file/x.mp4: {d}/a_file is not a directory"),
    (["render", "{spec}", "--out", "{d}/a_file", "--preset", "tiny"], "--out: {d}/a_file exists and is not a directory"),
    (["render", "{spec}", "--out", "{d}/run", "--frames", "{d}/a_file", "--preset", "tiny"], "--frames: {d}/a_file exists"),
    (["render", "{spec}", "--out", "{d}/run", "--trace", "{d}/a_file", "--preset", "tiny"], "--trace: {d}/a_file exists"),
    (["trajectory", "{scene}/../cameras.txt", "--plot", "{d}/a_folder"], "--plot: {d}/a_folder is a directory"),
    (["trajectory", "{scene}/../cameras.txt", "--to", "{d}/a_folder/"], "--to: {d}/a_folder holds files that are not a COLMAP model"),
    (["trajectory", "{scene}/../cameras.txt", "--to", "{d}/a_file/t.json"], "--to: cannot create {d}/a_file/t.json"),
    (["cache", "export", "{d}/run", "--ply", "{d}/a_folder"], "--ply: {d}/a_folder is a directory"),
])
def test_output_paths_that_cannot_be_written_are_exit_2(folder_and_file, args, expect):
    from hostile_inputs import small_trajectory

    from mirage_cli.camera.writers import write_realestate10k

    d, spec = folder_and_file
    write_realestate10k(d / "cameras.txt", small_trajectory())
    filled = [a.format(d=d, spec=spec, scene=spec.parent) for a in args]
    result = cli(*filled)
    assert result.exit_code == 2, result.stderr
    assert expect.format(d=d) in result.stderr
    assert (d / "a_folder" / "notes.txt").read_text() == "keep me"
    assert not (d / "run").exists()


def test_missing_output_folders_are_created(folder_and_file):
    d, spec = folder_and_file
    result = cli("preview", spec, "--out", d / "new" / "deeper" / "preview.mp4")
    assert result.exit_code == 0, result.stderr
    assert (d / "new" / "deeper" / "preview.mp4").stat().st_size > 0


def test_help_shows_flags_without_a_value():
    for command in (["validate"], ["render"], ["trajectory"], ["batch"]):
        result = cli(*command, "--help")
        assert result.exit_code == 0
        assert "<bool>" not in result.stdout and "--json " in result.stdout
