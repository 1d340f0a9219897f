"""Scene spec validation through the real CLI: every problem reported, exit 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mirage_cli.spec.plan import load_plan, nearest_4k1, plan_chunks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "room" / "scene.yaml"


def mirage(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mirage_cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture
def scene_dir(tmp_path: Path) -> Path:
    """A copy of the example scene (spec + assets) that a test may edit."""
    for name in ("scene.yaml", "start.png", "depth.npy"):
        shutil.copy(EXAMPLE.parent / name, tmp_path / name)
    return tmp_path


def edit(scene_dir: Path, **changes) -> Path:
    spec = yaml.safe_load((scene_dir / "scene.yaml").read_text())
    for k, v in changes.items():
        if v is None and k in spec:
            del spec[k]
        else:
            spec[k] = v
    path = scene_dir / "edited.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for n in needles:
        assert n in proc.stderr, f"{n!r} not in:\n{proc.stderr}"


def test_validate_example_json():
    proc = mirage("validate", str(EXAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["frames"] == 33 and plan["fps"] == 8
    assert (plan["width"], plan["height"]) == (448, 256)
    assert plan["chunks"] == [[0, 16], [16, 32]]
    assert plan["first_camera_position"] == [0.0, 0.0, 0.0]


def test_validate_example_text():
    proc = mirage("validate", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert "chunks" in proc.stdout and "0-16, 16-32" in proc.stdout


def test_frames_not_4k1_suggests_neighbours(scene_dir):
    proc = mirage("validate", str(edit(scene_dir, frames=30)))
    assert_user_error(proc, "edited.yaml", "frames", "4k+1", "29 or 33")


def test_chunk_frames_not_4k1(scene_dir):
    proc = mirage("validate", str(edit(scene_dir, chunk_frames=16)))
    assert_user_error(proc, "chunk_frames", "13 or 17")


def test_resolution_not_multiple_of_32(scene_dir):
    proc = mirage("validate", str(edit(scene_dir, resolution="450x256")))
    assert_user_error(proc, "resolution", "multiple of 32", "448x256")


def test_unknown_key_suggests_closest(scene_dir):
    proc = mirage("validate", str(edit(scene_dir, promt="typo")))
    assert_user_error(proc, "promt", "unknown field", "did you mean 'prompt'")


def test_missing_image_and_wrong_type_reported_together(scene_dir):
    proc = mirage("validate", str(edit(scene_dir, image="nope.png", steps="many", fps=-1)))
    assert_user_error(proc, "image", "file not found", "steps", "expected integer", "fps", "between 1 and 240")
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) >= 3


def test_line_numbers_in_messages(scene_dir):
    path = scene_dir / "lines.yaml"
    text = (scene_dir / "scene.yaml").read_text().replace("frames: 33 ", "frames: 31 ")
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("frames:"))
    proc = mirage("validate", str(path))
    assert_user_error(proc, f"lines.yaml:{line}: frames:")


def test_yaml_that_does_not_parse(scene_dir):
    path = scene_dir / "broken.yaml"
    path.write_text("prompt: [unclosed\nimage: start.png\n")
    assert_user_error(mirage("validate", str(path)), "broken.yaml", "YAML does not parse")


def test_missing_spec_file(tmp_path):
    assert_user_error(mirage("validate", str(tmp_path / "absent.yaml")), "absent.yaml", "not found")


def test_bad_depth_file(scene_dir):
    np.save(scene_dir / "d3.npy", np.zeros((2, 3, 4), np.float32))
    assert_user_error(mirage("validate", str(edit(scene_dir, depth="d3.npy"))), "depth", "2-D")


def test_memory_mode_typo(scene_dir):
    spec = edit(scene_dir, memory={"mode": "latnet"})
    assert_user_error(mirage("validate", str(spec)), "memory.mode", "did you mean 'latent'")


def test_overrides_apply(scene_dir):
    plan = load_plan(scene_dir / "scene.yaml", overrides={"steps": 3, "memory.mode": "rgb"})
    assert plan.steps == 3 and plan.memory.mode == "rgb"


@pytest.mark.parametrize("frames,chunk", [(33, 17), (121, 49), (5, 5), (121, 121), (45, 13)])
def test_chunks_tile_the_video(frames, chunk):
    chunks = plan_chunks(frames, chunk)
    assert chunks[0].start == 0 and chunks[-1].end == frames - 1
    for a, b in zip(chunks, chunks[1:]):
        assert b.start == a.end  # one shared boundary frame
    for c in chunks:
        assert (c.num_frames - 1) % 4 == 0 and c.num_frames <= chunk
    assert sum(c.num_frames for c in chunks) - (len(chunks) - 1) == frames


def test_nearest_4k1():
    assert nearest_4k1(30) == (29, 33)
    assert nearest_4k1(120) == (117, 121)


# --- one checker per concern, each alone ----------------------------------------------------------


def _problems():
    from mirage_cli.base.errors import ProblemList

    return ProblemList("s.yaml", "", lambda field: {"frames": 3}.get(field))


def test_check_fields_fills_defaults_and_reports_types_and_unknown_keys():
    from mirage_cli.spec.checks import INVALID, check_fields
    from mirage_cli.spec.plan import SPEC_FIELDS

    problems = _problems()
    values = check_fields({"prompt": "p", "image": "a.png", "camera": {}, "steps": "many", "seeed": 1}, SPEC_FIELDS, problems)
    assert values["steps"] is INVALID and values["frames"] == SPEC_FIELDS["frames"].default
    assert [str(p) for p in problems.items] == [
        "s.yaml: seeed: unknown field (did you mean 'seed'?)",
        "s.yaml: steps: expected integer or null, got str 'many'",
    ]
    problems = _problems()
    check_fields({"guidance": float("nan"), "fps": True}, SPEC_FIELDS, problems)
    text = "\n".join(map(str, problems.items))
    assert "prompt: required field is missing" in text and "guidance: must be finite" in text
    assert "fps: expected integer or number, got bool True" in text


def test_check_frames_names_the_nearest_valid_counts_with_the_line():
    from mirage_cli.spec.checks import check_frames

    problems = _problems()
    assert check_frames(121, None, problems) == (121, 121) and not problems
    assert check_frames(33, None, problems) == (33, 33)
    assert check_frames(30, 17, problems) == (None, 17)
    assert str(problems.items[0]) == "s.yaml:3: frames: must be 4k+1 (Wan2.2's VAE compresses time by 4), got 30; nearest valid: 29 or 33"
    problems = _problems()
    check_frames(33, 37, problems)
    assert "chunk_frames: 37 exceeds frames (33)" in str(problems.items[0])


def test_check_resolution_and_numbers_alone():
    from mirage_cli.spec.checks import check_numbers, check_resolution
    from mirage_cli.spec.plan import SPEC_FIELDS

    problems = _problems()
    assert check_resolution("448x256", problems) == (448, 256)
    assert check_resolution([704, 1280], problems) == (704, 1280)
    assert check_resolution("450x256", problems) is None
    assert "e.g. 448x256" in str(problems.items[-1])
    problems = _problems()
    values = {name: spec.default for name, spec in SPEC_FIELDS.items()}
    check_numbers({**values, "steps": 0, "shift": 0, "seed": -1}, problems)
    assert [p.field for p in problems.items] == ["steps", "shift", "seed"]


def test_check_memory_returns_settings_or_none():
    from mirage_cli.base.options import MemoryMode, PinMode
    from mirage_cli.spec.checks import check_memory
    from mirage_cli.spec.plan import MEMORY_FIELDS, MemorySettings

    defaults = {name: spec.default for name, spec in MEMORY_FIELDS.items()}
    problems = _problems()
    settings = check_memory(defaults, problems)
    assert settings == MemorySettings.default() and not problems
    assert settings.mode is MemoryMode.LATENT and settings.pin is PinMode.CLEAN
    assert check_memory({**defaults, "pin": "nosied", "pin_until": 2}, problems) is None
    assert [p.field for p in problems.items] == ["memory.pin", "memory.pin_until"]
    assert "did you mean 'noised'" in problems.items[0].message


def test_the_example_spec_shows_every_field():
    """examples/room/scene.yaml is the users' field reference: it must list every field of the tables."""
    from mirage_cli.spec.plan import MEMORY_FIELDS, SPEC_FIELDS

    spec = yaml.safe_load(EXAMPLE.read_text())
    assert set(spec) == set(SPEC_FIELDS)
    assert set(spec["memory"]) == set(MEMORY_FIELDS)


