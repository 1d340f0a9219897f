"""Scene scale: the start image's depth and the camera path in the same units, decided before rendering.

Every warp of the memory multiplies depth by the camera's motion, so a depth off by 3x puts every
pinned token in the wrong place. Where the start depth's scale comes from (``SceneScale.source``),
in order:

1. ``depth file``: the spec's ``depth:`` map (times ``depth_scale``), already in path units.
2. ``COLMAP points``: a COLMAP model with 3D points gives the depths, in path units, of the points
   the first image observes; the depth model's output is fitted to them (robust least squares,
   ``memory.filters.align_depth``: scale for a metric model, scale and shift of inverse depth for a
   relative one) and the fitted map is used.
3. ``explicit scale``: ``camera.scale: S`` multiplies the camera path (positions) by S. A metric depth
   model's output is then used as is (S converts the path to metres); a relative model's is set to a
   median depth of 1 (scaled) path unit.
4. ``metric model``: ``camera.units: metres`` (the default of keyframes, presets and trajectory
   files) and a metric depth model: its output is used as is. A relative model with a metric path is
   refused unless a scale is stated.
5. ``assumed median depth``: only when asked for (``camera.scale: assume-median-depth``): the start
   depth is scaled to a median of 1.0 path unit.

Anything else is refused (exit 2) with the choices: a path of arbitrary scale (COLMAP without points,
RealEstate10K, nerfstudio, canonical JSON, Spatia) needs ``depth:``, a COLMAP model with points, or
``camera.scale``. With ``camera.units: metres`` and no ``depth_model`` given, the default depth model
is ``DEFAULT_METRIC_DEPTH_MODEL``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.hub import cached_file
from mirage_cli.base.video import read_frames_at
from mirage_cli.camera.colmap import check_model_files, find_colmap_model, import_pycolmap, natural_key
from mirage_cli.camera.from_video import SAMPLES, estimate_video_cameras
from mirage_cli.camera.scale import ASSUME, path_scale, path_units
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.depth.providers import (
    DEPTH_KIND_METRIC,
    DEPTH_KIND_RELATIVE_INVERSE,
    depth_model_problem,
    is_no_model,
    make_depth_provider,
)
from mirage_cli.depth.tiny import is_tiny_model

MIN_POINTS = 20
"""Fewest observed COLMAP points that fix the scale (fewer: the model counts as having none)."""
DEFAULT_METRIC_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
"""The depth model of a metric path when the spec names none. Depth Anything V2's metric models are
its relative model fine-tuned on metric depth (Indoor: Hypersim, up to 20 m; Outdoor: Virtual KITTI,
up to 80 m); the indoor one fits the walk-through scenes camera-controlled video is mostly made of,
runs through the same code as the relative default (25M parameters), and needs no field of view
(DepthPro's metric output does: its raw prediction is converted with the estimated focal length).
Outdoor scenes: ``depth_model: depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf``."""


@dataclass(frozen=True)
class SceneScale:
    """How the start depth gets the path's units (module docstring).

    ``source``: one of "depth file", "COLMAP points", "explicit scale", "metric model", "assumed median
    depth". ``path_scale``: S of ``camera.scale`` (1.0 without). ``points_uv`` float64 [P, 2] pixel
    coordinates at the render size and ``points_z`` float64 [P] z-depths (path units) of the first
    frame's COLMAP points, or None. ``median_depth``: the start frame's median depth in path units
    when known before rendering, else None. ``needs_metric``: the depth model must be metric."""

    source: str
    path_scale: float = 1.0
    points_uv: np.ndarray | None = None
    points_z: np.ndarray | None = None
    median_depth: float | None = None
    needs_metric: bool = False
    detail: str = ""

    def describe(self) -> str:
        return self.source + (f" ({self.detail})" if self.detail else "")

    def config(self) -> dict:
        """What changes the output, for the run fingerprint (the points by content)."""
        digest = None
        if self.points_z is not None:
            import hashlib

            digest = hashlib.sha256(np.concatenate([self.points_uv.ravel(), self.points_z]).tobytes()).hexdigest()
        return {"source": self.source, "path_scale": self.path_scale, "points_sha256": digest}


def depth_model_kind(name: str) -> str | None:
    """"metric" or "relative_inverse" from the model's config.json (a local folder or the Hugging Face
    cache), or None when the config is not here (not downloaded yet) or there is no model."""
    if is_no_model(name):
        return None
    if is_tiny_model(name):
        return DEPTH_KIND_METRIC
    local = Path(os.path.expanduser(name))
    config = local / "config.json" if local.is_dir() else None
    if config is None:
        config = cached_file(name, "config.json")
    if config is None or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return DEPTH_KIND_METRIC if data.get("depth_estimation_type") == "metric" else DEPTH_KIND_RELATIVE_INVERSE


def colmap_start_points(model_dir: Path, order: str, trajectory, scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(uv [P, 2], z [P]) of the 3D points the first image of the COLMAP model (in ``order``) observes,
    in the render's first camera (path units, times ``scale``); None without enough points."""
    model = find_colmap_model(model_dir)
    if model is None or not any((model / f"points3D{s}").is_file() for s in (".txt", ".bin")):
        return None
    check_model_files(model)
    try:
        rec = import_pycolmap().Reconstruction(str(model))
    except Exception:  # the points file does not load: the model counts as having none (the path already loaded)
        return None
    images = [im for im in rec.images.values() if im.has_pose]
    if not images:
        return None
    first = min(images, key=(lambda im: natural_key(im.name)) if order == "name" else (lambda im: im.image_id))
    observed = []
    for point in first.points2D:
        if point.has_point3D():
            try:
                observed.append(rec.points3D[point.point3D_id].xyz)
            except KeyError:  # an observation of a point the points file lacks (a damaged or pruned model)
                continue
    if len(observed) < MIN_POINTS:
        return None
    xyz = np.array(observed, dtype=np.float64) * scale  # [P, 3] world, path units
    cam = (np.concatenate([xyz, np.ones((len(xyz), 1))], 1) @ np.linalg.inv(trajectory.world_from_cam[0]).T)[:, :3]
    uvw = cam @ trajectory.K[0].T
    front = cam[:, 2] > 1e-9
    uv = uvw[front, :2] / uvw[front, 2:3]
    z = cam[front, 2]
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] < trajectory.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < trajectory.height - 0.5)
    if int(inside.sum()) < MIN_POINTS:
        return None
    return uv[inside], z[inside]


