"""`mirage trajectory` through the real CLI: summaries, conversion, plots, and every camera-file error.

Errors must exit 2 with a line naming the file and the field, and never print a traceback.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mirage_cli.cli.main import app

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
ARKIT = DATA / "colmap" / "arkit_room"
RE10K = DATA / "realestate10k" / "0bf152ef84195293.txt"

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def expect_error(*args, contains):
    code, out, err = run("trajectory", *args)
    assert code == 2, (out, err)
    for piece in contains:
        assert piece in err, f"{piece!r} not in:\n{err}"
    assert all(line.startswith("error: ") for line in err.strip().splitlines()), err
    return err


def test_summary_json_of_arkit_model():
    code, out, err = run("trajectory", ARKIT, "--frames", 77, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["frames"] == 77 and s["width"] == 3840 and s["height"] == 2160
    assert s["total_rotation_deg"] == pytest.approx(547.137, abs=0.01)
    assert s["first_position"] == [0.0, 0.0, 0.0]
    assert len(s["bbox_min"]) == 3 and all(a <= b for a, b in zip(s["bbox_min"], s["bbox_max"]))


def test_text_summary_and_conversions(tmp_path):
    code, out, _ = run("trajectory", RE10K, "--frames", 33, "--fps", 8, "--width", 640, "--height", 352,
                       "--to", tmp_path / "p.yaml", "--plot", tmp_path / "p.png")
    assert code == 0
    for word in ("frames:", "33", "path length:", "total rotation:", "bounding box:", "p.yaml", "p.png"):
        assert word in out
    # every format written from the YAML and read back gives the same cameras
    base = json.loads(run("trajectory", tmp_path / "p.yaml", "--to", tmp_path / "base.json")[1] and
                      (tmp_path / "base.json").read_text())
    targets = ["a.json", "a.txt", "a.yml", "transforms.json", "colmap_model", "colmap_bin"]
    for name in targets:
        extra = ["--to-format", "colmap-binary"] if name == "colmap_bin" else []
        code, _, err = run("trajectory", tmp_path / "p.yaml", "--to", tmp_path / name, *extra)
        assert code == 0, err
        code, _, err = run("trajectory", tmp_path / name, "--width", 640, "--height", 352, "--fps", 8,
                           "--to", tmp_path / f"{name}.back.json")
        assert code == 0, err
        back = json.loads((tmp_path / f"{name}.back.json").read_text())
        for f0, f1 in zip(base["frames"], back["frames"]):
            np.testing.assert_allclose(f1["world_from_cam"], f0["world_from_cam"], atol=1e-6)
            np.testing.assert_allclose(f1["K"], f0["K"], atol=1e-6)
    assert (tmp_path / "colmap_bin" / "images.bin").exists()


def test_plot_writes_png(tmp_path):
    code, _, err = run("trajectory", ROOT / "trajectories" / "orbit.yaml", "--plot", tmp_path / "orbit.png")
    assert code == 0, err
    data = (tmp_path / "orbit.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_subprocess_error_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("keyframes:\n  - position: [0, 0]\n")
    proc = subprocess.run([sys.executable, "-m", "mirage_cli", "trajectory", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}:2: keyframes[0].position: expected a list of 3 numbers, got list [0, 0]"
    assert "Traceback" not in proc.stdout + proc.stderr


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


# --- trajectory YAML errors ------------------------------------------------------------------------


def test_missing_and_unknown_files(tmp_path):
    expect_error(tmp_path / "nope.yaml", contains=["nope.yaml: file or folder not found"])
    expect_error(write(tmp_path, "x.csv", "1,2"), contains=["x.csv: unknown camera file type"])
    expect_error(tmp_path, contains=[f"{tmp_path}: not a COLMAP sparse model"])


def test_yaml_does_not_parse(tmp_path):
    p = write(tmp_path, "t.yaml", "keyframes:\n  - position: [0, 0, 0\n  - yaw: 3\n")
    expect_error(p, contains=[f"{p}:", "YAML does not parse"])


def test_yaml_schema_errors_all_reported(tmp_path):
    p = write(tmp_path, "t.yaml", """\
