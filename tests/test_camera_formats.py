"""Readers and writers: round trips between every pair of formats, pycolmap models, real files."""

import itertools
import zlib
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from mirage_cli.camera.conventions import world_from_cam_to_colmap
from mirage_cli.camera.intrinsics import K_from_params, K_from_vertical_fov
from mirage_cli.camera.readers import detect_kind, read_camera_file, read_colmap, read_realestate10k
from mirage_cli.camera.rotations import quat_to_matrix
from mirage_cli.camera.source import load_trajectory
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.camera.writers import write_trajectory

DATA = Path(__file__).parent / "data"
RE10K = sorted((DATA / "realestate10k").glob("*.txt"))

W, H, N, FPS = 640, 352, 7, 24.0
# output name per format (the writer picks the format from the name)
NAMES = {
    "json": "path.json",
    "realestate10k": "path.txt",
    "yaml": "path.yaml",
    "nerfstudio-transforms": "transforms.json",
    "nerfstudio-camera-path": "camera_path.json",
    "colmap-text": "colmap_text",
    "colmap-binary": "colmap_bin",
}


def random_trajectory(seed: int, centred_K: bool) -> Trajectory:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(N, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[::2] *= -1  # quaternions of both signs
    world_from_cam = np.tile(np.eye(4), (N, 1, 1))
    world_from_cam[:, :3, :3] = quat_to_matrix(q)
    world_from_cam[:, :3, 3] = rng.uniform(-3, 3, size=(N, 3))
    K = K_from_vertical_fov(55.0, W, H) if centred_K else K_from_params(510.3, 498.7, 322.25, 171.4)
    return Trajectory(world_from_cam, np.repeat(K[None], N, axis=0), W, H, FPS)


def write_then_read(traj: Trajectory, fmt: str, folder: Path) -> Trajectory:
    out = folder / NAMES[fmt]
    write_trajectory(out, traj, fmt)
    return load_trajectory(out, frames=N, fps=FPS, width=W, height=H)


@pytest.mark.parametrize("a,b", list(itertools.product(NAMES, NAMES)))
def test_round_trip_every_pair(tmp_path, a, b):
    # camera_path.json stores a vertical fov, not K: it keeps a centred square-pixel K only
    centred = "nerfstudio-camera-path" in (a, b)
    base = random_trajectory(zlib.crc32(f"{a}-{b}".encode()), centred_K=centred)  # a stable seed per pair
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    via_a = write_then_read(base, a, tmp_path / "a")
    via_b = write_then_read(via_a, b, tmp_path / "b")
    for got in (via_a, via_b):
        assert len(got) == N and (got.width, got.height) == (W, H)
        np.testing.assert_allclose(got.world_from_cam, base.world_from_cam, atol=1e-6)
        np.testing.assert_allclose(got.K, base.K, atol=1e-6)


def test_native_size_and_fps_survive(tmp_path):
    base = random_trajectory(3, centred_K=False)
    for fmt in ("json", "yaml", "nerfstudio-transforms", "colmap-binary"):
        out = tmp_path / NAMES[fmt]
        write_trajectory(out, base, fmt)
        got = load_trajectory(out)  # the source's own frames and size
        assert (len(got), got.width, got.height) == (N, W, H), fmt
        np.testing.assert_allclose(got.K, base.K, atol=1e-6)
    write_trajectory(tmp_path / "p.txt", base)
    got = load_trajectory(tmp_path / "p.txt")  # RealEstate10K: fps from timestamps, size unknown
    assert got.fps == pytest.approx(FPS) and (got.width, got.height) == (1280, 704)


def pycolmap_model(folder: Path, binary: bool, quats_wxyz, names, ids=None) -> None:
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="PINHOLE", width=800, height=600,
                                                    params=[700.0, 710.0, 400.0, 300.0]))
    ids = ids or list(range(1, len(names) + 1))
    for i, (q, name) in enumerate(zip(quats_wxyz, names)):
        q = np.asarray(q, float) / np.linalg.norm(q)
        image = pycolmap.Image(name=name, camera_id=1, image_id=ids[i])
        rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([q[1], q[2], q[3], q[0]])), np.array([i, -i, 2.0 * i]))
        rec.add_image_with_trivial_frame(image, rigid)
    folder.mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(str(folder))


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_models_written_by_pycolmap(tmp_path, binary):
    q = [[0.9, 0.1, -0.2, 0.3], [-0.9, -0.1, 0.2, -0.3], [-0.7, 0.1, 0.5, 0.2], [0.1, 0.9, 0.3, -0.2]]
    names = ["frame_2.png", "frame_10.png", "frame_1.png", "frame_9.png"]
    pycolmap_model(tmp_path / "m", binary, q, names, ids=[4, 3, 2, 1])
    if not binary:
        text = (tmp_path / "m" / "images.txt").read_text()
        assert " -0.9" in text  # pycolmap kept the negative scalar part
    keys = read_colmap(tmp_path / "m")
    # natural name order: frame_1, frame_2, frame_9, frame_10
    assert keys.names == ["frame_1.png", "frame_2.png", "frame_9.png", "frame_10.png"]
    assert read_colmap(tmp_path / "m", order="id").names == ["frame_9.png", "frame_1.png", "frame_10.png", "frame_2.png"]
    by_name = {n: i for i, n in enumerate(names)}
    for name, w in zip(keys.names, keys.world_from_cam):
        i = by_name[name]
        qn = np.asarray(q[i]) / np.linalg.norm(q[i])
        cam_from_world = np.eye(4)
        cam_from_world[:3, :3] = quat_to_matrix(qn)
        cam_from_world[:3, 3] = [i, -i, 2.0 * i]
        np.testing.assert_allclose(w, np.linalg.inv(cam_from_world), atol=1e-9)
        got_q, _ = world_from_cam_to_colmap(w)
        assert abs(abs(np.dot(got_q, qn)) - 1) < 1e-9
    # +q and -q (images 0 and 1) are the same rotation
    np.testing.assert_allclose(keys.world_from_cam[1][:3, :3], keys.world_from_cam[3][:3, :3], atol=1e-9)
    # COLMAP's principal point is corner-origin: ours is 0.5 less
    np.testing.assert_allclose(keys.K[0], [[700, 0, 399.5], [0, 710, 299.5], [0, 0, 1]])
    assert keys.size == (800, 600)
    # accepted as the model folder, its parent's sparse/0, and through detection
    (tmp_path / "scan" / "sparse").mkdir(parents=True)
    (tmp_path / "m").rename(tmp_path / "scan" / "sparse" / "0")
    assert detect_kind(tmp_path / "scan") == "colmap"
    assert len(read_camera_file(tmp_path / "scan")) == 4


