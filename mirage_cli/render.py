"""``mirage render``: a plan -> a run directory (``mirage_cli.run_dir``) with segments, checkpoints,
video and report.

Re-running the same command on the same directory resumes from the last complete checkpoint; a
configuration that would change the output is refused (exit 2) naming the keys that differ,
unless ``restart=True``. One writer per directory (``mirage_cli.runlock``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mirage_cli.errors import InputError, Interrupted, RenderError
from mirage_cli.options import BackboneOptions, RenderOptions
from mirage_cli.run_dir import RunDir, fingerprint
from mirage_cli.spec import Plan

log = logging.getLogger(__name__)


@dataclass
class RenderResult:
    run_dir: Path
    video: Path
    frames: int
    chunks: int
    resumed_from_chunk: int | None
    wall_seconds: float
    report: dict = field(repr=False, default_factory=dict)
    already_complete: bool = False

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "video": str(self.video),
            "report": str(RunDir(self.run_dir).report_json),
            "frames": self.frames,
            "chunks": self.chunks,
            "resumed_from_chunk": self.resumed_from_chunk,
            "already_complete": self.already_complete,
            "wall_seconds": round(self.wall_seconds, 3),
            "fps_rendered": self.report.get("frames_per_second") if self.report else None,
        }


class RenderEvents:
    """Progress callbacks; the CLI draws Rich bars from these. The library never prints."""

    def setup(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def chunk_started(self, index: int, total: int, steps: int, start_step: int) -> None: ...

    def step_done(self, index: int, step: int, steps: int) -> None: ...

    def chunk_done(self, index: int, total: int, stats: dict) -> None: ...


def _sha256_file(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render_config(plan: Plan, options: RenderOptions) -> dict:
    """Everything that changes the rendered output, as a JSON-able dict (fingerprinted).

    Not included: where it runs and how fast (device, offload, tiling, compile, attention
    backend, output directory): resuming on another machine is allowed.
    """
    traj = plan.trajectory
    cams = np.concatenate([traj.world_from_cam.reshape(-1), traj.K.reshape(-1)]).astype(np.float64)
    s = plan.summary()
    return {
        "prompt": plan.prompt,
        "negative_prompt": plan.negative_prompt,
        "image_sha256": _sha256_file(plan.image_path),
        "depth_sha256": _sha256_file(plan.depth_path),
        "depth_scale": plan.depth_scale,
        "mask_sha256": _sha256_file(plan.mask_path),
        "camera_sha256": hashlib.sha256(cams.tobytes()).hexdigest(),
        "frames": plan.frames,
        "fps": plan.fps,
        "width": plan.width,
        "height": plan.height,
        "chunk_frames": plan.chunk_frames,
        "steps": plan.steps,
        "guidance": plan.guidance,
        "shift": plan.shift,
        "seed": plan.seed,
        "model": plan.model if options.backbone.preset is None else f"preset:{options.backbone.preset}",
        "random_weights": options.backbone.random_weights,
        "dtype": options.backbone.dtype,
        "fp8": options.backbone.fp8,
        "memory": s["memory"],
        "depth_model": plan.depth_model,
    }


def render(
    plan: Plan, options: RenderOptions | None = None, events: RenderEvents | None = None, *, backbone=None
) -> RenderResult:
    """Render ``plan`` into its run directory, resuming when a checkpoint exists.

    ``backbone``: already loaded components to reuse (``mirage bench`` renders several times in one
    process); by default they are loaded from ``plan.model`` / ``options``.

    Raises:
        InputError: bad input or a changed configuration (exit 2).
        Interrupted: a stop signal arrived; a checkpoint was saved (exit 75).
        RenderError: runtime failure (exit 1).
    """
    options = options or RenderOptions()
    options = replace(options, backbone=options.backbone.resolved())
    events = events or RenderEvents()
    run = RunDir(options.out or plan.output)
    config = render_config(plan, options)
    fp = fingerprint(config)
    run.create()
    with run.lock():
        if options.restart:
            run.clear()
        run.check_config(config)
        run.write_config(config)
        run.write_resolved_spec(plan.summary())
        return _render_locked(plan, options, events, run, config, fp, backbone)


def _render_locked(plan, options, events, run, config: dict, fp: str, backbone=None) -> RenderResult:
    from mirage_cli.depth import make_depth_provider
    from mirage_cli.denoise import DenoiseState
    from mirage_cli.inputs import load_start_depth, load_start_image, load_start_mask
    from mirage_cli.profiling import Profiler
    from mirage_cli.rollout import Rollout
    from mirage_cli.signals import GracefulStop
    from mirage_cli.video import concat_segments, to_uint8_frames, write_mp4

    t0 = time.perf_counter()
    run_dir = run.path
    store = run.checkpoints()
    ckpt = store.load_latest()
    for w in store.warnings:
        events.warning(w)
    video = run.video
    num_chunks = len(plan.chunks)
    if ckpt is not None and ckpt.meta.get("spec_fingerprint") != fp:
        raise InputError(
            "the checkpoint belongs to a different configuration than run.json; use --restart",
            file=str(ckpt.path),
        )
    if ckpt is not None and ckpt.meta.get("done") and video.exists():
        report = run.read_report()
        return RenderResult(run_dir, video, plan.frames, num_chunks, None, time.perf_counter() - t0, report, already_complete=True)

    # Fail fast on input that needs no model.
    image = load_start_image(plan)
    depth = load_start_depth(plan)
    keep_out = load_start_mask(plan)
    if ckpt is None and plan.memory.mode != "none" and depth is None and plan.depth_model.lower() == "none":
        raise InputError(
            "no depth for the start image: give `depth:` in the spec or use a depth model (depth_model / --depth-model)",
            file=str(plan.spec_path),
            field="depth",
        )

    load_seconds = 0.0
    if backbone is None:
        preset = options.backbone.preset
        events.setup("loading model" + (f" (preset {preset})" if preset else f" {plan.model}"))
        t_load = time.perf_counter()
        backbone = load_backbone_for(plan, options.backbone)
        load_seconds = time.perf_counter() - t_load
    prof = Profiler(backbone.device)
    prof.add_setup_seconds("model_load", load_seconds)
    depth_provider = make_depth_provider(plan.depth_model, backbone.device) if plan.memory.mode != "none" else None
    if depth_provider is None:
        from mirage_cli.depth import MemoryPropagatedDepth

        depth_provider = MemoryPropagatedDepth()
    rollout = Rollout.for_plan(plan, backbone, depth_provider=depth_provider, profiler=prof)
    rollout.encode_prompt()

    resume_state = None
    next_chunk = 0
    resumed_from = None
    if ckpt is not None:
        meta = ckpt.meta
        rollout.load_state_tensors(ckpt.tensors)
        next_chunk = int(meta["chunk"])
        if meta.get("profiler"):
            prof.load_state_dict(meta["profiler"])
        if "denoise" in ckpt.tensors:
            resume_state = DenoiseState.from_tensors(ckpt.tensors["denoise"])
        resumed_from = next_chunk
        step = meta.get("mid_chunk_step")
        events.setup(f"resuming at chunk {next_chunk + 1}/{num_chunks}" + (f", step {step}/{plan.steps}" if step else ""))
    else:
        rollout.start(image, depth, keep_out)

    def save(next_index: int, *, denoise_state=None, mid_step: int | None = None, done: bool = False) -> float:
        """Write a checkpoint; returns the seconds it took."""
        tensors = rollout.state_tensors()
        if denoise_state is not None:
            tensors["denoise"] = denoise_state.to_tensors()
        frames_written = 0
        if next_index > 0:
            frames_written = plan.chunks[next_index - 1].end + 1
        meta = {
            "spec_fingerprint": fp,
            "chunk": next_index,
            "num_chunks": num_chunks,
            "frames_written": frames_written,
            "frames_total": plan.frames,
            "mid_chunk_step": mid_step,
            "done": done,
            "profiler": prof.state_dict(),
            **rollout.memory_stats(),
        }
        t = time.perf_counter()
        store.save(tensors, meta)
        return time.perf_counter() - t

    traced = False
    with GracefulStop() as stop:
        for chunk in plan.chunks[next_chunk:]:
            if stop.requested:
                save(chunk.index)
                raise Interrupted(f"stopped by {stop.signal_name}; checkpoint saved at chunk {chunk.index + 1}/{num_chunks}")
            start_step = resume_state.step if resume_state is not None else 0
            events.chunk_started(chunk.index, num_chunks, plan.steps, start_step)
            prof.begin_chunk(chunk.index)

            def on_step(i: int, _state) -> bool:
                events.step_done(chunk.index, i + 1, plan.steps)
                return stop.requested

            if options.trace_dir is not None and not traced:
                from mirage_cli.profiling import trace_chunk

                with trace_chunk(options.trace_dir, chunk_index=chunk.index, device=backbone.device):
                    result = rollout.run_chunk(chunk, resume_state=resume_state, on_step=on_step)
                traced = True
            else:
                result = rollout.run_chunk(chunk, resume_state=resume_state, on_step=on_step)
            resume_state = None
            if not result.completed:
                st = result.denoise_state
                save(chunk.index, denoise_state=st, mid_step=st.step)
                raise Interrupted(
                    f"stopped by {stop.signal_name} during chunk {chunk.index + 1}/{num_chunks}; "
                    "checkpoint saved, run the same command again to resume"
                )
            seg = run.segment(chunk.index)
            with prof.stage("mp4_write"):
                try:
                    write_mp4(seg, to_uint8_frames(result.pixels), plan.fps)
                except OSError as e:
                    raise RenderError(f"cannot write {seg}: {e.strerror or e}; the last checkpoint is intact") from None
            new_frames = chunk.num_frames if chunk.index == 0 else chunk.num_frames - 1
            stats = {"start": chunk.start, "end": chunk.end, "frames": new_frames, **result.stats}
            prof.end_chunk(dict(stats))
            prof.add_chunk_seconds(chunk.index, "checkpoint_write", save(chunk.index + 1, done=False))
            events.chunk_done(chunk.index, num_chunks, stats)

    segments = [run.segment(c.index) for c in plan.chunks]
    missing = [str(s) for s in segments if not s.exists()]
    if missing:
        raise RenderError(f"segments missing from {run.segments_dir}: {', '.join(missing)}; rerun with --restart")
    with prof.stage("mp4_write"):
        try:
            n = concat_segments(segments, video, plan.fps)
        except OSError as e:
            raise RenderError(f"cannot write {video}: {e.strerror or e}") from None
    if n != plan.frames:
        raise RenderError(f"video.mp4 has {n} frames, expected {plan.frames}")
    wall = time.perf_counter() - t0
    report = _write_report(run, plan, options, config, backbone, prof, wall)
    save(num_chunks, done=True)
    return RenderResult(run_dir, video, n, num_chunks, resumed_from, wall, report)


def load_backbone_for(plan: Plan, options: BackboneOptions):
    """Load the components a plan renders with (``plan.model`` unless a preset is chosen)."""
    from mirage_cli.backbone import load_backbone

    return load_backbone(plan.model, options)


def _write_report(run, plan, options, config, backbone, prof, wall) -> dict:
    from mirage_cli.report import build_report, describe_device

    report = build_report(
        config={**config, "device": str(backbone.device), "offload": options.backbone.offload, "preset": options.backbone.preset},
        device_info=describe_device(backbone.device),
        trajectory=plan.trajectory,
        frames=plan.frames,
        wall_seconds=wall,
        **prof.report_inputs(),
    )
    run.write_report(report)
    return report