keyframe: []
fps: fast
keyframes:
  - frame: 0
    position: [0, 0, zero]
    yaw: 0
  - frame: 10
    position: [0, 0, 1]
    yaw: 10
    quaternion: [1, 0, 0, 0]
  - frame: 20
    position: [0, 0, .nan]
    look_at: [0, 0, 5]
  - frame: 30
    world_from_cam: [[1.5, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
  - frame: 40
    position: [0, 0, 1]
    quaternion: [2, 0, 0, 0]
  - frame: 35
    position: [0, 0, 1]
    fov: 200
    pich: 3
""")
    err = expect_error(p, contains=[
        f"{p}:1: keyframe: unknown key 'keyframe' (did you mean 'keyframes'?)",
        f"{p}:2: fps: expected a number, got str 'fast'",
        f"{p}:5: keyframes[0].position: entry 2 expected a number, got str 'zero'",
        f"{p}:7: keyframes[1]: give the rotation one way only, got yaw/pitch/roll and quaternion",
        f"{p}:12: keyframes[2].position: entry 2 is nan (NaN or inf)",
        f"{p}:15: keyframes[3].world_from_cam: rotation is not orthonormal: max |R^T R - I| = 1.25",
        f"{p}:18: keyframes[4].quaternion: quaternion [w, x, y, z] must have unit norm, got norm 2",
        f"{p}:21: keyframes[5].fov: fov must be between 0 and 180 degrees",
        f"{p}:22: keyframes[5].pich: unknown key 'pich' (did you mean 'pitch'?)",
    ])
    assert len(err.strip().splitlines()) == 9


def test_keyframe_timing_errors(tmp_path):
    p = write(tmp_path, "t.yaml", "keyframes:\n  - {frame: 0, position: [0, 0, 0]}\n  - {frame: 40, position: [0, 0, 1]}\n")
    expect_error(p, "--frames", 121, contains=[
        f"{p}: keyframes: keyframes in {p} end at frame 40 but frames: 121 needs cameras up to frame 120; "
        "add a keyframe at frame 120 or render at most 41 frames"])
    p = write(tmp_path, "s.yaml", "keyframes:\n  - {time: 0, position: [0, 0, 0]}\n  - {time: 2, position: [0, 0, 1]}\n")
    expect_error(p, "--frames", 121, "--fps", 24, contains=["end at time 2 s but 121 frames at 24 fps need cameras up to 5 s"])
    p = write(tmp_path, "u.yaml", "keyframes:\n  - {frame: 4, position: [0, 0, 0]}\n  - {frame: 40, position: [0, 0, 1]}\n")
    expect_error(p, contains=["is at frame 4; frame 0 needs a camera"])
    p = write(tmp_path, "v.yaml", "keyframes:\n  - {frame: 0, position: [0, 0, 0]}\n  - {frame: 0, position: [0, 0, 1]}\n")
    expect_error(p, contains=[f"{p}:3: keyframes[1].frame: keyframe frames must increase strictly; 0 follows 0"])
    p = write(tmp_path, "w.yaml", "keyframes:\n  - {frame: 0, position: [0, 0, 0]}\n  - {time: 1, position: [0, 0, 1]}\n")
    expect_error(p, contains=["every keyframe needs the same kind of timing"])
    p = write(tmp_path, "e.yaml", "keyframes: []\n")
    expect_error(p, contains=[f"{p}:1: keyframes: expected a non-empty list of keyframes"])


def test_preset_file_errors(tmp_path):
    p = write(tmp_path, "t.yaml", "preset: orbitt\nradius: 2\n")
    expect_error(p, contains=["unknown preset 'orbitt' (did you mean 'orbit'?)"])
    p = write(tmp_path, "t.yaml", "preset: orbit\nradius: big\nlook_at: [0, 0]\n")
    expect_error(p, contains=[f"{p}:2: radius: expected a number, got str 'big'",
                              f"{p}:3: look_at: expected a list of 3 numbers"])
    p = write(tmp_path, "t.yaml", "preset: orbit\nkeyframes: []\n")
    expect_error(p, contains=["give exactly one of 'keyframes:' or 'preset:', not both"])


# --- other formats ---------------------------------------------------------------------------------


def test_realestate10k_errors(tmp_path):
    lines = RE10K.read_text().splitlines()
    row = lines[2].split()
    bad_rot = row[:7] + ["2.0"] + row[8:]
    nan = row[:10] + ["nan"] + row[11:]
    p = write(tmp_path, "c.txt", "\n".join([lines[0], lines[1], " ".join(row[:10]), " ".join(bad_rot), " ".join(nan)]) + "\n")
    expect_error(p, contains=[f"{p}:3: expected 19 numbers", f"{p}:4: rotation is not orthonormal",
                              f"{p}:5: contains NaN or inf"])
    p = write(tmp_path, "empty.txt", "https://example.com/video\n")
    expect_error(p, contains=["no camera lines"])


def test_canonical_json_errors(tmp_path):
    frame = {"world_from_cam": np.eye(4).tolist(), "K": [[-5, 0, 1], [0, 5, 1], [0, 0, 1]]}
    p = write(tmp_path, "c.json", json.dumps({"fps": 24, "width": 64, "height": 32,
                                              "frames": [frame, {"world_from_cam": [[1, 0, 0, 0]]}]}))
    expect_error(p, contains=[f"{p}: frames[0].K: focal lengths must be > 0",
                              f"{p}: frames[1].world_from_cam: expected 4 rows of 4 numbers"])
    p = write(tmp_path, "d.json", '{"fps": 24, "frames": [}')
    expect_error(p, contains=[f"{p}:1: JSON does not parse"])
    p = write(tmp_path, "n.json", json.dumps({"width": 64, "height": 32, "frames": [
        {"world_from_cam": [[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "K": np.eye(3).tolist()}]}))
    expect_error(p, contains=[f"{p}: frames[0].world_from_cam: row 0: entry 3 is nan (NaN or inf)"])


def test_nerfstudio_errors(tmp_path):
    c2w = np.eye(4).reshape(-1).tolist()
    p = write(tmp_path, "camera_path.json", json.dumps({"render_width": 64, "render_height": 32, "camera_type": "fisheye",
                                                        "camera_path": [{"camera_to_world": c2w, "fov": 200}]}))
    expect_error(p, contains=[f"{p}: camera_type: only 'perspective'", f"{p}: camera_path[0].fov: fov must be between"])
    p = write(tmp_path, "transforms.json", json.dumps({"w": 64, "h": 32, "fl_x": 50, "frames": [
        {"transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}]}))
    expect_error(p, contains=[f"{p}: frames[0].transform_matrix: expected 4 rows of 4 numbers"])


def test_colmap_errors(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(ARKIT / "sparse" / "0", model)
    images = (model / "images.txt").read_text().replace("2 0.9572868003607523", "2 1.9572868003607523")
    (model / "images.txt").write_text(images.replace("1 1.0 0.0 0.0 0.0", "1 0.0 0.0 0.0 0.0"))
    lines = (model / "images.txt").read_text().splitlines()
    line_1 = 1 + next(i for i, line in enumerate(lines) if line.startswith("1 "))
    line_2 = 1 + next(i for i, line in enumerate(lines) if line.startswith("2 "))
    images_txt = model / "images.txt"
    unit = "quaternion [w, x, y, z] must have unit norm"
    expect_error(model, contains=[f"{images_txt}:{line_1}: image 1 (frame_000000.png): {unit}, got norm 0",
                                  f"{images_txt}:{line_2}: image 2 (frame_000001.png): {unit}"])
    (model / "images.txt").write_text(images.replace("2 1.9572868003607523", "2 0.9572868003607523"))
    (model / "cameras.txt").write_text("1 PINHOLE 640 480 500 500 320\n")
    expect_error(model, contains=[f"{model / 'cameras.txt'}:1: camera model PINHOLE takes 4 parameters, got 3"])


def test_bad_options(tmp_path):
    expect_error(RE10K, "--width", 640, contains=["--width/--height: give both"])
    expect_error(RE10K, "--frames", 0, contains=["--frames: must be between 1 and 345,601, got 0"])
    expect_error(RE10K, "--to", tmp_path / "x.mp4", contains=["x.mp4: --to: unknown output type"])
    expect_error(RE10K, "--to", tmp_path / "x.json", "--to-format", "csv", contains=["--to-format: unknown format 'csv'"])
    assert not (tmp_path / "x.json").exists()


def test_colmap_binary_damage_is_one_plain_line(tmp_path):
    import pycolmap

    model = tmp_path / "bin"
    model.mkdir()
    pycolmap.Reconstruction(str(ARKIT / "sparse" / "0")).write_binary(str(model))
    (model / "frames.bin").write_bytes(b"")  # pycolmap's own message here is a C++ 'unordered_map::at'
    code, out, err = run("trajectory", model)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {model / 'frames.bin'}: damaged: the file is empty"]
    images = (model / "images.bin").read_bytes()
    (model / "frames.bin").unlink()
    (model / "images.bin").write_bytes(images[:300])  # pycolmap would read the cut name forever
    code, out, err = run("trajectory", model)
    assert err.strip().splitlines() == [f"error: {model / 'images.bin'}: damaged: declares 20 images but has 292 bytes "
                                        "left for them (truncated or damaged)"]
    (model / "images.bin").write_bytes(images)
    (model / "rigs.bin").unlink()
    cameras = bytearray((model / "cameras.bin").read_bytes())
    cameras[12:16] = (99).to_bytes(4, "little")  # u64 count, u32 camera id, then the i32 model id
    (model / "cameras.bin").write_bytes(bytes(cameras))
    code, out, err = run("trajectory", model)
    assert "cameras.bin: damaged: camera 1 (record 0): unknown camera model id 99" in err, err
    cameras = (model / "cameras.bin").read_bytes()
    pycolmap.Reconstruction(str(ARKIT / "sparse" / "0")).write_binary(str(model))
    (model / "cameras.bin").write_bytes(cameras[:10])  # every image's camera reads as focal 0: said once
    code, out, err = run("trajectory", model)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    (model / "images.bin").unlink()
    (model / "images.bin").mkdir()
    code, out, err = run("trajectory", model)
    assert code == 2 and f"{model / 'images.bin'}: is a directory" in err, err


def test_trajectory_of_a_scene_spec_is_the_path_its_render_follows(tmp_path):
    import json as json_module

    from render_helpers import cli as run_cli
    from render_helpers import write_small_scene

    from mirage_cli.camera.source import load_trajectory
    from mirage_cli.spec.plan import load_plan

    scene = write_small_scene(tmp_path / "scene")
    plan = load_plan(scene)
    shown = run_cli("trajectory", scene, "--json", "--to", tmp_path / "path.json")
    assert shown.exit_code == 0, shown.stderr
    summary = json_module.loads(shown.stdout)
    assert summary["frames"] == plan.frames == 17 and (summary["width"], summary["height"]) == (224, 128)
    written = load_trajectory(tmp_path / "path.json")
    assert np.allclose(written.positions, plan.trajectory.positions, atol=1e-6)
    auto = write_small_scene(tmp_path / "auto", intrinsics="auto")
    refused = run_cli("trajectory", auto)
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "intrinsics: auto" in refused.stderr, refused.stderr