def _colmap_model_of(section: dict, base_dir: Path) -> Path | None:
    """The COLMAP model behind the camera path: the ``colmap`` source's folder, or the model estimated
    from the ``video`` source (``camera.from_video``, read from its cache); None for other sources."""
    key = "colmap" if "colmap" in section else "video" if "video" in section else None
    if key is None:
        return None
    path = Path(section[key])
    path = path if path.is_absolute() else base_dir / path
    if key == "colmap":
        return path
    return estimate_video_cameras(path, section.get("samples", SAMPLES), field="camera.video").model


def decide(section: dict, base_dir: Path, trajectory, depth_given: bool, depth_model: str, problems: ProblemList) -> SceneScale | None:
    """The scene's ``SceneScale`` (module docstring); a problem (and None) when nothing fixes it."""
    scale = path_scale(section)
    stated = section.get("scale")
    if depth_given:
        return SceneScale("depth file", path_scale=scale)
    model = _colmap_model_of(section, base_dir)
    if model is not None:
        points = colmap_start_points(model, section.get("order", "name") if "colmap" in section else "name", trajectory, scale)
        if points is not None:
            uv, z = points
            return SceneScale("COLMAP points", scale, uv, z, float(np.median(z)), detail=f"{len(z)} points observed by the first image")
    kind = depth_model_kind(depth_model)
    if is_no_model(depth_model):
        return SceneScale("no depth", path_scale=scale)  # the render refuses "no depth and no depth model" itself
    if stated == ASSUME:
        return SceneScale("assumed median depth", scale, median_depth=1.0, detail="camera.scale: assume-median-depth")
    if stated is not None:
        metric = kind == DEPTH_KIND_METRIC
        return SceneScale("explicit scale", scale, median_depth=None if metric or kind is None else 1.0,
                          detail=f"camera.scale {scale:g}" + (", metric model" if metric else ", relative model: median depth 1"))
    if path_units(section) == "metres":
        if kind is not None and kind != DEPTH_KIND_METRIC:
            problems.add("depth_model", f"{depth_model} is a relative depth model but the camera path is in metres "
                                        f"(camera.units): use a metric model (e.g. {DEFAULT_METRIC_DEPTH_MODEL}), give `depth:`, "
                                        f"or state the scale with camera.scale (a number, or {ASSUME})")
            return None
        return SceneScale("metric model", scale, needs_metric=True, detail=depth_model)
    source = next((k for k in section if k in ("colmap", "video", "realestate10k", "nerfstudio", "json", "spatia")), "the camera source")
    problems.add("camera.scale", f"the {source} path has an arbitrary scale and nothing fixes the depth's: give `depth:` (a map "
                                 "in the path's units), a COLMAP model with 3D points, camera.scale: S (multiplies the path; "
                                 f"with a metric depth model S converts it to metres), or camera.scale: {ASSUME} to assume the "
                                 "start image's median depth is 1 path unit")
    return None


