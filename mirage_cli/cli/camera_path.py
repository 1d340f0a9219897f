"""``mirage trajectory``: read, resample, summarize, convert and plot any camera path, or estimate one
from a video clip (registered on the application of ``mirage_cli.cli.main``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from mirage_cli.base.errors import InputError
from mirage_cli.base.files import check_output
from mirage_cli.base.options import DEFAULT_FPS, DEFAULT_RESOLUTION
from mirage_cli.cli.app import app, err, print_json, run_body

# --- mirage trajectory ---------------------------------------------------------------------------


@app.command()
def trajectory(
    source: Path | None = typer.Argument(None, help="Camera path: .json (canonical or nerfstudio), .txt (RealEstate10K), "
                                            ".yaml/.yml (trajectory or preset), a COLMAP model folder, a Spatia "
                                            "folder (w2c.txt + intrinsics.txt), or a scene spec (the path its render follows)."),
    frames: int | None = typer.Option(None, "--frames", help="Resample to N frames (default: the source's own)."),
    fps: float | None = typer.Option(None, "--fps", help=f"Frames per second (default: the source's, else {DEFAULT_FPS:g})."),
    width: int | None = typer.Option(
        None, "--width", help=f"Render width in pixels (with --height; default: the source's, else {DEFAULT_RESOLUTION[0]})."
    ),
    height: int | None = typer.Option(
        None, "--height", help=f"Render height in pixels (default: the source's, else {DEFAULT_RESOLUTION[1]})."
    ),
    order: str = typer.Option("name", "--order", help="COLMAP image order: name | id."),
    to: Path | None = typer.Option(None, "--to", help="Write the path: .json canonical, .txt RealEstate10K, .yaml trajectory, "
                                                         "*transforms.json / *camera_path.json nerfstudio, no suffix: COLMAP folder."),
    to_format: str | None = typer.Option(
        None,
        "--to-format",
        help="Force the --to format: json | realestate10k | yaml | nerfstudio-transforms | nerfstudio-camera-path | "
        "colmap-text | colmap-binary.",
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write a top-down + side view PNG of the path."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    from_video: Path | None = typer.Option(None, "--from-video", help="Estimate the path of this video clip with pycolmap "
                                           "(instead of SOURCE); the scale is COLMAP's arbitrary units unless --scale."),
    samples: int = typer.Option(48, "--samples", help="With --from-video: frames sampled evenly from the clip."),
    scale: float | None = typer.Option(None, "--scale", help="With --from-video: multiply the path and its points by S."),
    points: Path | None = typer.Option(None, "--points", help="With --from-video: write the sparse points to this PLY."),
    depth_model: str | None = typer.Option(None, "--depth-model", help="With --from-video: a metric depth model (id or "
                                           "folder) whose depth of the first frame at the points gives the path in metres."),
) -> None:
    """Read, resample, summarize, convert and plot a camera path, or estimate one from a video clip."""

    def body():
        from mirage_cli.camera.source import load_trajectory
        from mirage_cli.camera.summary import describe, summarize
        from mirage_cli.camera.writers import output_format, write_trajectory
        from mirage_cli.spec.kind import is_scene_spec

        fmt = output_format(to, to_format) if to is not None or to_format is not None else None
        if to is not None:
            check_output(to, "--to", directory=fmt.startswith("colmap"))
        if plot is not None:
            check_output(plot, "--plot")
        estimate = None
        if (source is None) == (from_video is None):
            raise InputError("give a camera path (SOURCE) or a clip (--from-video), one of them", field="SOURCE")
        if from_video is not None:
            traj, estimate = _video_trajectory(from_video, samples, scale, points, depth_model, frames=frames, fps=fps,
                                               width=width, height=height)
        elif is_scene_spec(source):  # the camera a render of the scene follows, the spec's own settings
            from mirage_cli.spec.plan import scene_trajectory

            size = None if width is None or height is None else f"{width}x{height}"
            traj = scene_trajectory(source, {"frames": frames, "fps": fps, "resolution": size})
        else:
            traj = load_trajectory(source, frames=frames, fps=fps, width=width, height=height, order=order)
        summary = summarize(traj)
        if estimate is not None:
            summary["estimate"] = estimate
        if to is not None:
            write_trajectory(to, traj, fmt)
            summary["written"] = {"path": str(to), "format": fmt}
        if plot is not None:
            from mirage_cli.camera.plot import plot_trajectory

            plot_trajectory(traj, plot, title=f"{(source or from_video).name}: {len(traj)} frames")
            summary["plot"] = str(plot)
        if json_out:
            print_json(summary)
        else:
            print(describe(summary))
            if estimate is not None:
                print(f"estimate:        {estimate['describe']}\nscale:           {estimate['scale']}")
            for key in ("written", "plot"):
                if key in summary:
                    value = summary[key]
                    print(f"{key}:{' ' * (16 - len(key))}" + (f"{value['path']} ({value['format']})" if key == "written" else value))

    run_body(body)


def _video_trajectory(clip: Path, samples: int, scale: float | None, points: Path | None, depth_model: str | None, **sampling):
    """``mirage trajectory --from-video``: the clip's estimated path sampled as asked, and what the
    estimate says of itself (``camera.from_video``); progress on stderr."""
    import numpy as np

    from mirage_cli.camera.from_video import estimate_video_cameras
    from mirage_cli.camera.source import check_sampling, sample_keyframes

    check_sampling(**sampling)
    if samples < 3:
        raise InputError(f"must be at least 3, got {samples}", field="--samples")
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        raise InputError(f"must be a positive number, got {scale:g}", field="--scale")
    if points is not None:
        check_output(points, "--points")
    if scale is not None and depth_model is not None:
        raise InputError("give the scale once: --scale or --depth-model", field="--depth-model")
    estimate = estimate_video_cameras(clip, samples, log=err)
    keys, xyz = estimate.keyframes, estimate.xyz
    units = f"COLMAP's units times {scale:g} (--scale)" if scale is not None else (
        "COLMAP's arbitrary units: give --scale S or a metric --depth-model to convert them to metres, or render it from "
        "a spec whose depth fixes the scale (camera.scale, a depth map, or a metric depth model)")
    if depth_model is not None:
        from mirage_cli.depth.scene_scale import video_metres_per_unit

        err(f"video: measuring the scale with {depth_model} on the first frame")
        scale, used = video_metres_per_unit(estimate, depth_model)
        units = f"metres: COLMAP's units times {scale:.4g}, from the metric depth model {depth_model} at {used} points"
    if scale is not None:
        moved = keys.world_from_cam.copy()
        moved[:, :3, 3] *= scale
        keys, xyz = replace(keys, world_from_cam=moved), xyz * scale
    if points is not None:
        import torch

        from mirage_cli.memory.ply import write_point_cloud

        write_point_cloud(points, torch.from_numpy(xyz).float(), torch.from_numpy(estimate.rgb))
    return sample_keyframes(keys, **sampling), {"describe": estimate.describe(), "registered": estimate.registered,
                                                "sampled": estimate.sampled, "reprojection_error": estimate.reprojection_error,
                                                "fov_deg": estimate.fov_deg, "points": len(xyz), "scale": units,
                                                "cached_model": str(estimate.model)}
