"""What ``mirage eval`` measures: the frames, the camera path of every frame and the chunk boundaries.

A run directory gives its ``video.mp4``, ``camera.json`` (written by every render) and its chunks
(``run.json``); any other video needs ``--camera`` (any format ``mirage trajectory`` reads) with one
camera per frame, the video's fps where the file states one, and intrinsics. Every problem is an
InputError naming the file and the flag (``TARGET`` for the positional argument), exit 2.

The order is the contract's: everything that can be told from headers and small files (run.json, the
camera file, the video's header, the reference's headers, the depth file's header and then its values)
is checked before any frame is decoded, and the frames are decoded within the bound those checks
allow (``video_file``); the measuring comes after all of it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError
from mirage_cli.base.files import check_file
from mirage_cli.base.limits import MAX_FRAMES, MAX_MODEL_BYTES
from mirage_cli.base.video import VideoHeader
from mirage_cli.base.video_input import check_total, decode, problem, video_header
from mirage_cli.camera.keyframes import Keyframes
from mirage_cli.camera.readers import read_camera_file
from mirage_cli.camera.source import load_trajectory
from mirage_cli.depth.providers import DEPTH_KIND_METRIC, TransformersDepth, depth_model_problem, is_no_model
from mirage_cli.depth.tiny import is_tiny_model
from mirage_cli.evaluation.depth_file import read_depth
from mirage_cli.evaluation.memory_depth import depth_from_points, memory_points
from mirage_cli.evaluation.reference import check_reference, read_reference
from mirage_cli.evaluation.run_config import RunChunks, run_chunks
from mirage_cli.rundir.layout import RUN_JSON

TARGET = "TARGET"
"""The field name of the positional argument (the run directory or the video)."""


@dataclass
class EvalInputs:
    """``frames`` uint8 [N, H, W, 3], ``fps``, ``world_from_cam`` float64 [N, 4, 4] (OpenCV), ``K``
    float64 [N, 3, 3] at the frames' size, ``boundaries`` (frames where a chunk ends and the next
    begins), ``video`` and ``camera`` (the files), ``depth`` (per-frame z-depth, or None)."""

    frames: np.ndarray
    fps: float
    world_from_cam: np.ndarray
    K: np.ndarray
    video: Path
    camera: Path
    boundaries: list[int] = field(default_factory=list)
    depth: np.ndarray | None = None  # float [N, H, W] z-depth of every frame in the path's units (NaN: none), or None
    reference: np.ndarray | None = None  # uint8 [N, H, W, 3] ground-truth frames, or None
    depth_source: str | None = None  # where ``depth`` came from, in words


def _with_field(error: InputError, flag: str) -> InputError:
    """``error`` with ``flag`` in front of every problem's field (a camera reader names the file only)."""
    return InputError([dataclasses.replace(p, field=flag if not p.field else f"{flag}: {p.field}") for p in error.problems])


def _locate(target: Path, camera: Path | None) -> tuple[Path, Path, str, Path | None]:
    """(video, camera file, the camera's field, the run directory or None) of ``target``."""
    if target.is_dir():
        video = target / "video.mp4"
        if not video.exists():
            if not (target / RUN_JSON).exists():
                raise problem(target, TARGET, "is a folder but not a run directory (no run.json, no video.mp4): give a run "
                                              "directory (the --out of a render) or a video file")
            raise problem(target, TARGET, "holds no video.mp4 yet (the render has not finished: run `mirage render` again to "
                                          "resume it)")
        if camera is not None:
            return video, camera, "--camera", target
        if not (target / "camera.json").exists():
            raise problem(target, TARGET, "holds no camera.json (rendered before it was written): pass --camera")
        return video, target / "camera.json", TARGET, target
    check_file(target, 1 << 62, field=TARGET)  # the size is bounded by the video's checks
    if camera is None:
        raise problem(target, TARGET, "is a video: pass its camera path with --camera (any format `mirage trajectory` reads)")
    return target, camera, "--camera", None


def _camera_keys(camera: Path, flag: str) -> tuple[Keyframes, int]:
    """The camera file's keyframes and its number of cameras, checked to be one per frame of a video."""
    if not camera.is_dir():  # a COLMAP model or Spatia folder is checked file by file by its reader
        check_file(camera, MAX_MODEL_BYTES, field=flag)  # never a FIFO or device, whatever the reader does first
    try:
        keys = read_camera_file(camera)
    except InputError as e:
        raise _with_field(e, flag) from None
    if keys.K is None and keys.fov is None:
        raise problem(camera, flag, "has no intrinsics: evaluation needs the focal length the frames were rendered with "
                                    "(give a camera file with intrinsics, e.g. the run's camera.json)")
    count = keys.frames if keys.frames is not None else len(keys.world_from_cam)
    if not 2 <= count <= MAX_FRAMES:
        raise problem(camera, flag, f"has {count:,} cameras; eval measures videos of 2 to {MAX_FRAMES:,} frames, one camera each")
    return keys, count


