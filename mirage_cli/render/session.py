"""``mirage render``: a plan -> a run directory (``mirage_cli.rundir.layout``) with segments, checkpoints,
video and report, as a ``RenderSession`` that runs numbered stages.

0. Check options and inputs: the video settings and output directories of the command line, the
   trained weights, the start image, depth and mask, and the model's files, before anything is
   written (a failed attempt leaves no run directory to block the next one).
1. Resume point: prepare the run directory (``--restart``, leftovers of interrupted writes removed,
   the configuration check, ``run.json`` rebuilt when unreadable), find the newest usable checkpoint
   and verify the files of the chunks it says are done (``mirage_cli.render.outputs``); a finished run
   whose video verifies returns at once (a damaged video or report is rebuilt without the model).
2. A mid-chunk checkpoint continues only on the kind of device that saved it.
3. Load components: the backbone, the depth provider, the rollout (``mirage_cli.render.rollout``).
4. Restore the checkpoint (and rebuild damaged segments from their latents), or start from the
   start image.
5. Chunk loop: render a chunk -> write its files (``mirage_cli.render.outputs``) -> checkpoint. The files
   and the checkpoint are written behind the next chunk's denoising (``mirage_cli.render.write_behind``:
   one chunk in flight; the checkpoint counting a chunk is saved only after its files). A stop signal
   ends the loop, after the pending write, with a checkpoint (mid-chunk when it arrives during
   denoising) and ``Interrupted`` (exit 75).
6. Assemble the video (segments joined by packet copy) and verify it, write the report and the
   final checkpoint (``done``).

Stop signals (``mirage_cli.base.signals``): during stages 0 and 3 nothing is written, so a stop ends the
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
from typing import Any

from mirage_cli.backbone import check_attention_backend, load_backbone, resolve_device, resolve_dtype
from mirage_cli.backbone.loading import check_backbone_options
from mirage_cli.backbone.model_dir import resolve_model_dir
from mirage_cli.base import crash
from mirage_cli.base.errors import InputError, Interrupted, Problem, RenderError
from mirage_cli.base.options import BackboneOptions, RenderOptions
from mirage_cli.base.signals import GracefulStop
from mirage_cli.conditioning.conditioners import CONDITIONERS
from mirage_cli.denoise.loop import DenoiseState, NonFiniteLatents, denoise_chunk
from mirage_cli.denoise.step_cache import diffusers_config, use_step_cache
from mirage_cli.depth.providers import MemoryPropagatedDepth, make_depth_provider
from mirage_cli.profiling.profiler import (
    BACKGROUND,
    BACKGROUND_STAGES,
    BACKGROUND_WRITE,
    WRITE_WAIT,
    Profiler,
    trace_chunk,
)
from mirage_cli.render.branch import BranchPoint, check_branch, open_branch
from mirage_cli.render.config import RunSettings
from mirage_cli.render.events import STAGE_WORDS, RenderEvents, RenderResult, start_summary
from mirage_cli.render.inputs import StartInputs, preflight
from mirage_cli.render.messages import check_mid_chunk_device, chunks_done, non_finite_message, stopping_message
from mirage_cli.render.outputs import RenderOutputs
from mirage_cli.render.prepare import estimate_intrinsics
from mirage_cli.render.rollout import Rollout
from mirage_cli.render.trained import check_plan_weights
from mirage_cli.render.write_behind import ChunkCheckpoint, ChunkWriter, host_tensors, write_chunk_then_checkpoint
from mirage_cli.report import build_report, describe_device
from mirage_cli.rundir.checkpoint import Checkpoint
from mirage_cli.rundir.layout import RunDir
from mirage_cli.rundir.meta import meta_problem
from mirage_cli.spec.plan import Chunk, Plan
from mirage_cli.spec.step_cache import check_calibration_fits
from mirage_cli.testing import pauses as test_hooks
from mirage_cli.vram.plan import flags, parse_budget, vram_plan_for_render


def render(plan: Plan, options: RenderOptions | None = None, events: RenderEvents | None = None, *, backbone=None,
           stop: GracefulStop | None = None, denoise=denoise_chunk, settings: RunSettings | None = None,
           write_behind: bool = True) -> RenderResult:
    """Render ``plan`` into its run directory, resuming when a checkpoint exists.

    ``backbone``: already loaded components to reuse (``mirage bench`` renders several times in one
    process); by default they are loaded from ``plan.model`` / ``options.backbone``.
    ``stop``: the stop handlers to obey (installed by the caller); by default the render installs
    its own for its duration.
    ``denoise``: the denoising loop the chunks run (a parallel render's leader passes one that runs it
    on the whole team, ``mirage_cli.render.parallel.lead_denoise``).
    ``settings``: stage 0's result when the caller already computed it (a parallel render agrees on its
    fingerprint before loading anything); it must come from ``RunSettings.of(plan, options)``.
    ``write_behind``: write each chunk's files and checkpoint while the next chunk denoises (False:
    one after the other, as benchmarks and tests compare; same files either way).

    Raises:
        InputError: bad input or a changed configuration (exit 2).
        Interrupted: a stop signal arrived; a checkpoint was saved (exit 75).
        RenderError: runtime failure (exit 1).
    """
    plan = estimate_intrinsics(plan)  # a plan handed over with intrinsics: auto unresolved
    session = RenderSession(plan, options or RenderOptions(), events or RenderEvents(), backbone=backbone, stop=stop,
                            denoise=denoise, settings=settings, write_behind=write_behind)
    return session.run()


def load_backbone_for(plan: Plan, options: BackboneOptions):
    """Load the components a plan renders with (``plan.model`` unless a preset is chosen), with the
    trained conditioning weights of ``plan.conditioning``."""
    trained = plan.conditioning if (plan.conditioning.vace or plan.conditioning.lora) else None
    return load_backbone(plan.model, options, trained=trained, loras=plan.loras)


@dataclass
class ResumePoint:
    """Stage 1's result: where the render goes on from.

    ``checkpoint``: the newest usable checkpoint, None to start afresh. ``records``: the outputs
    written so far by relative path (``mirage_cli.render.outputs``); the later stages add to it.
    ``to_rebuild``: chunks whose damaged segments stage 4 decodes again from their latents.
    """

    checkpoint: Checkpoint | None
    records: dict[str, dict] = field(default_factory=dict)
    to_rebuild: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Components:
    """Stage 3's result: what renders the chunks."""

    backbone: Any  # mirage_cli.backbone.Backbone
    profiler: Profiler
    outputs: RenderOutputs
    rollout: Rollout


