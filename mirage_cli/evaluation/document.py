"""The ``mirage eval`` document (schema ``mirage-eval/1``): every metric with its value, unit,
direction ("higher" or "lower" is better) and the frame pairs it used; notes on what was skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_cli.evaluation.camera_following import camera_following
from mirage_cli.evaluation.frames import psnr, seams, ssim, temporal_stability
from mirage_cli.evaluation.inputs import EvalInputs
from mirage_cli.evaluation.lpips import LPIPS, find_weights, load_lpips, lpips_distances
from mirage_cli.evaluation.reprojection import reprojection
from mirage_cli.evaluation.revisit import finite_median, revisits
from mirage_cli.evaluation.trajectory_error import absolute_trajectory_error

SCHEMA = "mirage-eval/1"


def _metric(value, unit: str, direction: str, pairs: list, what: str) -> dict:
    return {"value": None if value is None else float(value), "unit": unit, "direction": direction, "pairs": pairs, "what": what}


def _percentile(values, q):
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


def evaluate(inputs: EvalInputs, lpips_folder: Path | None = None, lpips_metric: LPIPS | None = None) -> dict:
    """Every metric of ``inputs`` (see the package docstring); ``lpips_metric``: LPIPS already loaded
    (``mirage eval`` loads and checks it before measuring), else its weights are looked for in
    ``lpips_folder`` or where ``evaluation.lpips`` says."""
    notes: list[str] = []
    metrics, details = {}, {}
    for part in (_camera_following, _consistency, _revisits, _stability):
        found, detail = part(inputs, notes)
        metrics.update(found)
        details.update(detail)
    if inputs.reference is not None:
        metrics.update(_against_reference(inputs, lpips_folder, notes, lpips_metric))
    return {
        "schema": SCHEMA,
        "video": str(inputs.video), "camera": str(inputs.camera), "frames": int(len(inputs.frames)), "fps": inputs.fps,
        "depth": inputs.depth_source,
        "metrics": metrics,
        "details": details,
        "notes": notes,
    }


def _camera_following(inputs: EvalInputs, notes: list[str]) -> tuple[dict, dict]:
    follow = camera_following(inputs.frames, inputs.world_from_cam, inputs.K)
    rot = [p["rotation_error_deg"] for p in follow["pairs"]]
    trans = [p["translation_error_deg"] for p in follow["pairs"] if p["translation_error_deg"] is not None]
    pairs = [[p["i"], p["j"]] for p in follow["pairs"]]
    if follow["failed"]:
        notes.append(f"camera following: no pose could be estimated for {len(follow['failed'])} pair(s) (too few consistent matches)")
    ate = absolute_trajectory_error(inputs.frames, inputs.world_from_cam, inputs.K)
    if ate["failed"]:
        notes.append(f"trajectory error: {len(ate['failed'])} keyframe step(s) had no pose estimate and count as no motion")
    if ate["relative"] is None:
        notes.append("trajectory error: the path does not travel (it only turns); the relative trajectory error is empty")
    steps = [[a, b] for a, b in zip(ate["keyframes"][:-1], ate["keyframes"][1:], strict=True)]
    metrics = {
        "rotation_error_median": _metric(_percentile(rot, 50), "deg", "lower", pairs, "median rotation error of frame-pair motion"),
        "rotation_error_p90": _metric(_percentile(rot, 90), "deg", "lower", pairs, "90th percentile rotation error"),
        "translation_error_median": _metric(_percentile(trans, 50), "deg", "lower", pairs, "median error of the direction of travel"),
        "translation_error_p90": _metric(_percentile(trans, 90), "deg", "lower", pairs, "90th percentile direction error"),
        "trajectory_error": _metric(ate["rmse"], "path units", "lower", steps,
                                    "RMSE of the camera centres chained from the frames' estimates after a similarity fit (ATE)"),
        "trajectory_error_relative": _metric(ate["relative"], "share of path length", "lower", steps,
                                             "the trajectory error over the length the path travels"),
    }
    return metrics, {"camera_following": follow, "trajectory_error": ate}


def _consistency(inputs: EvalInputs, notes: list[str]) -> tuple[dict, dict]:
    reproj = reprojection(inputs.frames, inputs.world_from_cam, inputs.K, inputs.depth)
    if inputs.depth is None:
        notes.append("3D consistency: no depth (--depth, or a run directory's memory): only the rotation's flow is implied, "
                     "so camera translation counts as error")
    else:
        notes.append(f"3D consistency: depth from {inputs.depth_source}")
    what = "median end-point error between the optical flow and the flow the cameras and depth imply"
    metric = _metric(finite_median([r["epe_median_px"] for r in reproj]), "px", "lower", [[r["i"], r["j"]] for r in reproj],
                     what + ("" if inputs.depth is not None else " (rotation only: no depth)"))
    return {"reprojection_error": metric}, {"reprojection": reproj}


def _revisits(inputs: EvalInputs, notes: list[str]) -> tuple[dict, dict]:
    visits = revisits(inputs.frames, inputs.world_from_cam)
    if not visits:
        notes.append("revisits: the camera never comes back to an earlier pose; revisit metrics are empty")
    pairs = [[v["i"], v["j"]] for v in visits]
    metrics = {
        "revisit_psnr": _metric(finite_median([v["psnr_db"] for v in visits]), "dB", "higher", pairs,
                                "median PSNR between a frame and the earlier frame at the same pose"),
        "revisit_ssim": _metric(finite_median([v["ssim"] for v in visits]), "1", "higher", pairs, "median SSIM of the same pairs"),
    }
    return metrics, {"revisits": visits}


def _stability(inputs: EvalInputs, notes: list[str]) -> tuple[dict, dict]:
    stability = temporal_stability(inputs.frames)
    seam = seams(inputs.frames, inputs.boundaries)
    if not inputs.boundaries:
        notes.append("seams: no chunk boundaries known (a run directory gives them)")
    ratios = [b["ratio"] for b in seam["boundaries"] if b["ratio"] is not None]
    metrics = {
        "temporal_consistency": _metric(finite_median([s["consistent_share"] for s in stability]), "share", "higher",
                                        [[s["i"], s["j"]] for s in stability], "share of pixels with forward-backward consistent flow"),
        "seam_ratio_max": _metric(max(ratios) if ratios else None, "ratio", "lower", [[b["i"], b["j"]] for b in seam["boundaries"]],
                                  "largest change at a chunk boundary over the typical change"),
    }
    return metrics, {"temporal_stability": stability, "seams": seam}


def _against_reference(inputs: EvalInputs, lpips_folder: Path | None, notes: list[str], lpips_metric: LPIPS | None = None) -> dict:
    """Mean PSNR and SSIM (and LPIPS where its weights are here) of every frame against its ground-truth frame."""
    every = [[i, i] for i in range(len(inputs.frames))]
    values = [(psnr(f, r), ssim(f, r)) for f, r in zip(inputs.frames, inputs.reference, strict=True)]
    metrics = {
        "reference_psnr": _metric(float(np.mean([v[0] for v in values])), "dB", "higher", every, "mean PSNR against the reference frames"),
        "reference_ssim": _metric(float(np.mean([v[1] for v in values])), "1", "higher", every, "mean SSIM against the reference frames"),
    }
    files = find_weights(lpips_folder) if lpips_metric is None else lpips_metric.files
    if files is None:
        where = f"in {lpips_folder}" if lpips_folder is not None else "in torch's hub cache and the lpips/torchmetrics packages"
        notes.append(f"reference: LPIPS skipped: its weights (alexnet-owt-7be5be79.pth and alex.pth) are not {where}; "
                     "mirage eval never downloads them")
        return metrics
    distances = lpips_distances(lpips_metric or load_lpips(files), inputs.frames, inputs.reference)
    metrics["reference_lpips"] = _metric(float(distances.mean()), "1", "lower", every,
                                         f"mean LPIPS (AlexNet, v0.1) against the reference frames ({files[0]}, {files[1]})")
    return metrics


def table(document: dict):
    """A Rich table of the metrics."""
    from rich.table import Table

    t = Table(title=f"mirage eval: {document['video']} ({document['frames']} frames)")
    for column in ("metric", "value", "unit", "better", "pairs"):
        t.add_column(column)
    for name, m in document["metrics"].items():
        value = "-" if m["value"] is None else f"{m['value']:.3f}"
        t.add_row(name, value, m["unit"], m["direction"], str(len(m["pairs"])))
    return t