def every_model_reconstruction(seed: int = 0):
    """A pycolmap Reconstruction with one camera of every model our reader accepts (perspective
    ones, random distortion), all 640x352, and one image per camera: every other image without 2D
    points (an empty POINTS2D line), the others with points at whole pixels (lines that start like
    image lines), two of them seen by a 3D point."""
    from mirage_cli.camera.colmap import camera_models

    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    models = [name for name in camera_models() if name != "EQUIRECTANGULAR"]
    for i, name in enumerate(models, start=1):
        cam = pycolmap.Camera.create_from_model_id(i, getattr(pycolmap.CameraModelId, name), 300.0 + 10 * i, W, H)
        params = np.asarray(cam.params, dtype=np.float64)  # focal lengths and principal point, then distortion
        cam.params = [p + (rng.uniform(-1e-3, 1e-3) if p == 0.0 else rng.uniform(-5, 5)) for p in params]
        rec.add_camera_with_trivial_rig(cam)
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        points = [] if i % 2 else [pycolmap.Point2D(np.array([200.0 + j, 100.0 + i])) for j in range(4)]
        image = pycolmap.Image(name=f"frame_{i}.png", camera_id=i, image_id=10 * i, points2D=points)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(q), rng.uniform(-3, 3, 3)))
    track = pycolmap.Track()
    track.add_element(20, 0)
    track.add_element(40, 2)
    rec.add_point3D(np.array([0.0, 0.0, 5.0]), track, np.zeros(3, dtype=np.uint8))
    return rec, models


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_colmap_models_of_every_camera_model_with_and_without_points(tmp_path, binary):
    rec, models = every_model_reconstruction()
    folder = tmp_path / "m"
    folder.mkdir()
    (rec.write_binary if binary else rec.write_text)(str(folder))
    if not binary:
        assert "\n\n" in (folder / "images.txt").read_text()  # images without points: empty POINTS2D lines
    keys = read_colmap(folder, order="id")
    back = pycolmap.Reconstruction(str(folder))  # what pycolmap itself reads from the same files
    images = sorted(back.images.values(), key=lambda im: im.image_id)
    assert keys.names == [im.name for im in images] and len(keys) == len(models)
    for got, K, im in zip(keys.world_from_cam, keys.K, images):
        cam_from_world = np.eye(4)
        cam_from_world[:3] = im.cam_from_world().matrix()
        np.testing.assert_allclose(got, np.linalg.inv(cam_from_world), atol=1e-9)
        expected_K = np.asarray(back.cameras[im.camera_id].calibration_matrix())
        expected_K[:2, 2] -= 0.5  # COLMAP's corner origin -> pixel centres
        np.testing.assert_allclose(K, expected_K, atol=1e-9)
    assert keys.size == (W, H)


