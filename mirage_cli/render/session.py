"""``mirage render``: a plan -> a run directory (``mirage_cli.rundir.layout``) with segments, checkpoints,
video and report, as a ``RenderSession`` that runs numbered stages.

0. Check options: the video settings and output directories of the command line, before anything
   is written.
1. Resume point: prepare the run directory (``--restart``, leftovers of interrupted writes removed,
   the configuration check, ``run.json`` rebuilt when unreadable), find the newest usable checkpoint
   and verify the files of the chunks it says are done (``mirage_cli.render.outputs``); a finished run
   whose video verifies returns at once (a damaged video or report is rebuilt without the model).
2. Check inputs: the start image, depth and mask, before any weights load.
3. Load components: the backbone, the depth provider, the rollout (``mirage_cli.render.rollout``).
4. Restore the checkpoint (and rebuild damaged segments from their latents), or start from the
   start image.
5. Chunk loop: render a chunk -> write its files (``mirage_cli.render.outputs``) -> checkpoint. A stop signal ends the loop with a
   checkpoint (mid-chunk when it arrives during denoising) and ``Interrupted`` (exit 75).
6. Assemble the video (segments joined by packet copy) and verify it, write the report and the
   final checkpoint (``done``).

Stop signals (``mirage_cli.base.signals``): during stages 2 and 3 nothing is written, so a stop ends the
render at once (exit 75, nothing to save); elsewhere it is honoured at the next point where
everything written is consistent: after a denoising step (mid-chunk checkpoint), after a chunk,
before the final checkpoint.

Re-running the same command on the same directory resumes from the last complete checkpoint; a
configuration that would change the output is refused (exit 2) naming the keys that differ, unless
``restart``. One writer per directory (``mirage_cli.rundir.lock``). The session never prints: it reports
progress through ``RenderEvents``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from mirage_cli.backbone import check_attention_backend, load_backbone, resolve_device, resolve_dtype
from mirage_cli.backbone.loading import check_backbone_options
from mirage_cli.base import crash
from mirage_cli.base.errors import InputError, Interrupted, Problem
from mirage_cli.base.options import BackboneOptions, RenderOptions
from mirage_cli.base.signals import GracefulStop
from mirage_cli.conditioning.conditioners import CONDITIONERS
from mirage_cli.denoise.loop import DenoiseState, denoise_chunk
from mirage_cli.denoise.step_cache import diffusers_config, use_step_cache
from mirage_cli.depth.providers import MemoryPropagatedDepth, make_depth_provider
from mirage_cli.profiling.profiler import Profiler, trace_chunk
from mirage_cli.render.config import render_config
from mirage_cli.render.inputs import StartInputs, preflight
from mirage_cli.render.outputs import RenderOutputs
from mirage_cli.render.prepare import estimate_intrinsics
from mirage_cli.render.rollout import Rollout
from mirage_cli.report import build_report, describe_device
from mirage_cli.rundir.checkpoint import Checkpoint
from mirage_cli.rundir.layout import RunDir, fingerprint
from mirage_cli.rundir.meta import meta_problem
from mirage_cli.spec.plan import Chunk, Plan
from mirage_cli.spec.step_cache import check_calibration_fits
from mirage_cli.testing import pauses as test_hooks
from mirage_cli.vram.plan import flags, parse_budget, vram_plan_for_render


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


def render(plan: Plan, options: RenderOptions | None = None, events: RenderEvents | None = None, *, backbone=None,
           stop: GracefulStop | None = None, denoise=denoise_chunk) -> RenderResult:
    """Render ``plan`` into its run directory, resuming when a checkpoint exists.

    ``backbone``: already loaded components to reuse (``mirage bench`` renders several times in one
    process); by default they are loaded from ``plan.model`` / ``options.backbone``.
    ``stop``: the stop handlers to obey (installed by the caller); by default the render installs
    its own for its duration.
    ``denoise``: the denoising loop the chunks run (a parallel render's leader passes one that runs it
    on the whole team, ``mirage_cli.render.parallel.lead_denoise``).

    Raises:
        InputError: bad input or a changed configuration (exit 2).
        Interrupted: a stop signal arrived; a checkpoint was saved (exit 75).
        RenderError: runtime failure (exit 1).
    """
    plan = estimate_intrinsics(plan)  # a plan handed over with intrinsics: auto unresolved
    session = RenderSession(plan, options or RenderOptions(), events or RenderEvents(), backbone=backbone, stop=stop,
                            denoise=denoise)
    return session.run()


def load_backbone_for(plan: Plan, options: BackboneOptions):
    """Load the components a plan renders with (``plan.model`` unless a preset is chosen), with the
    trained conditioning weights of ``plan.conditioning``."""
    trained = plan.conditioning if (plan.conditioning.vace or plan.conditioning.lora) else None
    return load_backbone(plan.model, options, trained=trained)


class RenderSession:
    """One render of ``plan`` into its run directory; ``run()`` runs the stages of the module docstring.

    Args:
        plan: the validated scene.
        options: ``RenderOptions`` (its ``backbone.dtype`` ``auto`` is resolved here).
        events: progress callbacks.
        backbone: already loaded components to reuse, or None to load them in stage 3.
        stop: installed stop handlers to obey, or None to install a ``GracefulStop`` for ``run()``.
        denoise: the denoising loop the chunks run (``render``).
    """

    def __init__(self, plan: Plan, options: RenderOptions, events: RenderEvents, *, backbone=None,
                 stop: GracefulStop | None = None, denoise=denoise_chunk):
        self.plan = plan
        self.options = replace(options, backbone=options.backbone.resolved())
        self.events = events
        self.run_dir = RunDir(self.options.out or plan.output)
        self.config: dict = {}  # what changes the output, set in stage 0 once the memory plan is chosen
        self.fingerprint = ""
        self.vram_plan: dict | None = None  # the --vram-budget choice (mirage_cli.vram.plan), for the report
        self.store = self.run_dir.checkpoints()
        self.outputs = None
        self.backbone = backbone
        self.rollout = None
        self.prof = None
        self.resumed_from: int | None = None
        self.traced = False
        self.stop = stop
        self.denoise = denoise
        self.records: dict[str, dict] = {}  # outputs written, by relative path (mirage_cli.render.outputs)
        self.to_rebuild: list[int] = []  # chunks whose damaged segments stage 4 decodes again (stage 1 found them)
        self.t0 = time.perf_counter()

    def run(self) -> RenderResult:
        """Render (or resume) the plan; see the module docstring for the stages."""
        if self.stop is None:
            with GracefulStop() as self.stop:
                return self._run()
        return self._run()

    def _run(self) -> RenderResult:
        self.check_options()  # 0
        self.run_dir.create()
        with crash.reports_into(self.run_dir.path), self.run_dir.lock() as lock, self.stop.deferred():
            if lock.take_over_message:
                self.events.warning(lock.take_over_message)
            ckpt = self.resume_point()  # 1
            self.events.run_started(self._start_summary(ckpt))
            if ckpt is not None and ckpt.meta["done"]:
                finished = self.finished_result(ckpt)
                if finished is not None:
                    return finished
            self.stop.check("before rendering")
            with self.stop.at_once("while checking the inputs"):
                start = self.check_inputs(ckpt)  # 2
            with self.stop.at_once("while loading the model"):
                test_hooks.pause("model_load")  # tests stop the render here (mirage_cli.testing.pauses)
                self.load_components()  # 3
            resume_state = self.restore_or_start(ckpt, start)  # 4
            self.render_chunks(resume_state)  # 5
            return self.finish()  # 6

    # --- 0. check options --------------------------------------------------------------------------

    def check_options(self) -> None:
        """The command-line options (video settings, output directories), before anything is written;
        then the memory plan, and the configuration it decides (the VAE tiling is in the fingerprint)."""
        problems = self.options.problems()
        if problems:
            raise InputError([Problem(file=None, field=flag, message=message) for flag, message in problems])
        if self.backbone is None:
            check_backbone_options(self.options.backbone)  # a refused flag combination leaves no run directory behind
        self.choose_vram_plan()
        self.config = render_config(self.plan, self.options)
        self.fingerprint = fingerprint(self.config)

        check_calibration_fits(self.plan.step_cache, self.config["model"], f"{self.plan.width}x{self.plan.height}")

    def choose_vram_plan(self) -> None:
        """On a GPU, the offload mode and VAE tiling that fit ``--vram-budget`` (``mirage_cli.vram.plan``);
        a render that cannot fit is refused here, before anything loads (exit 2)."""
        options = self.options.backbone
        parse_budget(options.vram_budget)  # a bad value is refused on every device
        if self.backbone is not None:
            return  # components given by the caller (bench plans them itself)
        recorded = None
        if not self.options.restart:
            config, _ = self.run_dir.read_config()
            if isinstance(config, dict):
                recorded = bool(config.get("vae_tiling", False))
        plan = vram_plan_for_render(self.plan, options, recorded)
        if plan is None:
            return
        self.options = replace(self.options, backbone=plan.apply(options))
        self.vram_plan = plan.to_dict()
        if (plan.offload, plan.vae_tiling) != (options.offload, bool(options.vae_tiling)):
            self.events.warning(f"memory plan: {flags(plan.offload, plan.vae_tiling)} ({plan.reason}; {plan.budget_source})")

    # --- 1. resume point ---------------------------------------------------------------------------

    def resume_point(self) -> Checkpoint | None:
        """Prepare the run directory and return its newest usable checkpoint (None: start afresh).

        Raises:
            InputError: the directory holds another configuration (without ``restart``), or the
                files of finished chunks are damaged beyond rebuilding.
        """
        run = self.run_dir
        if self.options.restart:
            run.clear()
        for path in run.remove_leftovers():
            self.events.setup(f"removed {path.relative_to(run.path)}, left by an interrupted write")
        run_json_problem = run.check_config(self.config)
        ckpt = self.store.load_latest(accept=self._usable)
        for warning in self.store.warnings:
            self.events.warning(warning)
        if ckpt is not None and ckpt.meta["spec_fingerprint"] != self.fingerprint:
            raise run.different_settings(ckpt.meta.get("config"), self.config, str(ckpt.path / "manifest.json"))
        if run_json_problem:
            source = f"the checkpoint {ckpt.name}" if ckpt is not None else "this render's settings"
            self.events.warning(f"{run.run_json} {run_json_problem}; rewritten from {source}")
        run.write_config(self.config)
        run.write_resolved_spec(self.plan.summary())
        run.write_camera(self.plan.trajectory.subset(range(self.plan.frames)))  # a bench's trimmed plan renders fewer frames
        if ckpt is not None:
            self.records = dict(ckpt.meta.get("outputs", {}))
            if not ckpt.meta["done"]:  # a finished run checks its segments only if its video needs them
                self.check_outputs(ckpt.meta["chunk"])
        return ckpt

    def _usable(self, manifest: dict) -> str | None:
        """``CheckpointStore``'s accept check: this plan's meta contract (another configuration's
        checkpoint passes here and is refused by name in ``resume_point``)."""
        if manifest["spec_fingerprint"] != self.fingerprint:
            return meta_problem(manifest)
        return meta_problem(manifest, num_chunks=len(self.plan.chunks), steps=self.plan.steps)

    def check_outputs(self, chunks_done: int) -> None:
        """Verify the files of the finished chunks; say what will be rebuilt, refuse what cannot be."""
        outputs = RenderOutputs(self.run_dir, self.plan, self.options.video)
        self.to_rebuild, warnings = outputs.repair_plan(outputs.check_chunks(self.records, chunks_done))
        for warning in warnings:
            self.events.warning(warning)

    def finished_result(self, ckpt: Checkpoint) -> RenderResult | None:
        """The result of a finished run after verifying its video (and rebuilding it, or the report,
        from the segments and the checkpoint when damaged); None when segments must be decoded again
        (the model is needed: the caller goes through stages 2 to 6)."""
        outputs = RenderOutputs(self.run_dir, self.plan, self.options.video)
        problems = outputs.final_problems(self.records)
        report = self.run_dir.read_report()
        if not problems and report is not None:
            return self._result(self.plan.frames, report, already_complete=True)
        for problem in problems:
            self.events.warning(f"{problem}; joining it again from the segments")
        if problems:
            self.check_outputs(len(self.plan.chunks))
            if self.to_rebuild:
                return None
            self.records.update(outputs.assemble()[1])
        if report is None:
            report = ckpt.meta.get("report") or {}
            if report:
                self.events.warning(f"{self.run_dir.report_json.name} is missing or unreadable; rewritten from {ckpt.name}")
                self.run_dir.write_report(report)
            else:
                self.events.warning(f"{self.run_dir.report_json.name} is missing or unreadable, and {ckpt.name} "
                                    "predates saved reports; the video is complete (--restart renders a new report)")
        if problems:
            self.store.save(ckpt.tensors, {**ckpt.meta, "outputs": self.records})
        return self._result(self.plan.frames, report)

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

    # --- 2. check inputs ---------------------------------------------------------------------------

    def check_inputs(self, ckpt: Checkpoint | None) -> StartInputs:
        """The pre-flight ``mirage validate`` runs too (``inputs.preflight``): a bad file fails
        here, before any weights load."""
        start = preflight(self.plan)
        backbone = self.options.backbone
        if backbone.attention_backend:
            check_attention_backend(backbone.attention_backend, resolve_device(backbone.device), resolve_dtype(backbone.dtype))
        if ckpt is not None and "denoise" in ckpt.tensors:
            self._check_mid_chunk_device(ckpt, resolve_device(backbone.device))
        return start

    def _check_mid_chunk_device(self, ckpt: Checkpoint, device) -> None:
        """A mid-chunk checkpoint continues bit-exactly only on the kind of device that saved it (the
        state of its noise generator is the device's own)."""
        import torch

        saved = ckpt.tensors["denoise"]["generator_state"]
        saved_type = "cpu" if saved.numel() == torch.Generator().get_state().numel() else "cuda"
        if saved_type != device.type:
            step = ckpt.meta["mid_chunk_step"]
            raise InputError(
                f"{ckpt.name} was saved on {saved_type} at step {step} of chunk {ckpt.meta['chunk'] + 1}, and its noise "
                f"generator continues only on {saved_type}: resume with --device {saved_type}, or remove {ckpt.path} "
                f"to render that chunk again from its start on {device.type}",
                file=str(ckpt.path),
            )

    # --- 3. load components ------------------------------------------------------------------------

    def load_components(self) -> None:
        """The backbone (unless given), the profiler, the depth provider and the rollout."""
        load_seconds = 0.0
        own_backbone = self.backbone is None
        if own_backbone:
            preset = self.options.backbone.preset
            self.events.setup("loading model" + (f" (preset {preset})" if preset else f" {self.plan.model}"))
            t_load = time.perf_counter()
            self.backbone = load_backbone_for(self.plan, self.options.backbone)
            load_seconds = time.perf_counter() - t_load

        use_step_cache(self.backbone.transformer, diffusers_config(self.plan.step_cache, self.plan.steps))  # none: no cache
        self.prof = Profiler(self.backbone.device)
        self.prof.add_setup_seconds("model_load", load_seconds)
        self.outputs = RenderOutputs(self.run_dir, self.plan, self.options.video, self.prof)
        if CONDITIONERS[self.plan.memory.mode].stores_frames:
            depth_provider = make_depth_provider(self.plan.depth_model, self.backbone.device)
        else:
            depth_provider = MemoryPropagatedDepth()  # never asked: nothing is remembered
        self.rollout = Rollout.for_plan(self.plan, self.backbone, depth_provider=depth_provider, profiler=self.prof,
                                        denoise=self.denoise)
        self.rollout.encode_prompt()
        if own_backbone:  # the prompts are embedded for the whole render: the text encoder's memory goes back
            self.backbone.release_text_encoder()

    # --- 4. restore or start -----------------------------------------------------------------------

    def restore_or_start(self, ckpt: Checkpoint | None, start: StartInputs) -> DenoiseState | None:
        """Load the checkpoint into the rollout (returns its mid-chunk state, if any), or start afresh."""
        if ckpt is None:
            self.rollout.start(start.image, start.depth, start.keep_out)
            return None
        meta = ckpt.meta
        self.repair_outputs()
        self.rollout.load_state_tensors(ckpt.tensors)
        if meta.get("profiler"):
            try:
                type(self.prof)(self.backbone.device).load_state_dict(meta["profiler"])  # all or nothing
                self.prof.load_state_dict(meta["profiler"])
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                self.events.warning(f"{ckpt.name}: the profile of the chunks before could not be read ({e}); "
                                    "the report covers the chunks rendered from now on")
        self.resumed_from = int(meta["chunk"])
        step = meta.get("mid_chunk_step")
        where = f"resuming at chunk {self.resumed_from + 1}/{len(self.plan.chunks)}"
        self.events.setup(where + (f", step {step}/{self.plan.steps}" if step else ""))
        return DenoiseState.from_tensors(ckpt.tensors["denoise"]) if "denoise" in ckpt.tensors else None

    def repair_outputs(self) -> None:
        """Rebuild the damaged segments found in stage 1 from their saved latents."""
        if not self.to_rebuild:
            return
        self.events.setup(f"rebuilding {len(self.to_rebuild)} damaged segment(s) from their latents")
        self.records.update(self.outputs.rebuild_segments(self.to_rebuild, self.backbone, should_stop=lambda: self.stop.requested))
        self.stop.check("while rebuilding damaged segments (the ones rebuilt are kept)")
        self.to_rebuild = []

    # --- 5. the chunk loop -------------------------------------------------------------------------

    def render_chunks(self, resume_state: DenoiseState | None) -> None:
        """Render every chunk not done yet: chunk -> segment -> checkpoint; stop cleanly on a signal."""
        first = 0 if self.resumed_from is None else self.resumed_from
        total = len(self.plan.chunks)
        for chunk in self.plan.chunks[first:]:
            if self.stop.requested:
                self.save_checkpoint(chunk.index)
                raise Interrupted(f"stopped by {self.stop.signal_name}; checkpoint saved at chunk {chunk.index + 1}/{total}")
            self._render_chunk(chunk, resume_state, self.stop)
            resume_state = None

    def _render_chunk(self, chunk: Chunk, resume_state: DenoiseState | None, stop) -> None:
        """One chunk of the loop (raises ``Interrupted`` after a mid-chunk checkpoint)."""
        total, steps = len(self.plan.chunks), self.plan.steps
        self.events.chunk_started(chunk.index, total, steps, resume_state.step if resume_state is not None else 0)
        self.prof.begin_chunk(chunk.index)

        def on_step(i: int, _state: DenoiseState) -> bool:
            self.events.step_done(chunk.index, i + 1, steps)
            test_hooks.pause("denoise_step")  # tests stop the render here (mirage_cli.testing.pauses)
            return stop.requested

        with self._maybe_trace(chunk):
            result = self.rollout.run_chunk(chunk, resume_state=resume_state, on_step=on_step)
        if not result.completed:
            state = result.denoise_state
            self.save_checkpoint(chunk.index, denoise_state=state)
            raise Interrupted(
                f"stopped by {stop.signal_name or 'a stop on another rank'} during chunk {chunk.index + 1}/{total}; "
                "checkpoint saved, run the same command again to resume"
            )
        self.records.update(self.outputs.write_chunk(chunk, result.latents, result.pixels))
        new_frames = chunk.num_frames if chunk.index == 0 else chunk.num_frames - 1
        stats = {"start": chunk.start, "end": chunk.end, "frames": new_frames, **result.stats}
        self.prof.end_chunk(dict(stats))
        self.prof.add_chunk_seconds(chunk.index, "checkpoint_write", self.save_checkpoint(chunk.index + 1))
        self.events.chunk_done(chunk.index, total, stats)

    def _maybe_trace(self, chunk: Chunk):
        """A torch.profiler trace around the first chunk rendered, with ``--trace``."""
        if self.options.trace_dir is None or self.traced:
            return nullcontext()

        self.traced = True
        return trace_chunk(self.options.trace_dir, chunk_index=chunk.index, device=self.backbone.device)

    def save_checkpoint(self, next_chunk: int, *, denoise_state: DenoiseState | None = None, report: dict | None = None) -> float:
        """Write a checkpoint that resumes at chunk ``next_chunk`` (mid-chunk with ``denoise_state``;
        the final one, ``done``, with the ``report``); returns the seconds it took. Meta keys:
        ``mirage_cli.rundir.meta``."""
        done = report is not None
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
            "config": self.config,
            "outputs": dict(self.records),
            "profiler": self.prof.state_dict(),
            **self.rollout.memory_stats(),
        }
        if done:
            meta["report"] = report
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
        test_hooks.pause("assemble")  # tests stop the render here (mirage_cli.testing.pauses)
        frames, records = self.outputs.assemble()
        self.records.update(records)
        self.stop.check("while assembling the video (every chunk is saved)")
        wall = time.perf_counter() - self.t0
        backbone = self.options.backbone
        report = build_report(
            config={**self.config, "device": str(self.backbone.device), "offload": backbone.offload, "preset": backbone.preset,
                    "memory_plan": self.vram_plan, "conditioning_files": self.plan.conditioning.summary(),
                    "intrinsics_estimate": self.plan.intrinsics_estimate},
            device_info=describe_device(self.backbone.device),
            trajectory=self.plan.trajectory,
            frames=self.plan.frames,
            wall_seconds=wall,
            **self.prof.report_inputs(),
        )
        self.run_dir.write_report(report)
        self.save_checkpoint(len(self.plan.chunks), report=report)
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
