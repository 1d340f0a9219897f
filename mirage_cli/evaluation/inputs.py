"""What ``mirage eval`` measures: the frames, the camera path of every frame and the chunk boundaries.

A run directory gives its ``video.mp4``, ``camera.json`` (written by every render) and its chunks
(``run.json``); any other video needs ``--camera`` (any format ``mirage trajectory`` reads) with one
camera per frame, the video's fps where the file states one, and intrinsics. Every problem is an
InputError naming the file (exit 2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.video import read_video
from mirage_cli.camera.readers import read_camera_file
from mirage_cli.camera.source import load_trajectory
from mirage_cli.depth.providers import DEPTH_KIND_METRIC, TransformersDepth
from mirage_cli.evaluation.memory_depth import depth_from_points, memory_points
from mirage_cli.spec.plan import plan_chunks


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
    depth: np.ndarray | None = None  # float [N, H, W] z-depth of every frame in the path's units, or None
    reference: np.ndarray | None = None  # uint8 [N, H, W, 3] ground-truth frames, or None
    depth_source: str | None = None  # where ``depth`` came from, in words


def _problem(path, message: str) -> InputError:
    return InputError(Problem(file=str(path), field=None, message=message))


def _read_frames(path: Path) -> tuple[np.ndarray, float]:
    if not path.is_file():
        raise _problem(path, "no such video file")
    try:
        frames, fps = read_video(path)
    except Exception as exc:  # PyAV raises its own errors for every kind of damage
        raise _problem(path, f"cannot be decoded as a video ({type(exc).__name__}: {str(exc)[:120]})") from None
    if len(frames) < 2:
        raise _problem(path, f"holds {len(frames)} frame(s); evaluation compares frames, it needs at least 2")
    return frames, fps


def _boundaries(run: Path) -> list[int]:
    try:
        config = json.loads((run / "run.json").read_text())["config"]
        first = config.get("first_chunk_frames")
        chunks = plan_chunks(int(config["frames"]), int(config["chunk_frames"]), None if first is None else int(first))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [chunk.start for chunk in chunks[1:]]


def _camera(camera: Path, frames: int, fps: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = read_camera_file(camera)
    if keys.K is None and keys.fov is None:
        raise _problem(camera, "has no intrinsics: evaluation needs the focal length the frames were rendered with "
                               "(give a camera file with intrinsics, e.g. the run's camera.json)")
    count = keys.frames if keys.frames is not None else len(keys.world_from_cam)
    if count != frames:
        raise _problem(camera, f"has {count} cameras for a video of {frames} frames: give one camera per frame")
    if keys.fps is not None and not math.isclose(keys.fps, fps, rel_tol=1e-3):
        raise _problem(camera, f"is at {keys.fps:g} fps, the video at {fps:g} fps")
    traj = load_trajectory(camera, frames=frames, fps=fps, width=size[1], height=size[0])
    return traj.world_from_cam, traj.K


def _depth(path: Path, frames: int, size: tuple[int, int]) -> np.ndarray:
    """A ``.npy`` float z-depth [N, H, W] of every frame (the path's units)."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _problem(path, f"is not a readable .npy array ({exc})") from None
    if depth.shape != (frames, *size) or not np.issubdtype(depth.dtype, np.floating):
        raise _problem(path, f"expected float z-depth of shape [{frames}, {size[0]}, {size[1]}] (one map per frame), "
                             f"got {depth.dtype} {list(depth.shape)}")
    return depth.astype(np.float64)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _reference(path: Path, frames: np.ndarray) -> np.ndarray:
    """Ground-truth frames: a video, or a folder of images in name order; as many and as large as ``frames``."""
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _problem(path, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
        try:
            ref = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        except (OSError, ValueError) as exc:
            raise _problem(path, f"has an image that cannot be read or differs in size ({exc})") from None
    else:
        ref, _ = _read_frames(path)
    if ref.shape != frames.shape:
        raise _problem(path, f"holds {len(ref)} frames of {ref.shape[2]}x{ref.shape[1]}; the video has {len(frames)} of "
                             f"{frames.shape[2]}x{frames.shape[1]}")
    return ref


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
    """The frames, cameras, chunk boundaries (and ``depth``) of a run directory or of a video with ``camera``."""
    target = Path(target)
    boundaries: list[int] = []
    if target.is_dir():
        video = target / "video.mp4"
        if not video.is_file():
            raise _problem(target, "holds no video.mp4 yet (the render has not finished: run `mirage render` again to resume it)")
        if camera is None:
            camera = target / "camera.json"
            if not camera.is_file():
                raise _problem(target, "holds no camera.json (rendered before it was written): pass --camera")
        boundaries = _boundaries(target)
    else:
        video = target
        if camera is None:
            raise _problem(target, "is a video: pass its camera path with --camera (any format `mirage trajectory` reads)")
    frames, fps = _read_frames(video)
    world_from_cam, K = _camera(Path(camera), len(frames), fps, frames.shape[1:3])
    depth_maps, depth_source = None, None
    if depth is not None:
        depth_maps, depth_source = _depth(Path(depth), len(frames), frames.shape[1:3]), f"the depth file {depth}"
    elif depth_model is not None:
        depth_maps, depth_source = _model_depth(depth_model, frames), f"the metric depth model {depth_model}"
    elif target.is_dir():
        depth_maps, depth_source = _memory_depth(target, world_from_cam, K, frames.shape[1:3])
    truth = None if reference is None else _reference(Path(reference), frames)
    return EvalInputs(frames, fps, world_from_cam, K, video, Path(camera), boundaries, depth_maps, truth, depth_source)


def _memory_depth(run: Path, world_from_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """The depth of every frame from the run's memory points, or (None, None) without a memory."""
    points = memory_points(run)
    if points is None:
        return None, None
    xyz, radius, checkpoint = points
    return depth_from_points(xyz, radius, world_from_cam, K, size), f"the run's memory ({len(xyz)} points, {checkpoint})"