def test_colmap_bad_quaternion_after_an_image_without_points_names_its_line(tmp_path):
    from mirage_cli.base.errors import InputError

    rec, _ = every_model_reconstruction()
    folder = tmp_path / "m"
    folder.mkdir()
    rec.write_text(str(folder))
    lines = (folder / "images.txt").read_text().split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("20 "))  # image 20 follows image 10's empty line
    fields = lines[at].split()
    fields[1:5] = ["2", "0", "0", "0"]
    lines[at] = " ".join(fields)
    (folder / "images.txt").write_text("\n".join(lines))
    with pytest.raises(InputError) as info:
        read_colmap(folder)
    assert [str(p) for p in info.value.problems] == [
        f"{folder / 'images.txt'}:{at + 1}: image 20 (frame_2.png): quaternion [w, x, y, z] must have unit norm, got norm 2"]
    # a deleted POINTS2D line shifts the pairing: the image line taken as points, the points as an image
    del lines[at + 1]
    lines[at] = lines[at].replace(" 2 0 0 0 ", " 1 0 0 0 ")
    (folder / "images.txt").write_text("\n".join(lines))
    with pytest.raises(InputError) as info:
        read_colmap(folder)
    assert [str(p) for p in info.value.problems] == [
        f"{folder / 'images.txt'}:{at + 2}: the POINTS2D line of image 20 holds 10 values, not (X, Y, POINT3D_ID) "
        "triples: each image takes two lines, its image line and then its POINTS2D line (empty when it has no "
        "points); is a line missing?"]


def test_colmap_equirectangular_camera_is_refused(tmp_path):
    from mirage_cli.base.errors import InputError

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_id(1, pycolmap.CameraModelId.EQUIRECTANGULAR, 1.0, W, H))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="a.png", camera_id=1, image_id=1), pycolmap.Rigid3d())
    (tmp_path / "m").mkdir()
    rec.write_text(str(tmp_path / "m"))
    with pytest.raises(InputError, match="camera 1: camera model EQUIRECTANGULAR is not a perspective camera"):
        read_colmap(tmp_path / "m")


def test_colmap_text_lines_are_bounded(tmp_path):
    from mirage_cli.base.errors import InputError

    rec, _ = every_model_reconstruction()
    folder = tmp_path / "m"
    folder.mkdir()
    rec.write_text(str(folder))
    images = folder / "images.txt"
    lines = images.read_text().split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("20 "))
    lines[at + 1] = "200 100 -1 " * 200_000  # a 2.2 MB POINTS2D line is skipped unread
    images.write_text("\n".join(lines))
    assert len(read_colmap(folder)) == len(rec.images)
    with open(folder / "cameras.txt", "a") as f:
        f.write("7" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"cameras.txt:\d+: line longer than 65,536 characters"):
        read_colmap(folder)