def _vace_weights(folder: Path) -> str:
    from test_trained_weights import write_vace

    path = folder / "vace.safetensors"
    write_vace(path, blocks=1, zero_after=False)
    return str(path)


def test_each_method_brings_its_authors_defaults_and_validate_says_where_each_setting_comes_from(scene_dir):
    unset = dict(steps=None, guidance=None, shift=None, negative_prompt=None, chunk_frames=None, frames=121,
                 camera={"preset": "orbit"})
    pin = load_plan(edit(scene_dir, **unset))
    assert (pin.chunk_frames, pin.steps, pin.guidance, pin.shift, pin.negative_prompt) == (121, 50, 5.0, 5.0, None)

    vace = {"method": "vace", "vace": _vace_weights(scene_dir)}
    spec = edit(scene_dir, **unset, conditioning=vace)
    plan = load_plan(spec)  # the official Mirage inference: 33-frame chunks, 20 steps, no guidance, empty negative
    assert (plan.chunk_frames, plan.steps, plan.guidance, plan.shift, plan.negative_prompt) == (33, 20, 1.0, 5.0, "")
    assert [c.end - c.start + 1 for c in plan.chunks] == [33, 33, 33, 25]
    assert set(plan.settings_from.values()) == {"method vace default"}
    assert plan.conditioning.projection == "nearest" and pin.conditioning.projection == "footprint"
    rgb = load_plan(edit(scene_dir, **unset, conditioning=vace, memory={"mode": "rgb"}))
    assert rgb.conditioning.projection == "footprint"  # the RGB memory renders pixels with footprints

    shown = mirage("validate", str(spec), "--preset", "tiny")  # the tiny VACE file fits the tiny transformer (validate checks it)
    assert shown.returncode == 0, shown.stderr
    assert ("defaults    method vace (the official Mirage inference (microsoft/LatentSpatialMemory)): chunk_frames 33, "
            "steps 20, guidance 1, negative_prompt '', shift 5") in shown.stdout
    resolved = json.loads(mirage("validate", str(spec), "--json", "--preset", "tiny").stdout)
    assert resolved["negative_prompt"] == "" and resolved["settings_from"]["steps"] == "method vace default"

    # The spec's own values and the command line's win over the method's, and are named as such.
    spec = edit(scene_dir, **{**unset, "steps": 8, "frames": 17}, conditioning=vace)
    plan = load_plan(spec, overrides={"guidance": 3.0})
    assert (plan.steps, plan.guidance, plan.chunk_frames) == (8, 3.0, 17)  # a chunk never longer than the video
    assert plan.settings_from == {"chunk_frames": "method vace default", "steps": "spec", "guidance": "flag",
                                  "negative_prompt": "method vace default", "shift": "method vace default"}
    assert "  set       steps from the spec, guidance from the flag" in plan.describe()

    refused = mirage("validate", str(edit(scene_dir, **unset, conditioning={**vace, "projection": "nearest"}, memory={"mode": "rgb"})))
    assert refused.returncode == 2 and "conditioning.projection: nearest renders the latent memory" in refused.stderr
    typo = mirage("validate", str(edit(scene_dir, conditioning={"projection": "nearst"})))
    assert typo.returncode == 2 and "did you mean 'nearest'" in typo.stderr


