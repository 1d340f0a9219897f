"""A camera path estimated from a video clip with pycolmap: ``mirage trajectory --from-video``.

Frames are sampled evenly over the clip (``samples``), scaled so that their longer side is at most
``SFM_MAX_SIDE`` pixels, and reconstructed as COLMAP does from the command line: SIFT features with
one shared SIMPLE_PINHOLE camera, sequential matching, incremental mapping; the largest model wins.
Its registered frames become keyframes at their frame numbers in the clip (OpenCV cameras, intrinsics
at the clip's size, the conversions of ``camera.conventions``), so any frame count and size can be
sampled from them as from any other camera source. The scale is COLMAP's: arbitrary units.

A result is refused (exit 2) when it cannot be a path: no model at all (too little parallax, or no
texture to match), fewer than ``MIN_REGISTERED_SHARE`` of the sampled frames registered (broken
tracks), or registered cameras that jump back and forth instead of moving along a path (frames out
of order: ``jumpiness``). Each refusal says how many frames registered and what to try.

Estimates are cached by the clip's sha256 and the number of samples (``cache_folder("video-cameras")``),
with the COLMAP model, so a spec that names the clip again costs nothing.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.files import cache_folder, file_record
from mirage_cli.base.video import read_frames_at
from mirage_cli.base.video_input import video_header
from mirage_cli.camera.colmap import import_pycolmap
from mirage_cli.camera.intrinsics import from_corner_origin, rescale_K, vertical_fov_deg
from mirage_cli.camera.keyframes import Keyframes

SAMPLES = 48
"""Frames sampled from the clip by default."""
SFM_MAX_SIDE = 960
"""Longer side, in pixels, of the frames SIFT sees (larger clips are scaled down; K is scaled back)."""
MIN_REGISTERED_SHARE = 0.8
"""Share of the sampled frames that must register for the path to count."""
MAX_JUMPINESS = 1.0
"""Above this ``jumpiness`` (both of positions and of viewing directions) the cameras are refused."""
SEQUENTIAL_OVERLAP = 8
"""Each sampled frame is matched with this many frames after it."""
CACHE_VERSION = 2


@dataclass(frozen=True)
class VideoCameras:
    """An estimate: ``keyframes`` (registered frames at their clip frame numbers), how many of the
    ``sampled`` frames ``registered``, COLMAP's mean ``reprojection_error`` (pixels at the SfM size),
    the vertical ``fov_deg``, the sparse points ``xyz`` float64 [P, 3] and ``rgb`` uint8 [P, 3], the
    cached COLMAP ``model`` folder, and whether it came from the cache."""

    keyframes: Keyframes
    registered: int
    sampled: int
    reprojection_error: float
    fov_deg: float
    xyz: np.ndarray
    rgb: np.ndarray
    model: Path
    cached: bool

    def describe(self) -> str:
        return (f"registered {self.registered} of {self.sampled} sampled frames, reprojection error "
                f"{self.reprojection_error:.2f} px, vertical field of view {self.fov_deg:.1f} deg")


def _refuse(clip: Path, field: str, message: str) -> InputError:
    return InputError(Problem(file=str(clip), field=field, message=message))


def jumpiness(values: np.ndarray) -> float:
    """Mean size of the second differences of ``values`` [N, D] over the mean size of the first: near 0
    for a path sampled evenly in time, about 1.4 for the same cameras in random order."""
    first = np.linalg.norm(np.diff(values, axis=0), axis=1)
    second = np.linalg.norm(np.diff(values, n=2, axis=0), axis=1)
    return float(second.mean() / first.mean()) if len(second) and first.mean() > 0 else 0.0


def estimate_folder(clip: Path, samples: int) -> Path:
    """Where the estimate of ``clip`` from ``samples`` frames is cached (it may not be there yet): the
    folder holds ``estimate.json`` and the COLMAP ``model``."""
    stat = clip.stat()
    digest = _clip_sha256(str(clip.resolve()), stat.st_size, stat.st_mtime_ns)
    return cache_folder("video-cameras") / f"{digest[:20]}-{samples}-v{CACHE_VERSION}"


@functools.lru_cache(maxsize=16)
def _clip_sha256(path: str, size: int, mtime_ns: int) -> str:
    """The clip's sha256, hashed once per file version (a spec reads its clip's estimate twice: for the
    path and for the scale)."""
    return file_record(Path(path))["sha256"]


def estimate_video_cameras(clip: str | Path, samples: int = SAMPLES, *, field: str = "--from-video",
                           log: Callable[[str], None] | None = None,
                           before_reconstructing: Callable[[str], None] | None = None) -> VideoCameras:
    """The ``VideoCameras`` of ``clip`` (module docstring); ``log`` hears each stage, and
    ``before_reconstructing`` (default: ``log``) the first line when no cached estimate spares the work.
    Raises InputError (naming ``clip`` and ``field``) for a file that is no readable video, too short
    a clip, or a refused reconstruction."""
    clip = Path(clip)
    say = log or (lambda _message: None)
    announce = before_reconstructing or say
    header = video_header(clip, field)
    count = header.frames if header.frames is not None else len(read_frames_at(clip, range(1 << 20)))
    if count < 3:
        raise _refuse(clip, field, f"has {count} frame(s): a camera path is estimated from at least 3")
    samples = min(int(samples), count)
    if samples < 3:
        raise _refuse(clip, field, f"--samples must be at least 3, got {samples}")
    folder = estimate_folder(clip, samples)
    if not (folder / "estimate.json").is_file():
        announce(f"video: sampling {samples} of {count} frames of {clip.name} to estimate its camera path with pycolmap "
                 "(cached for the next time)")
        _reconstruct(clip, count, samples, folder, say)
        cached = False
    else:
        say(f"video: the estimate of {clip.name} is cached in {folder}")
        cached = True
    return _read_estimate(clip, folder, header.width, header.height, header.fps, count, field, cached)


def _reconstruct(clip: Path, count: int, samples: int, folder: Path, say) -> None:
    """Run SfM on the sampled frames into ``folder`` (written beside it, renamed into place)."""
    pycolmap = import_pycolmap()
    pycolmap.logging.minloglevel = 3  # COLMAP's own progress lines would flood stderr: ours say what it does
    indices = np.linspace(0, count - 1, samples).round().astype(int)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        images = work / "images"
        images.mkdir()
        frames = read_frames_at(clip, indices)
        h, w = next(iter(frames.values())).shape[:2]
        scale = min(1.0, SFM_MAX_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        for index, frame in frames.items():
            image = Image.fromarray(frame)
            (image if size == (w, h) else image.resize(size, Image.Resampling.LANCZOS)).save(images / f"frame_{index:05d}.png")
        t0 = time.perf_counter()
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "SIMPLE_PINHOLE"
        say("video: SIFT features")
        pycolmap.extract_features(work / "database.db", images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  device=pycolmap.Device.cpu)
        best = None
        for attempt, factor in enumerate(FOCAL_PRIORS):
            say(f"video: matching and mapping with a focal length prior of {factor:g} x the longer side"
                + ("" if attempt == 0 else f" (attempt {attempt + 1}: the last did not converge)"))
            model = _map_with_prior(pycolmap, work, images, size, factor, attempt)
            if model is not None and (best is None or _better(model, best)):
                best = model
            if best is not None and best.num_reg_images() >= samples and best.compute_mean_reprojection_error() < CONVERGED_PX:
                break
        model = work / "model"
        model.mkdir()
        if best is not None:
            best.write_text(str(model))
        (work / "database.db").unlink(missing_ok=True)
        for attempt in range(len(FOCAL_PRIORS)):
            shutil.rmtree(work / f"sparse-{attempt}", ignore_errors=True)
        say(f"video: reconstructed in {time.perf_counter() - t0:.1f} s")
        estimate = {"sampled": samples, "registered": 0 if best is None else best.num_reg_images(),
                    "reprojection_error": None if best is None else best.compute_mean_reprojection_error(),
                    "sfm_size": list(size), "frames": count}
        (work / "estimate.json").write_text(json.dumps(estimate))
        if folder.exists():
            shutil.rmtree(folder)
        work.replace(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


FOCAL_PRIORS = (0.9, 0.6, 1.3)
"""Initial focal lengths (times the longer side) the mapping starts from, in turn: from a poor start
incremental mapping can settle on a wrong focal length, with a twisted path and a high reprojection
error (a 1.2 start on the test clip: 1.5x the true focal length, 0.6 px); the first start that
converges is kept, else the best."""
CONVERGED_PX = 0.45
"""Mean reprojection error (pixels at the SfM size) under which a model with every frame counts as
converged (the test clip: 0.20 px converged, 0.60 px not)."""


def _better(a, b) -> bool:
    """More registered frames, then a lower reprojection error."""
    return (a.num_reg_images(), -a.compute_mean_reprojection_error()) > (b.num_reg_images(), -b.compute_mean_reprojection_error())


def _map_with_prior(pycolmap, work: Path, images: Path, size: tuple[int, int], factor: float, attempt: int):
    """Set the shared camera's focal length prior to ``factor`` x the longer side, match the frames
    sequentially (the verification uses the prior) and map; the largest model, or None."""
    database = work / "database.db"
    db = pycolmap.Database.open(str(database))
    try:
        for camera in db.read_all_cameras():
            camera.params = [factor * max(size), size[0] / 2, size[1] / 2]
            db.update_camera(camera)
        db.clear_matches()
        db.clear_two_view_geometries()
    finally:
        db.close()
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = SEQUENTIAL_OVERLAP
    pycolmap.match_sequential(database, pairing_options=pairing, device=pycolmap.Device.cpu)
    out = work / f"sparse-{attempt}"
    out.mkdir()
    models = pycolmap.incremental_mapping(database, images, out)
    return max(models.values(), key=lambda r: r.num_reg_images(), default=None)


def _read_estimate(clip: Path, folder: Path, width: int, height: int, fps: float, count: int, field: str,
                   cached: bool) -> VideoCameras:
    """The cached reconstruction as ``VideoCameras``, or the refusal it calls for."""
    estimate = json.loads((folder / "estimate.json").read_text())
    registered, sampled = estimate["registered"], estimate["sampled"]
    if registered < 2:
        raise _refuse(clip, field, f"no camera path: {registered} of {sampled} sampled frames registered (too little parallax, "
                                   "or too little texture to match); try a clip where the camera moves sideways or forward, "
                                   "not only turns, or more --samples")
    if registered < MIN_REGISTERED_SHARE * sampled:
        raise _refuse(clip, field, f"only {registered} of {sampled} sampled frames registered (the tracks break); try more "
                                   "--samples (closer frames match better) or a shorter clip with steadier motion")
    rec = import_pycolmap().Reconstruction(str(folder / "model"))
    sfm_size = tuple(estimate["sfm_size"])
    frames, poses, Ks = [], [], []
    for image in sorted(rec.images.values(), key=lambda im: im.name):
        if not image.has_pose:
            continue
        cam_from_world = np.eye(4)
        cam_from_world[:3, :4] = image.cam_from_world().matrix()
        poses.append(np.linalg.inv(cam_from_world))
        K_sfm = from_corner_origin(rec.cameras[image.camera_id].calibration_matrix())
        Ks.append(rescale_K(K_sfm, sfm_size, (width, height)))
        frames.append(int(image.name.removeprefix("frame_").removesuffix(".png")))
    world_from_cam = np.stack(poses)
    forward = world_from_cam[:, :3, 2]
    if min(jumpiness(world_from_cam[:, :3, 3]), jumpiness(forward)) > MAX_JUMPINESS:
        raise _refuse(clip, field, f"{registered} of {sampled} frames registered, but the cameras jump back and forth "
                                   "instead of moving along a path (frames out of order, or a cut in the clip); give "
                                   "one continuous shot")
    K = np.stack(Ks)
    keyframes = Keyframes(world_from_cam, K, size=(width, height), times=np.array(frames, dtype=np.float64),
                          time_unit="frame", fps=fps, frames=count, native_size=(width, height), kind="video", file=str(clip))
    xyz = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3)
    rgb = np.array([p.color for p in rec.points3D.values()], dtype=np.uint8).reshape(-1, 3)
    return VideoCameras(keyframes, registered, sampled, float(estimate["reprojection_error"]),
                        vertical_fov_deg(K[0], height), xyz, rgb, folder / "model", cached)
