"""``mirage render``: a plan -> a run directory (``mirage_cli.run_dir``) with segments, checkpoints,
video and report, as a ``RenderSession`` that runs numbered stages.

0. Check options: the video settings and output directories of the command line, before anything
   is written.
1. Resume point: prepare the run directory (``--restart``, the configuration check, ``run.json``)
   and find the newest good checkpoint; a finished run returns at once.
2. Check inputs: the start image, depth and mask, before any weights load.
3. Load components: the backbone, the depth provider, the rollout (``mirage_cli.rollout``).
4. Restore the checkpoint, or start from the start image.
5. Chunk loop: render a chunk -> write its files (``mirage_cli.outputs``) -> checkpoint. A stop signal ends the loop with a
   checkpoint (mid-chunk when it arrives during denoising) and ``Interrupted`` (exit 75).
6. Assemble the video (segments joined by packet copy), write the report and the final checkpoint.

Re-running the same command on the same directory resumes from the last complete checkpoint; a
configuration that would change the output is refused (exit 2) naming the keys that differ, unless
``restart``. One writer per directory (``mirage_cli.runlock``). The session never prints: it reports
progress through ``RenderEvents``.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mirage_cli import crash, test_hooks
from mirage_cli.checkpoint import Checkpoint
from mirage_cli.conditioning import CONDITIONERS
from mirage_cli.denoise import DenoiseState
from mirage_cli.errors import InputError, Interrupted, Problem
from mirage_cli.inputs import StartInputs
from mirage_cli.options import BackboneOptions, RenderOptions
from mirage_cli.outputs import RenderOutputs
from mirage_cli.run_dir import RunDir, fingerprint
from mirage_cli.spec import Chunk, Plan


@dataclass
class RenderResult:
    """What ``render`` returns: where the video is and what the render did."""

    run_dir: Path
    video: Path
    frames: int
    chunks: int
    resumed_from_chunk: int | None
    wall_seconds: float
    report: dict = field(repr=False, default_factory=dict)
    already_complete: bool = False

    def summary(self) -> dict:
        """What ``mirage render --json`` prints."""
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

    def run_started(self, summary: dict) -> None:
        """The render begins (``summary``: run directory, frames, chunks, steps, size, memory, resume point)."""

    def checkpoint_saved(self, info: dict) -> None:
        """A checkpoint was written (``info``: name, next chunk, mid-chunk step, seconds)."""


def render(plan: Plan, options: RenderOptions | None = None, events: RenderEvents | None = None, *, backbone=None) -> RenderResult:
    """Render ``plan`` into its run directory, resuming when a checkpoint exists.

    ``backbone``: already loaded components to reuse (``mirage bench`` renders several times in one
    process); by default they are loaded from ``plan.model`` / ``options.backbone``.

    Raises:
        InputError: bad input or a changed configuration (exit 2).
        Interrupted: a stop signal arrived; a checkpoint was saved (exit 75).
        RenderError: runtime failure (exit 1).
    """
    return RenderSession(plan, options or RenderOptions(), events or RenderEvents(), backbone=backbone).run()


def load_backbone_for(plan: Plan, options: BackboneOptions):
    """Load the components a plan renders with (``plan.model`` unless a preset is chosen)."""
    from mirage_cli.backbone import load_backbone

    return load_backbone(plan.model, options)


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
    backbone = options.backbone
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
        "model": plan.model if backbone.preset is None else f"preset:{backbone.preset}",
        "random_weights": backbone.random_weights,
        "dtype": backbone.dtype,
        "fp8": backbone.fp8,
        "memory": plan.summary()["memory"],
        "depth_model": plan.depth_model,
        "video": options.video.config(),
    }


class RenderSession:
    """One render of ``plan`` into its run directory; ``run()`` runs the stages of the module docstring.

    Args:
        plan: the validated scene.
        options: ``RenderOptions`` (its ``backbone.dtype`` ``auto`` is resolved here).
        events: progress callbacks.
        backbone: already loaded components to reuse, or None to load them in stage 3.
    """

    def __init__(self, plan: Plan, options: RenderOptions, events: RenderEvents, *, backbone=None):
        self.plan = plan
        self.options = replace(options, backbone=options.backbone.resolved())
        self.events = events
        self.run_dir = RunDir(self.options.out or plan.output)
        self.config = render_config(plan, self.options)
        self.fingerprint = fingerprint(self.config)
        self.store = self.run_dir.checkpoints()
        self.outputs = None
        self.backbone = backbone
        self.rollout = None
        self.prof = None
        self.resumed_from: int | None = None
        self.traced = False
        self.t0 = time.perf_counter()

    def run(self) -> RenderResult:
        """Render (or resume) the plan; see the module docstring for the stages."""
        self.check_options()  # 0
        self.run_dir.create()
        with crash.reports_into(self.run_dir.path), self.run_dir.lock():
            ckpt = self.resume_point()  # 1
            self.events.run_started(self._start_summary(ckpt))
            if ckpt is not None and ckpt.meta.get("done") and self._videos_exist():
                return self._result(self.plan.frames, self.run_dir.read_report(), already_complete=True)
            start = self.check_inputs(ckpt)  # 2
            self.load_components()  # 3
            resume_state = self.restore_or_start(ckpt, start)  # 4
            self.render_chunks(resume_state)  # 5
            return self.finish()  # 6

    # --- 0. check options --------------------------------------------------------------------------

    def check_options(self) -> None:
        """The command-line options (video settings, output directories), before anything is written."""
        problems = self.options.problems()
        if problems:
            raise InputError([Problem(file=None, field=flag, message=message) for flag, message in problems])

    # --- 1. resume point ---------------------------------------------------------------------------

    def resume_point(self) -> Checkpoint | None:
        """Prepare the run directory and return its newest good checkpoint (None: start afresh).

        Raises:
            InputError: the directory holds another configuration (without ``restart``), or the
                checkpoint's fingerprint does not match ``run.json``.
        """
        if self.options.restart:
            self.run_dir.clear()
        self.run_dir.check_config(self.config)
        self.run_dir.write_config(self.config)
        self.run_dir.write_resolved_spec(self.plan.summary())
        ckpt = self.store.load_latest()
        for warning in self.store.warnings:
            self.events.warning(warning)
        if ckpt is not None and ckpt.meta.get("spec_fingerprint") != self.fingerprint:
            raise InputError(
                f"the checkpoint belongs to a different configuration than {self.run_dir.run_json.name}; use --restart",
                file=str(ckpt.path),
            )
        return ckpt

    def _start_summary(self, ckpt: Checkpoint | None) -> dict:
        plan = self.plan
        return {
            "run_dir": str(self.run_dir.path),
            "spec": str(plan.spec_path),
            "frames": plan.frames,
            "chunks": len(plan.chunks),
            "steps": plan.steps,
            "width": plan.width,
            "height": plan.height,
            "fps": plan.fps,
            "memory": str(plan.memory.mode),
            "resume_chunk": None if ckpt is None else ckpt.meta.get("chunk"),
            "resume_step": None if ckpt is None else ckpt.meta.get("mid_chunk_step"),
        }

    def _videos_exist(self) -> bool:
        run = self.run_dir
        return run.video.exists() and (run.video_lossless.exists() or not self.options.video.lossless)

    # --- 2. check inputs ---------------------------------------------------------------------------

    def check_inputs(self, ckpt: Checkpoint | None) -> StartInputs:
        """The pre-flight ``mirage validate`` runs too (``inputs.preflight``): a bad file fails
        here, before any weights load."""
        from mirage_cli.inputs import preflight

        return preflight(self.plan)

    # --- 3. load components ------------------------------------------------------------------------

    def load_components(self) -> None:
        """The backbone (unless given), the profiler, the depth provider and the rollout."""
        from mirage_cli.depth import MemoryPropagatedDepth, make_depth_provider
        from mirage_cli.profiling import Profiler
        from mirage_cli.rollout import Rollout

        load_seconds = 0.0
        if self.backbone is None:
            preset = self.options.backbone.preset
            self.events.setup("loading model" + (f" (preset {preset})" if preset else f" {self.plan.model}"))
            t_load = time.perf_counter()
            self.backbone = load_backbone_for(self.plan, self.options.backbone)
            load_seconds = time.perf_counter() - t_load
        self.prof = Profiler(self.backbone.device)
        self.prof.add_setup_seconds("model_load", load_seconds)
        self.outputs = RenderOutputs(self.run_dir, self.plan, self.options.video, self.prof)
        if CONDITIONERS[self.plan.memory.mode].stores_frames:
            depth_provider = make_depth_provider(self.plan.depth_model, self.backbone.device)
        else:
            depth_provider = MemoryPropagatedDepth()  # never asked: nothing is remembered
        self.rollout = Rollout.for_plan(self.plan, self.backbone, depth_provider=depth_provider, profiler=self.prof)
        self.rollout.encode_prompt()

    # --- 4. restore or start -----------------------------------------------------------------------

    def restore_or_start(self, ckpt: Checkpoint | None, start: StartInputs) -> DenoiseState | None:
        """Load the checkpoint into the rollout (returns its mid-chunk state, if any), or start afresh."""
        if ckpt is None:
            self.rollout.start(start.image, start.depth, start.keep_out)
            return None
        meta = ckpt.meta
        self.rollout.load_state_tensors(ckpt.tensors)
        if meta.get("profiler"):
            self.prof.load_state_dict(meta["profiler"])
        self.resumed_from = int(meta["chunk"])
        step = meta.get("mid_chunk_step")
        where = f"resuming at chunk {self.resumed_from + 1}/{len(self.plan.chunks)}"
        self.events.setup(where + (f", step {step}/{self.plan.steps}" if step else ""))
        return DenoiseState.from_tensors(ckpt.tensors["denoise"]) if "denoise" in ckpt.tensors else None

    # --- 5. the chunk loop -------------------------------------------------------------------------

    def render_chunks(self, resume_state: DenoiseState | None) -> None:
        """Render every chunk not done yet: chunk -> segment -> checkpoint; stop cleanly on a signal."""
        from mirage_cli.signals import GracefulStop

        first = 0 if self.resumed_from is None else self.resumed_from
        total = len(self.plan.chunks)
        with GracefulStop() as stop:
            for chunk in self.plan.chunks[first:]:
                if stop.requested:
                    self.save_checkpoint(chunk.index)
                    raise Interrupted(f"stopped by {stop.signal_name}; checkpoint saved at chunk {chunk.index + 1}/{total}")
                self._render_chunk(chunk, resume_state, stop)
                resume_state = None

    def _render_chunk(self, chunk: Chunk, resume_state: DenoiseState | None, stop) -> None:
        """One chunk of the loop (raises ``Interrupted`` after a mid-chunk checkpoint)."""
        total, steps = len(self.plan.chunks), self.plan.steps
        self.events.chunk_started(chunk.index, total, steps, resume_state.step if resume_state is not None else 0)
        self.prof.begin_chunk(chunk.index)

        def on_step(i: int, _state: DenoiseState) -> bool:
            self.events.step_done(chunk.index, i + 1, steps)
            test_hooks.pause("denoise_step")  # tests stop the render here (mirage_cli.test_hooks)
            return stop.requested

        with self._maybe_trace(chunk):
            result = self.rollout.run_chunk(chunk, resume_state=resume_state, on_step=on_step)
        if not result.completed:
            state = result.denoise_state
            self.save_checkpoint(chunk.index, denoise_state=state)
            raise Interrupted(
                f"stopped by {stop.signal_name} during chunk {chunk.index + 1}/{total}; "
                "checkpoint saved, run the same command again to resume"
            )
        self.outputs.write_chunk(chunk, result.latents, result.pixels)
        new_frames = chunk.num_frames if chunk.index == 0 else chunk.num_frames - 1
        stats = {"start": chunk.start, "end": chunk.end, "frames": new_frames, **result.stats}
        self.prof.end_chunk(dict(stats))
        self.prof.add_chunk_seconds(chunk.index, "checkpoint_write", self.save_checkpoint(chunk.index + 1))
        self.events.chunk_done(chunk.index, total, stats)

    def _maybe_trace(self, chunk: Chunk):
        """A torch.profiler trace around the first chunk rendered, with ``--trace``."""
        if self.options.trace_dir is None or self.traced:
            return nullcontext()
        from mirage_cli.profiling import trace_chunk

        self.traced = True
        return trace_chunk(self.options.trace_dir, chunk_index=chunk.index, device=self.backbone.device)

    def save_checkpoint(self, next_chunk: int, *, denoise_state: DenoiseState | None = None, done: bool = False) -> float:
        """Write a checkpoint that resumes at chunk ``next_chunk`` (mid-chunk with ``denoise_state``);
        returns the seconds it took."""
        tensors = self.rollout.state_tensors()
        if denoise_state is not None:
            tensors["denoise"] = denoise_state.to_tensors()
        meta = {
            "spec_fingerprint": self.fingerprint,
            "chunk": next_chunk,
            "num_chunks": len(self.plan.chunks),
            "frames_written": self.plan.chunks[next_chunk - 1].end + 1 if next_chunk > 0 else 0,
            "frames_total": self.plan.frames,
            "mid_chunk_step": None if denoise_state is None else denoise_state.step,
            "done": done,
            "profiler": self.prof.state_dict(),
            **self.rollout.memory_stats(),
        }
        t = time.perf_counter()
        path = self.store.save(tensors, meta)
        seconds = time.perf_counter() - t
        self.events.checkpoint_saved(
            {"name": path.name, "next_chunk": next_chunk, "mid_chunk_step": meta["mid_chunk_step"], "done": done, "seconds": seconds}
        )
        return seconds

    # --- 6. assemble, report, final checkpoint -----------------------------------------------------

    def finish(self) -> RenderResult:
        """Join the segments into ``video.mp4`` (and ``video.mkv``), write the report and the final checkpoint."""
        from mirage_cli.report import build_report, describe_device

        frames = self.outputs.assemble()
        wall = time.perf_counter() - self.t0
        backbone = self.options.backbone
        report = build_report(
            config={**self.config, "device": str(self.backbone.device), "offload": backbone.offload, "preset": backbone.preset},
            device_info=describe_device(self.backbone.device),
            trajectory=self.plan.trajectory,
            frames=self.plan.frames,
            wall_seconds=wall,
            **self.prof.report_inputs(),
        )
        self.run_dir.write_report(report)
        self.save_checkpoint(len(self.plan.chunks), done=True)
        return self._result(frames, report)

    def _result(self, frames: int, report: dict, already_complete: bool = False) -> RenderResult:
        return RenderResult(
            self.run_dir.path,
            self.run_dir.video,
            frames,
            len(self.plan.chunks),
            self.resumed_from,
            time.perf_counter() - self.t0,
            report,
            already_complete=already_complete,
        )