def test_the_guidance_flag_reaches_the_render(scene_dir, tmp_path):
    from render_helpers import SMALL, cli, write_small_scene

    scene = write_small_scene(tmp_path / "scene")
    result = cli("render", scene, "--out", tmp_path / "run", *SMALL, "--guidance", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["guidance"] == 1.0


@pytest.mark.parametrize("frames, chunk, first", [(17, 1, None), (17, 0, None), (17, 9, 1), (10**12, 9, None), (0, 9, None)])
def test_plan_chunks_refuses_counts_that_would_never_end(frames, chunk, first):
    """Counts reach plan_chunks checked (spec, run.json); unchecked ones raise instead of looping."""
    with pytest.raises(ValueError, match="unchecked counts"):
        plan_chunks(frames, chunk, first)


def test_depth_scale_beside_a_npy_depth_is_refused_not_ignored(tmp_path):
    from render_helpers import write_small_scene

    from mirage_cli.base.errors import InputError
    from mirage_cli.spec.plan import load_plan

    assert load_plan(write_small_scene(tmp_path / "plain")).depth_path.suffix == ".npy"
    with pytest.raises(InputError) as info:
        load_plan(write_small_scene(tmp_path / "scaled", depth_scale=0.001))
    assert [p.field for p in info.value.problems] == ["depth_scale"] and ".npy depth holds scene units" in str(info.value)


def test_every_problem_nested_or_not_is_reported_in_one_pass(tmp_path):
    """Top-level, section and camera problems together: the camera's own keys are checked even while the
    frames and the resolution it would be sampled at are themselves refused."""
    from mirage_cli.base.errors import InputError

    shutil.copy(EXAMPLE.parent / "start.png", tmp_path / "start.png")
    (tmp_path / "scene.yaml").write_text(
        "prompt: a room\nimage: start.png\nfooo: 1\nframes: 34\ncamera:\n  preset: orbit\n  radious: 2\n"
        "memory:\n  mode: latentt\nresolution: 448x250\nstep_cache: {method: magg}\nconditioning: {methd: vace}\n"
    )
    with pytest.raises(InputError) as e:
        load_plan(tmp_path / "scene.yaml")
    fields = {p.field for p in e.value.problems}
    assert {"fooo", "frames", "resolution", "memory.mode", "step_cache.method", "conditioning.methd", "camera.radious"} <= fields
    assert next(p for p in e.value.problems if p.field == "camera.radious").line == 7