@pytest.mark.parametrize("path", RE10K, ids=[p.stem for p in RE10K])
def test_real_realestate10k_files(tmp_path, path):
    keys = read_realestate10k(path)
    lines = [row.split() for row in path.read_text().splitlines()[1:] if row.strip()]
    assert len(keys) == len(lines) == 16
    row = [float(x) for x in lines[0]]
    traj = load_trajectory(path, width=1280, height=720)
    # intrinsics: normalized * size, principal point to integer pixel centres
    np.testing.assert_allclose(traj.K[0], [[row[1] * 1280, 0, row[3] * 1280 - 0.5], [0, row[2] * 720, row[4] * 720 - 0.5],
                                           [0, 0, 1]], atol=1e-9)
    cam_from_world = np.eye(4)
    cam_from_world[:3] = np.asarray(row[7:19]).reshape(3, 4)
    np.testing.assert_allclose(traj.cam_from_world[0], cam_from_world, atol=1e-6)
    assert 3.0 < traj.fps < 4.0  # these clips are subsampled: ~0.27 s between lines
    # write and read back: the same cameras
    write_trajectory(tmp_path / "back.txt", traj)
    again = load_trajectory(tmp_path / "back.txt", width=1280, height=720)
    np.testing.assert_allclose(again.world_from_cam, traj.world_from_cam, atol=1e-9)
    np.testing.assert_allclose(again.K, traj.K, atol=1e-9)


def test_arkit_model_reads(tmp_path):
    keys = read_camera_file(DATA / "colmap" / "arkit_room")  # the folder holding sparse/0
    assert len(keys) == 20 and keys.size == (3840, 2160)
    np.testing.assert_allclose(keys.world_from_cam[0], np.eye(4), atol=1e-12)  # image 1 is the identity
    traj = load_trajectory(DATA / "colmap" / "arkit_room", frames=77, width=1280, height=720)
    np.testing.assert_allclose(traj.K[0, 0, 0], 2567.9902 / 3, rtol=1e-9)
    np.testing.assert_allclose(traj.K[0, 0, 2], (1928.3684 - 0.5 + 0.5) / 3 - 0.5, rtol=1e-9)