@dataclass(frozen=True)
class Restored:
    """Stage 4's result: the chunk the loop starts at and, mid-chunk, the denoising state to go on from."""

    resumed_from: int | None  # None: a fresh start at chunk 0
    denoise_state: DenoiseState | None = None


class RenderSession:
    """One render of ``plan`` into its run directory; ``run()`` runs the stages of the module docstring,
    each handing what it produces to the next (``RunSettings`` -> ``ResumePoint`` -> ``StartInputs`` ->
    ``Components`` -> ``Restored``). The session holds what it was given, and for a stop signal's
    message the chunk it is rendering and its profiler.

    Args:
        plan: the validated scene.
        options: ``RenderOptions`` (its ``backbone.dtype`` ``auto`` is resolved here).
        events: progress callbacks.
        backbone: already loaded components to reuse, or None to load them in stage 3.
        stop: installed stop handlers to obey, or None to install a ``GracefulStop`` for ``run()``.
        denoise: the denoising loop the chunks run (``render``).
        settings: stage 0's result computed by the caller (``render``), or None.
        write_behind: chunk files written behind the next chunk (``render``).
    """

    def __init__(self, plan: Plan, options: RenderOptions, events: RenderEvents, *, backbone=None,
                 stop: GracefulStop | None = None, denoise=denoise_chunk, settings: RunSettings | None = None,
                 write_behind: bool = True):
        self.plan = plan
        self.options = replace(options, backbone=options.backbone.resolved())
        self.events = events
        self.run_dir = RunDir(self.options.out or plan.output)
        self.store = self.run_dir.checkpoints()
        self.given_backbone = backbone
        self.given_settings = settings
        self.own_stop = stop is None
        self.stop = GracefulStop() if stop is None else stop
        self.denoise = denoise
        self.write_behind = write_behind
        self.t0 = time.perf_counter()
        self.branch_point: BranchPoint | None = None  # set in stage 0 for a branch (--from, from:) that starts now
        self.chunk_now: int | None = None  # the chunk being rendered, and the render's profiler: what a stop waits for
        self.profiler_now: Profiler | None = None

    def run(self) -> RenderResult:
        """Render (or resume) the plan; see the module docstring for the stages."""
        with self.stop if self.own_stop else nullcontext():
            outer, self.stop.on_signal = self.stop.on_signal, self._on_stop_signal
            try:
                return self._run()
            finally:
                self.stop.on_signal = outer

    def _on_stop_signal(self, signum: int) -> None:
        """The first stop signal inside the chunk loop: say what is finished first (``messages.stopping_message``)."""
        if self.stop.count == 1 and self.chunk_now is not None and self.profiler_now is not None:
            self.events.stopping(stopping_message(self.chunk_now, len(self.plan.chunks), self.profiler_now))

    def _stage_started(self, name: str) -> None:
        """The profiler's ``on_stage``: a stage of the chunk being rendered, as the progress names it."""
        if self.chunk_now is not None and name in STAGE_WORDS:
            self.events.stage_started(self.chunk_now, STAGE_WORDS[name])

    def _run(self) -> RenderResult:
        settings = self.check_options()  # 0
        with self.stop.at_once("while checking the inputs"):
            start = self.check_inputs(settings)  # 0: nothing is written before the inputs and the model's files check out
        self.run_dir.create()
        with crash.reports_into(self.run_dir.path), self.run_dir.lock() as lock, self.stop.deferred():
            if lock.take_over_message:
                self.events.warning(lock.take_over_message)
            resume = self.resume_point(settings)  # 1
            self.events.run_started(start_summary(self.plan, self.run_dir.path, resume.checkpoint))
            if resume.checkpoint is not None and resume.checkpoint.meta["done"]:
                finished = self.finished_result(resume)
                if isinstance(finished, RenderResult):
                    return finished
                resume = finished  # segments to decode again: the model is needed
            self.stop.check("before rendering")
            check_mid_chunk_device(resume.checkpoint, resolve_device(settings.options.backbone.device))  # 2
            with self.stop.at_once("while loading the model"):
                parts = self.load_components(settings)  # 3
            restored = self.restore_or_start(resume, start, parts)  # 4
            self.render_chunks(settings, parts, resume.records, restored)  # 5
            return self.finish(settings, parts, resume.records, restored)  # 6

    # --- 0. check options --------------------------------------------------------------------------

    def check_options(self) -> RunSettings:
        """The command-line options (video settings, output directories), before anything is written;
        then the VRAM plan, and the configuration it decides (the VAE tiling is in the fingerprint)."""
        problems = self.options.problems()
        if problems:
            raise InputError([Problem(file=None, field=flag, message=message) for flag, message in problems])
        if self.given_backbone is None:
            check_backbone_options(self.options.backbone)  # a refused flag combination leaves no run directory behind
            check_plan_weights(self.plan, self.options.backbone)  # keys, shapes, ranks, values: before anything is written
        parse_budget(self.options.backbone.vram_budget)  # a bad value is refused on every device
        settings = self.given_settings or self.choose_vram_plan()
        check_calibration_fits(self.plan.step_cache, steps=self.plan.steps, resolution=f"{self.plan.width}x{self.plan.height}",
                               model=settings.config["model"], scene=self.plan.spec_path)
        return settings

    def choose_vram_plan(self) -> RunSettings:
        """On a GPU, the offload mode and VAE tiling that fit ``--vram-budget`` (``mirage_cli.vram.plan``);
        a render that cannot fit is refused here, before anything loads (exit 2)."""
        options = self.options.backbone
        if self.given_backbone is not None:
            return RunSettings.of(self.plan, self.options)  # components given by the caller (bench plans them itself)
        recorded = None
        if not self.options.restart:
            config, _ = self.run_dir.read_config()
            if isinstance(config, dict):
                recorded = bool(config.get("vae_tiling", False))
        plan = vram_plan_for_render(self.plan, options, recorded)
        if plan is None:
            return RunSettings.of(self.plan, self.options)
        if (plan.offload, plan.vae_tiling) != (options.offload, bool(options.vae_tiling)):
            self.events.warning(f"memory plan: {flags(plan.offload, plan.vae_tiling)} ({plan.reason}; {plan.budget_source})")
        return RunSettings.of(self.plan, replace(self.options, backbone=plan.apply(options)), vram_plan=plan.to_dict())

    # --- 1. resume point ---------------------------------------------------------------------------

    def resume_point(self, settings: RunSettings) -> ResumePoint:
        """Prepare the run directory and find its newest usable checkpoint (none: start afresh).

        Raises:
            InputError: the directory holds another configuration (without ``restart``), or the
                files of finished chunks are damaged beyond rebuilding.
        """
        run = self.run_dir
        if self.options.restart:
            run.clear()
        for path in run.remove_leftovers():
            self.events.setup(f"removed {path.relative_to(run.path)}, left by an interrupted write")
        replaced = run.replace_unrendered_attempt(settings.config)
        if replaced is not None:
            self.events.warning(f"{run.path} held an attempt with other settings ({', '.join(replaced)}) that rendered "
                                "nothing: this render replaces it")
        if self.branch_point is not None and (opened := open_branch(self.branch_point, run, self.plan, settings.config,
                                                                    settings.fingerprint)):
            self.events.setup(opened)
        run_json_problem = run.check_config(settings.config)
        ckpt = self.store.load_latest(accept=lambda manifest: self._usable(manifest, settings.fingerprint))
        for warning in self.store.warnings:
            self.events.warning(warning)
        if ckpt is not None and ckpt.meta["spec_fingerprint"] != settings.fingerprint:
            raise run.different_settings(ckpt.meta.get("config"), settings.config, str(ckpt.path / "manifest.json"))
        if run_json_problem:
            source = f"the checkpoint {ckpt.name}" if ckpt is not None else "this render's settings"
            self.events.warning(f"{run.run_json} {run_json_problem}; rewritten from {source}")
        run.write_config(settings.config)
        run.write_resolved_spec(self.plan.summary())
        run.write_camera(self.plan.trajectory.subset(range(self.plan.frames)))  # a bench's trimmed plan renders fewer frames
        if ckpt is None:
            return ResumePoint(None)
        records = dict(ckpt.meta.get("outputs", {}))
        if ckpt.meta["done"]:  # a finished run checks its segments only if its video needs them
            return ResumePoint(ckpt, records)
        return ResumePoint(ckpt, records, self.damaged_chunks(records, ckpt.meta["chunk"]))

    def _usable(self, manifest: dict, fingerprint: str) -> str | None:
        """``CheckpointStore``'s accept check: this plan's meta contract (another configuration's
        checkpoint passes here and is refused by name in ``resume_point``)."""
        if manifest["spec_fingerprint"] != fingerprint:
            return meta_problem(manifest)
        return meta_problem(manifest, num_chunks=len(self.plan.chunks), steps=self.plan.steps)

    def damaged_chunks(self, records: dict, chunks_done: int) -> list[int]:
        """Verify the files of the finished chunks; say what will be rebuilt (returned), refuse what cannot be."""
        outputs = RenderOutputs(self.run_dir, self.plan, self.options.video)
        to_rebuild, warnings = outputs.repair_plan(outputs.check_chunks(records, chunks_done))
        for warning in warnings:
            self.events.warning(warning)
        return to_rebuild

    def finished_result(self, resume: ResumePoint) -> RenderResult | ResumePoint:
        """The result of a finished run after verifying its video (and rebuilding it, or the report,
        from the segments and the checkpoint when damaged); or, when segments must be decoded again
        (the model is needed), the resume point the caller goes through stages 2 to 6 with."""
        ckpt, records = resume.checkpoint, resume.records
        outputs = RenderOutputs(self.run_dir, self.plan, self.options.video)
        problems = outputs.final_problems(records)
        report = self.run_dir.read_report()
        if not problems and report is not None:
            return self._result(self.plan.frames, report, None, already_complete=True)
        for problem in problems:
            self.events.warning(f"{problem}; joining it again from the segments")
        if problems:
            to_rebuild = self.damaged_chunks(records, len(self.plan.chunks))
            if to_rebuild:
                return ResumePoint(ckpt, records, to_rebuild)
            records.update(outputs.assemble()[1])
        if report is None:
            report = ckpt.meta.get("report") or {}
            if report:
                self.events.warning(f"{self.run_dir.report_json.name} is missing or unreadable; rewritten from {ckpt.name}")
                self.run_dir.write_report(report)
            else:
                self.events.warning(f"{self.run_dir.report_json.name} is missing or unreadable, and {ckpt.name} "
                                    "predates saved reports; the video is complete (--restart renders a new report)")
        if problems:
            self.store.save(ckpt.tensors, {**ckpt.meta, "outputs": records})
        return self._result(self.plan.frames, report, None)

    def check_inputs(self, settings: RunSettings) -> StartInputs:
        """The pre-flight ``mirage validate`` runs too (``inputs.preflight``), the attention backend, and
        the model's files (found in the Hugging Face cache, or downloaded when the hub may be contacted):
        a bad file or a missing model fails here, before the run directory is written, so the next
        attempt starts clean."""
        start = preflight(self.plan)
        backbone = settings.options.backbone
        if backbone.attention_backend:
            check_attention_backend(backbone.attention_backend, resolve_device(backbone.device), resolve_dtype(backbone.dtype))
        if self.given_backbone is None and backbone.preset is None and not backbone.random_weights:
            resolve_model_dir(self.plan.model)
        if self.plan.branch_from is not None:  # --from, else the spec's from:
            self.branch_point = check_branch(self.plan.branch_from, self.run_dir.path, self.plan, settings.config, self.options.restart)
        return start

    # --- 3. load components ------------------------------------------------------------------------

    def load_components(self, settings: RunSettings) -> Components:
        """The backbone (unless given), the profiler, the depth provider and the rollout."""
        load_seconds = 0.0
        backbone = self.given_backbone
        if backbone is None:
            preset = settings.options.backbone.preset
            self.events.setup("loading model" + (f" (preset {preset})" if preset else f" {self.plan.model}"))
            test_hooks.pause("model_load")  # tests stop the render here, once it has said so (mirage_cli.testing.pauses)
            t_load = time.perf_counter()
            backbone = load_backbone_for(self.plan, settings.options.backbone)
            load_seconds = time.perf_counter() - t_load

        use_step_cache(backbone.transformer, diffusers_config(self.plan.step_cache, self.plan.steps))  # none: no cache
        profiler = Profiler(backbone.device)
        profiler.on_stage = self._stage_started
        self.profiler_now = profiler
        profiler.add_setup_seconds("model_load", load_seconds)
        if CONDITIONERS[self.plan.memory.mode].stores_frames:
            depth_provider = make_depth_provider(self.plan.depth_model, backbone.device)
        else:
            depth_provider = MemoryPropagatedDepth()  # never asked: nothing is remembered
        rollout = Rollout.for_plan(self.plan, backbone, depth_provider=depth_provider, profiler=profiler, denoise=self.denoise)
        if self.given_backbone is None:  # the prompts are embedded for the whole render: the text encoder's memory goes back
            backbone.release_text_encoder()
        return Components(backbone, profiler, RenderOutputs(self.run_dir, self.plan, self.options.video, profiler), rollout)

    # --- 4. restore or start -----------------------------------------------------------------------

    def restore_or_start(self, resume: ResumePoint, start: StartInputs, parts: Components) -> Restored:
        """Load the checkpoint into the rollout (with its mid-chunk state, if any), or start afresh."""
        ckpt = resume.checkpoint
        if ckpt is None:
            parts.rollout.start(start.image, start.depth, start.keep_out)
            return Restored(None)
        meta = ckpt.meta
        self.repair_outputs(resume, parts)
        parts.rollout.load_state_tensors(ckpt.tensors)
        if meta.get("profiler"):
            try:
                Profiler(parts.backbone.device).load_state_dict(meta["profiler"])  # all or nothing
                parts.profiler.load_state_dict(meta["profiler"])
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                self.events.warning(f"{ckpt.name}: the profile of the chunks before could not be read ({e}); "
                                    "the report covers the chunks rendered from now on")
        resumed_from = int(meta["chunk"])
        step = meta.get("mid_chunk_step")
        where = f"resuming at chunk {resumed_from + 1}/{len(self.plan.chunks)}"
        self.events.setup(where + (f", step {step}/{self.plan.steps}" if step else ""))
        state = DenoiseState.from_tensors(ckpt.tensors["denoise"]) if "denoise" in ckpt.tensors else None
        return Restored(resumed_from, state)

    def repair_outputs(self, resume: ResumePoint, parts: Components) -> None:
        """Rebuild the damaged segments found in stage 1 from their saved latents (into ``resume.records``)."""
        if not resume.to_rebuild:
            return
        self.events.setup(f"rebuilding {len(resume.to_rebuild)} damaged segment(s) from their latents")
        rebuilt = parts.outputs.rebuild_segments(resume.to_rebuild, parts.backbone, should_stop=lambda: self.stop.requested)
        resume.records.update(rebuilt)
        self.stop.check("while rebuilding damaged segments (the ones rebuilt are kept)")

    # --- 5. the chunk loop -------------------------------------------------------------------------

    def render_chunks(self, settings: RunSettings, parts: Components, records: dict, restored: Restored) -> None:
        """Render every chunk not done yet: chunk -> segment -> checkpoint (``records`` gains the files
        written); stop cleanly on a signal. Each chunk's files and checkpoint are written behind the
        next chunk (``write_behind``); every write is finished and counted before this returns."""
        first = restored.resumed_from or 0
        total = len(self.plan.chunks)
        resume_state = restored.denoise_state
        with ChunkWriter(background=self.write_behind) as writer:
            try:
                for chunk in self.plan.chunks[first:]:
                    if self.stop.requested:
                        self.settle_writes(parts, records, writer)
                        self.save_checkpoint(settings, parts, records, chunk.index)
                        raise Interrupted(f"stopped by {self.stop.signal_name}: {chunks_done(chunk.index, total)}, checkpoint "
                                          f"saved; run the same command again to render from chunk {chunk.index + 1}")
                    self.chunk_now = chunk.index
                    try:
                        self._render_chunk(settings, parts, records, chunk, resume_state, writer, trace=chunk.index == first)
                    finally:
                        self.chunk_now = None
                    resume_state = None
                with parts.profiler.stage(WRITE_WAIT):
                    self.settle_writes(parts, records, writer)
            except BaseException:
                self._settle_after_error(parts, records, writer)
                raise

    def settle_writes(self, parts: Components, records: dict, writer: ChunkWriter, *, wait: bool = True) -> None:
        """Count the pending chunk write once it is done (``wait``: wait for it; else only if it is
        done already): its files' records, its times in the profile, its checkpoint event.

        Raises:
            RenderError: the write failed (the error the write raised; its chunk is not counted).
        """
        result = writer.wait() if wait else writer.poll()
        if result is None:
            return
        records.update(result.records)
        prof, index = parts.profiler, result.chunk_index
        if writer.background:  # beside the next chunk: shown apart, outside the chunks' wall times
            prof.add_overlapped_seconds(index, BACKGROUND_WRITE, result.total_seconds, BACKGROUND)
            for name, seconds in result.seconds.items():
                prof.add_overlapped_seconds(index, BACKGROUND_STAGES[name], seconds, BACKGROUND_WRITE)
        else:
            for name, seconds in result.seconds.items():
                prof.add_chunk_seconds(index, name, seconds)
        self.events.checkpoint_saved(result.info)

    def _settle_after_error(self, parts: Components, records: dict, writer: ChunkWriter) -> None:
        """The chunk loop is failing: let the pending write finish (a chunk rendered before the error
        stays counted); a failure of that write too is reported as a warning, the loop's error wins."""
        if not writer.pending:
            return
        try:
            self.settle_writes(parts, records, writer)
        except Exception as e:
            self.events.warning(str(e))

    def _render_chunk(self, settings: RunSettings, parts: Components, records: dict, chunk: Chunk,
                      resume_state: DenoiseState | None, writer: ChunkWriter, *, trace: bool) -> None:
        """One chunk of the loop (raises ``Interrupted`` after a mid-chunk checkpoint); ``trace``: the
        first chunk this process renders, traced with ``--trace``. The chunk before may still be
        written by ``writer``: it is counted as soon as it is done (between steps), and waited for
        before this chunk's checkpoint or files."""
        total, steps, stop = len(self.plan.chunks), self.plan.steps, self.stop
        self.events.chunk_started(chunk.index, total, steps, resume_state.step if resume_state is not None else 0)
        parts.profiler.begin_chunk(chunk.index)

        def on_step(i: int, _state: DenoiseState) -> bool:
            self.events.step_done(chunk.index, i + 1, steps)
            test_hooks.pause("denoise_step")  # tests stop the render here (mirage_cli.testing.pauses)
            self.settle_writes(parts, records, writer, wait=False)
            return stop.requested or writer.failed  # a failed write ends the chunk: settle_writes raises it below

        tracing = self.options.trace_dir is not None and trace
        with trace_chunk(self.options.trace_dir, chunk_index=chunk.index, device=parts.backbone.device) if tracing else nullcontext():
            try:
                result = parts.rollout.run_chunk(chunk, resume_state=resume_state, on_step=on_step)
            except NonFiniteLatents as e:
                raise RenderError(non_finite_message(chunk.index, total, e, mid_chunk=resume_state is not None)) from None
        if not result.completed:
            self.settle_writes(parts, records, writer)  # the chunk before is counted first, or its error raised
            self.save_checkpoint(settings, parts, records, chunk.index, denoise_state=result.denoise_state)
            raise Interrupted(
                f"stopped by {stop.signal_name or 'a stop on another rank'} during chunk {chunk.index + 1}/{total} after "
                f"step {result.denoise_state.step}/{steps} ({chunks_done(chunk.index, total)}); checkpoint saved, run the "
                "same command again to resume"
            )
        with parts.profiler.stage(WRITE_WAIT):
            self.settle_writes(parts, records, writer)  # one chunk in flight at most
        files = parts.outputs.host_copy(chunk, result.latents, result.pixels)
        new_frames = chunk.num_frames if chunk.index == 0 else chunk.num_frames - 1
        stats = {"start": chunk.start, "end": chunk.end, "frames": new_frames, **result.stats}
        parts.profiler.end_chunk(dict(stats))
        tensors, meta = self.checkpoint_contents(settings, parts, records, chunk.index + 1)
        checkpoint = ChunkCheckpoint(host_tensors(tensors), meta)
        self.events.chunk_done(chunk.index, total, stats)
        writer.submit(lambda: write_chunk_then_checkpoint(parts.outputs, files, self.store, checkpoint))
        self.settle_writes(parts, records, writer, wait=False)  # done already when written in this thread

    def save_checkpoint(self, settings: RunSettings, parts: Components, records: dict, next_chunk: int, *,
                        denoise_state: DenoiseState | None = None, report: dict | None = None) -> float:
        """Write a checkpoint that resumes at chunk ``next_chunk`` (mid-chunk with ``denoise_state``;
        the final one, ``done``, with the ``report``); returns the seconds it took. Meta keys:
        ``mirage_cli.rundir.meta``."""
        tensors, meta = self.checkpoint_contents(settings, parts, records, next_chunk, denoise_state=denoise_state, report=report)
        t = time.perf_counter()
        path = self.store.save(tensors, meta)
        seconds = time.perf_counter() - t
        self.events.checkpoint_saved({"name": path.name, "next_chunk": next_chunk, "mid_chunk_step": meta["mid_chunk_step"],
                                      "done": meta["done"], "seconds": seconds})
        return seconds

    def checkpoint_contents(self, settings: RunSettings, parts: Components, records: dict, next_chunk: int, *,
                            denoise_state: DenoiseState | None = None, report: dict | None = None) -> tuple[dict, dict]:
        """The tensors and the meta of the checkpoint ``save_checkpoint`` writes (the tensors are the
        rollout's own: copy them before the rollout goes on)."""
        done = report is not None
        tensors = parts.rollout.state_tensors()
        if denoise_state is not None:
            tensors["denoise"] = denoise_state.to_tensors()
        meta = {
            "spec_fingerprint": settings.fingerprint,
            "chunk": next_chunk,
            "num_chunks": len(self.plan.chunks),
            "frames_written": self.plan.chunks[next_chunk - 1].end + 1 if next_chunk > 0 else 0,
            "frames_total": self.plan.frames,
            "mid_chunk_step": None if denoise_state is None else denoise_state.step,
            "done": done,
            "config": settings.config,
            "outputs": dict(records),
            "profiler": parts.profiler.state_dict(),
            **parts.rollout.memory_stats(),
        }
        if done:
            meta["report"] = report
        return tensors, meta

    # --- 6. assemble, report, final checkpoint -----------------------------------------------------

    def finish(self, settings: RunSettings, parts: Components, records: dict, restored: Restored) -> RenderResult:
        """Join the segments into ``video.mp4`` (and ``video.mkv``), write the report and the final checkpoint."""
        test_hooks.pause("assemble")  # tests stop the render here (mirage_cli.testing.pauses)
        frames, assembled = parts.outputs.assemble()
        records.update(assembled)
        self.stop.check("while assembling the video (every chunk is saved)")
        wall = time.perf_counter() - self.t0
        backbone = settings.options.backbone
        report = build_report(
            config={**settings.config, "device": str(parts.backbone.device), "offload": backbone.offload,
                    "preset": backbone.preset, "memory_plan": settings.vram_plan,
                    "conditioning_files": self.plan.conditioning.summary(), "intrinsics_estimate": self.plan.intrinsics_estimate},
            device_info=describe_device(parts.backbone.device),
            trajectory=self.plan.trajectory,
            frames=self.plan.frames,
            wall_seconds=wall,
            lineage=(self.run_dir.read_config()[0] or {}).get("lineage"),
            **parts.profiler.report_inputs(),
        )
        self.run_dir.write_report(report)
        self.save_checkpoint(settings, parts, records, len(self.plan.chunks), report=report)
        return self._result(frames, report, restored.resumed_from)

    def _result(self, frames: int, report: dict, resumed_from: int | None, already_complete: bool = False) -> RenderResult:
        return RenderResult(
            self.run_dir.path,
            self.run_dir.video,
            frames,
            len(self.plan.chunks),
            resumed_from,
            time.perf_counter() - self.t0,
            report,
            already_complete=already_complete,
        )
