"""The ``mirage eval`` document (schema ``mirage-eval/1``): every metric with its value, unit,
direction ("higher" or "lower" is better) and the frame pairs it used; notes on what was skipped."""

from __future__ import annotations

import numpy as np

from mirage_cli.evaluation.camera_following import camera_following
from mirage_cli.evaluation.frames import psnr, seams, ssim, temporal_stability
from mirage_cli.evaluation.inputs import EvalInputs
from mirage_cli.evaluation.reprojection import reprojection
from mirage_cli.evaluation.revisit import finite_median, revisits

SCHEMA = "mirage-eval/1"


def _metric(value, unit: str, direction: str, pairs: list, what: str) -> dict:
    return {"value": None if value is None else float(value), "unit": unit, "direction": direction, "pairs": pairs, "what": what}


def _percentile(values, q):
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


def evaluate(inputs: EvalInputs) -> dict:
    """Every metric of ``inputs`` (see the package docstring)."""
    notes = []
    follow = camera_following(inputs.frames, inputs.world_from_cam, inputs.K)
    rot = [p["rotation_error_deg"] for p in follow["pairs"]]
    trans = [p["translation_error_deg"] for p in follow["pairs"] if p["translation_error_deg"] is not None]
    pairs = [[p["i"], p["j"]] for p in follow["pairs"]]
    if follow["failed"]:
        notes.append(f"camera following: no pose could be estimated for {len(follow['failed'])} pair(s) (too few consistent matches)")
    reproj = reprojection(inputs.frames, inputs.world_from_cam, inputs.K, inputs.depth)
    if inputs.depth is None:
        notes.append("3D consistency: no depth given (--depth): only the rotation's flow is implied, so camera translation "
                     "counts as error")
    visits = revisits(inputs.frames, inputs.world_from_cam)
    if not visits:
        notes.append("revisits: the camera never comes back to an earlier pose; revisit metrics are empty")
    stability = temporal_stability(inputs.frames)
    seam = seams(inputs.frames, inputs.boundaries)
    if not inputs.boundaries:
        notes.append("seams: no chunk boundaries known (a run directory gives them)")
    ratios = [b["ratio"] for b in seam["boundaries"] if b["ratio"] is not None]
    visit_pairs = [[v["i"], v["j"]] for v in visits]
    metrics = {
        "rotation_error_median": _metric(_percentile(rot, 50), "deg", "lower", pairs, "median rotation error of frame-pair motion"),
        "rotation_error_p90": _metric(_percentile(rot, 90), "deg", "lower", pairs, "90th percentile rotation error"),
        "translation_error_median": _metric(_percentile(trans, 50), "deg", "lower", pairs, "median error of the direction of travel"),
        "translation_error_p90": _metric(_percentile(trans, 90), "deg", "lower", pairs, "90th percentile direction error"),
        "reprojection_error": _metric(finite_median([r["epe_median_px"] for r in reproj]), "px", "lower",
                                      [[r["i"], r["j"]] for r in reproj],
                                      "median end-point error between the optical flow and the flow the cameras and depth imply"
                                      + ("" if inputs.depth is not None else " (rotation only: no depth)")),
        "revisit_psnr": _metric(finite_median([v["psnr_db"] for v in visits]), "dB", "higher", visit_pairs,
                                "median PSNR between a frame and the earlier frame at the same pose"),
        "revisit_ssim": _metric(finite_median([v["ssim"] for v in visits]), "1", "higher", visit_pairs,
                                "median SSIM of the same pairs"),
        "temporal_consistency": _metric(finite_median([s["consistent_share"] for s in stability]), "share", "higher",
                                        [[s["i"], s["j"]] for s in stability], "share of pixels with forward-backward consistent flow"),
        "seam_ratio_max": _metric(max(ratios) if ratios else None, "ratio", "lower", [[b["i"], b["j"]] for b in seam["boundaries"]],
                                  "largest change at a chunk boundary over the typical change"),
    }
    if inputs.reference is not None:
        metrics.update(_against_reference(inputs))
        notes.append("reference: LPIPS skipped (it needs learned weights; none are loaded by mirage eval)")
    return {
        "schema": SCHEMA,
        "video": str(inputs.video), "camera": str(inputs.camera), "frames": int(len(inputs.frames)), "fps": inputs.fps,
        "metrics": metrics,
        "details": {"camera_following": follow, "reprojection": reproj, "revisits": visits, "temporal_stability": stability, "seams": seam},
        "notes": notes,
    }


def _against_reference(inputs: EvalInputs) -> dict:
    """Mean PSNR and SSIM of every frame against its ground-truth frame."""
    every = [[i, i] for i in range(len(inputs.frames))]
    values = [(psnr(f, r), ssim(f, r)) for f, r in zip(inputs.frames, inputs.reference, strict=True)]
    return {
        "reference_psnr": _metric(float(np.mean([v[0] for v in values])), "dB", "higher", every, "mean PSNR against the reference frames"),
        "reference_ssim": _metric(float(np.mean([v[1] for v in values])), "1", "higher", every, "mean SSIM against the reference frames"),
    }


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