def test_pycolmap_loaded_our_way_leaves_zlib_users_working(tmp_path):
    """pycolmap 4.x exports its own zlib: imported first, a later PNG write aborts the process
    (found by the fuzz test). ``import_pycolmap`` loads the zlib users first; a child process
    imports nothing else before it, then compresses three ways."""
    import subprocess
    import sys

    code = (
        "from mirage_cli.camera.colmap import import_pycolmap\n"
        "import_pycolmap()\n"
        "import io, numpy as np, matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "from PIL import Image\n"
        "Image.new('RGB', (64, 64), 7).save(io.BytesIO(), format='PNG')\n"
        f"np.savez_compressed({str(tmp_path / 'a.npz')!r}, a=np.zeros(1000))\n"
        f"plt.plot([0, 1]); plt.savefig({str(tmp_path / 'a.png')!r})\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def write_spatia(folder: Path, traj: Trajectory, four_by_four: bool) -> None:
    """Spatia's camera files for ``traj`` (its README's format): one world-to-camera matrix per line as
    a JSON list, and [fx fy cx cy] normalized by the image with the origin at its corner."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = [np.linalg.inv(m)[: 4 if four_by_four else 3].tolist() for m in traj.world_from_cam]
    (folder / "w2c.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    K = traj.K[0]
    fx, fy, cx, cy = K[0, 0] / W, K[1, 1] / H, (K[0, 2] + 0.5) / W, (K[1, 2] + 0.5) / H
    (folder / "intrinsics.txt").write_text("[" + " ".join(repr(float(v)) for v in (fx, fy, cx, cy)) + "]")


@pytest.mark.parametrize("four_by_four", [False, True], ids=["3x4", "4x4"])
def test_spatia_camera_folders(tmp_path, four_by_four):
    traj = random_trajectory(3, centred_K=False)
    write_spatia(tmp_path / "case", traj, four_by_four)
    assert detect_kind(tmp_path / "case") == "spatia" and detect_kind(tmp_path / "case" / "w2c.txt") == "spatia"
    for source in (tmp_path / "case", tmp_path / "case" / "w2c.txt"):
        back = load_trajectory(source, width=W, height=H, fps=FPS)
        np.testing.assert_allclose(back.world_from_cam, traj.world_from_cam, atol=1e-9)
        np.testing.assert_allclose(back.K, traj.K, atol=1e-6)


def test_spatia_bad_lines_name_the_line(tmp_path):
    from mirage_cli.base.errors import InputError

    folder = tmp_path / "case"
    write_spatia(folder, random_trajectory(4, centred_K=True), True)
    lines = (folder / "w2c.txt").read_text().splitlines()
    lines[2] = "[[1, 0, 0], [0, 1, 0]]"
    lines[4] = "not json"
    (folder / "w2c.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        read_camera_file(folder)
    text = "\n".join(str(p) for p in info.value.problems)
    assert "w2c.txt:3:" in text and "shape [2, 3]" in text and "w2c.txt:5:" in text
    (folder / "intrinsics.txt").write_text("[0.8 1.4 0.5]")
    write_spatia(tmp_path / "ok", random_trajectory(4, centred_K=True), True)
    (tmp_path / "ok" / "intrinsics.txt").write_text("[0.8 1.4 0.5]")
    with pytest.raises(InputError, match="expected 4 finite numbers"):
        read_camera_file(tmp_path / "ok")


def test_spatia_matrices_must_be_rigid_and_bounded(tmp_path):
    from mirage_cli.base.errors import InputError

    folder = tmp_path / "case"
    write_spatia(folder, random_trajectory(4, centred_K=True), True)
    good = (folder / "w2c.txt").read_text().splitlines()
    for line, message in [
        ("[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [5, 5, 5, 9]]",
         "the bottom row of a 4x4 world-to-camera matrix must be [0, 0, 0, 1], got [5, 5, 5, 9]"),
        ("[[3, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]", "the 3x3 rotation part of the world-to-camera matrix is not a rotation"),
        ("[" * 2000 + "]" * 2000, "JSON nested deeper than 64 levels"),
        ("[" * 100_000 + "]" * 100_000, "line longer than 4,096 characters"),
        ("[[true, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]", "expected a JSON list of 3 or 4 rows of 4 numbers (a 3x4 or 4x4 "
         "world-to-camera matrix), got a value that is not a number"),
    ]:
        (folder / "w2c.txt").write_text("\n".join(good[:2] + [line] + good[2:]) + "\n")
        with pytest.raises(InputError) as info:
            read_camera_file(folder)
        (problem,) = info.value.problems
        assert str(problem).startswith(f"{folder / 'w2c.txt'}:3: {message}"), problem
    # a bottom row within 1e-6 of [0, 0, 0, 1] is a rounding of it
    (folder / "w2c.txt").write_text("[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1e-9, 1.0000000001]]\n")
    assert len(read_camera_file(folder)) == 1


def test_spatia_intrinsics_are_normalized_and_a_regular_file(tmp_path):
    import os

    from mirage_cli.base.errors import InputError

    folder = tmp_path / "case"
    traj = random_trajectory(4, centred_K=False)
    write_spatia(folder, traj, False)
    intrinsics = folder / "intrinsics.txt"
    fx, fy, cx, cy = (float(v) for v in intrinsics.read_text().strip("[]").split())
    for text in (f"{fx}, {fy}, {cx}, {cy}", f"{fx} {fy} {cx} {cy}\n", f"[{fx},{fy},{cx},{cy}]"):  # separators Spatia's files use
        intrinsics.write_text(text)
        np.testing.assert_allclose(load_trajectory(folder, width=W, height=H).K, traj.K, atol=1e-6)
    intrinsics.write_text("500 500 320 176")
    with pytest.raises(InputError, match=r"intrinsics.txt: \[500 500 320 176\] look like pixels"):
        read_camera_file(folder)
    intrinsics.unlink()
    for make, what in ((os.mkdir, "is a directory"), (os.mkfifo, r"is a named pipe \(FIFO\)")):
        make(intrinsics)
        with pytest.raises(InputError, match=f"intrinsics.txt: {what}, expected a regular file"):
            read_camera_file(folder)
        os.rmdir(intrinsics) if intrinsics.is_dir() else intrinsics.unlink()
    assert read_camera_file(folder).K is None  # no intrinsics.txt: the spec's intrinsics or the default apply