def _check_header(video: Path, header: VideoHeader, camera: Path, camera_flag: str, keys: Keyframes, count: int,
                  chunks: RunChunks | None) -> None:
    """The video's header against the camera path (frame count where the container states one, fps
    where the camera file states one) and run.json, and the pixels eval would hold; before decoding."""
    check_total(video, TARGET, header, count)
    if keys.fps is not None and not math.isclose(keys.fps, header.fps, rel_tol=1e-3):
        raise problem(camera, camera_flag, f"is at {keys.fps:g} fps, the video at {header.fps:g} fps")
    if header.frames is not None and header.frames < 2:
        raise problem(video, TARGET, f"holds {header.frames} frame(s); evaluation compares frames, it needs at least 2")
    if header.frames is not None and header.frames != count:
        raise problem(camera, camera_flag, f"has {count} cameras for a video of {header.frames} frames: give one camera per frame")
    if chunks is not None and chunks.frames != count:
        raise problem(chunks.path, "config.frames", f"says {chunks.frames} frames; the run's camera path has {count} cameras")


def _read_frames(video: Path, header: VideoHeader, camera: Path, camera_flag: str, count: int) -> np.ndarray:
    """The video's frames, decoded within the bound of ``count`` frames (one per camera)."""
    frames = decode(video, TARGET, header, count)
    if len(frames) < 2:
        raise problem(video, TARGET, f"holds {len(frames)} frame(s); evaluation compares frames, it needs at least 2")
    if len(frames) != count:
        length = f"more than {count}" if len(frames) > count else f"{len(frames)}"
        raise problem(camera, camera_flag, f"has {count} cameras for a video of {length} frames: give one camera per frame")
    return frames


def _camera(camera: Path, flag: str, frames: int, fps: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The cameras (world_from_cam, K) of every frame at the frames' ``size`` (H, W)."""
    try:
        traj = load_trajectory(camera, frames=frames, fps=fps, width=size[1], height=size[0])
    except InputError as e:
        raise _with_field(e, flag) from None
    return traj.world_from_cam, traj.K


def _model_depth(name: str, frames: np.ndarray) -> np.ndarray:
    """z-depth [N, H, W] of every frame from a *metric* depth model (a relative model's depth has no
    path scale: refused)."""
    import torch

    provider = TransformersDepth(name, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if provider.kind != DEPTH_KIND_METRIC:
        raise InputError(f"{name} is a relative depth model: its depth has no scale to compare with the camera path; use a "
                         "metric model (with a path in metres), --depth, or a run directory (its memory's depth)", field="--depth-model")
    with torch.no_grad():
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, H, W]
        return provider.estimate(pixels).double().cpu().numpy()


def load_inputs(target: str | Path, camera: str | Path | None = None, depth: str | Path | None = None,
                reference: str | Path | None = None, depth_model: str | None = None) -> EvalInputs:
    """The frames, cameras, chunk boundaries (and ``depth``, ``reference``) of a run directory or of a
    video with ``camera``, every input checked in the order the module docstring gives."""
    if depth_model is not None and is_no_model(depth_model):
        depth_model = None
    if depth_model is not None and is_tiny_model(depth_model):
        raise InputError("the tiny depth model has random weights (for CPU demos): its depth measures nothing; give a metric "
                         "depth model or --depth", field="--depth-model")
    if depth is not None and depth_model is not None:
        raise InputError("give the depth either as a file (--depth) or from a model (--depth-model), not both", field="--depth-model")
    if depth_model is not None and (why := depth_model_problem(depth_model)) is not None:
        raise InputError(why, field="--depth-model")
    target = Path(target)
    video, camera_path, camera_flag, run = _locate(target, None if camera is None else Path(camera))
    chunks = None if run is None else run_chunks(run)
    keys, count = _camera_keys(camera_path, camera_flag)
    header = video_header(video, TARGET)
    _check_header(video, header, camera_path, camera_flag, keys, count, chunks)
    shape = (count, header.height, header.width)
    truth_source = None if reference is None else check_reference(Path(reference), shape)
    depth_maps, depth_source = None, None
    if depth is not None:
        depth_maps, share = read_depth(Path(depth), shape)
        depth_source = f"the depth file {depth} (usable at {100 * share:.0f}% of its values)"
    frames = _read_frames(video, header, camera_path, camera_flag, count)
    world_from_cam, K = _camera(camera_path, camera_flag, count, header.fps, shape[1:])
    if depth_model is not None:
        depth_maps, depth_source = _model_depth(depth_model, frames), f"the metric depth model {depth_model}"
    elif depth is None and run is not None:
        depth_maps, depth_source = _memory_depth(run, world_from_cam, K, shape[1:])
    truth = None if reference is None else read_reference(Path(reference), truth_source, shape)
    boundaries = [] if chunks is None else chunks.boundaries
    return EvalInputs(frames, header.fps, world_from_cam, K, video, camera_path, boundaries, depth_maps, truth, depth_source)


def _memory_depth(run: Path, world_from_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """The depth of every frame from the run's memory points, or (None, None) without a memory."""
    points = memory_points(run)
    if points is None:
        return None, None
    xyz, radius, checkpoint = points
    return depth_from_points(xyz, radius, world_from_cam, K, size), f"the run's memory ({len(xyz)} points, {checkpoint})"