MOVE_WARNING = 5.0
"""A chunk whose camera moves more than this many start-frame median depths is almost surely mis-scaled."""


def scale_report(scale: SceneScale, trajectory, chunks, start_depth=None) -> dict:
    """What ``mirage validate`` shows: the scale's source, the start frame's median depth in path
    units (from ``start_depth`` float [H, W] when the spec gives one, else as known before rendering),
    the path's total travel, its largest single-frame move and its largest move within one chunk,
    each also as a multiple of that depth, and a warning when a chunk moves more than
    ``MOVE_WARNING`` depths."""
    median = scale.median_depth
    if start_depth is not None:
        valid = start_depth[start_depth > 0]
        median = float(valid.median()) if valid.numel() else None
    positions = trajectory.world_from_cam[:, :3, 3]
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    chunk_moves = [float(steps[c.start : c.end].sum()) for c in chunks]
    out = {"source": scale.source, "detail": scale.detail, "path_scale": scale.path_scale, "median_depth": median,
           "travel": float(steps.sum()), "largest_frame_move": float(steps.max()) if len(steps) else 0.0,
           "largest_chunk_move": max(chunk_moves) if chunk_moves else 0.0, "warning": None}
    if median:
        for key in ("travel", "largest_frame_move", "largest_chunk_move"):
            out[f"{key}_in_depths"] = out[key] / median
        if out["largest_chunk_move_in_depths"] > MOVE_WARNING:
            out["warning"] = (f"one chunk moves the camera {out['largest_chunk_move_in_depths']:.1f}x the start frame's median "
                              "depth: the path and the depth are probably not in the same units (camera.scale, depth_scale)")
    return out


def describe_scale(report: dict) -> str:
    """``scale_report`` as ``mirage validate`` lines."""
    lines = [f"scale       {report['source']}" + (f" ({report['detail']})" if report["detail"] else "")
             + (f", path x{report['path_scale']:g}" if report["path_scale"] != 1.0 else "")]
    if report["median_depth"] is None:
        lines.append(f"  depth     median measured by the depth model at render time; path travel {report['travel']:.3g}, "
                     f"largest frame move {report['largest_frame_move']:.3g} path units")
    else:
        lines.append(f"  depth     median {report['median_depth']:.3g} path units; path travel {report['travel']:.3g} "
                     f"({report['travel_in_depths']:.2f}x), largest frame move {report['largest_frame_move']:.3g} "
                     f"({report['largest_frame_move_in_depths']:.2f}x), largest chunk move {report['largest_chunk_move_in_depths']:.2f}x")
    if report["warning"]:
        lines.append(f"  warning   {report['warning']}")
    return "\n".join(lines)


def video_metres_per_unit(estimate, depth_model: str) -> tuple[float, int]:
    """Metres per unit of a clip's camera estimate (``camera.from_video.VideoCameras``): the metric depth
    model's depth of the first registered frame at the points that frame observes, over their depth in
    the estimate (the median of the ratios), and how many points gave it. Refuses (InputError) a
    relative model, a model that cannot load, and a frame that observes too few points."""
    keys = estimate.keyframes
    why = depth_model_problem(depth_model)
    if why is not None:
        raise InputError(why, field="--depth-model")
    provider = make_depth_provider(depth_model, torch.device("cpu"))
    if provider.kind != DEPTH_KIND_METRIC:
        raise InputError(f"{depth_model} is a relative depth model: only a metric one gives the path in metres", field="--depth-model")
    width, height = keys.size
    first = Trajectory(keys.world_from_cam[:1], keys.K[:1], width, height, keys.fps or 24.0)
    points = colmap_start_points(estimate.model, "name", first, 1.0)
    if points is None:
        raise InputError(f"the clip's first registered frame observes fewer than {MIN_POINTS} points: the scale cannot be "
                         "measured; give --scale", field="--depth-model")
    uv, z = points
    frame = read_frames_at(keys.file, [int(keys.times[0])])[int(keys.times[0])]
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    metric = provider.estimate(image)[0].numpy()  # [H, W] metres
    cols = np.clip(np.round(uv[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(uv[:, 1]).astype(int), 0, height - 1)
    ratios = metric[rows, cols] / z
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(ratios) < MIN_POINTS:
        raise InputError("the metric depth model gives no usable depth at the clip's points; give --scale", field="--depth-model")
    return float(np.median(ratios)), len(ratios)
