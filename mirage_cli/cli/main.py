"""The ``mirage`` command line: parses arguments, calls into the library, maps errors to exit codes.

No logic lives here. Results go to stdout (``--json`` for machines); progress, logs and warnings
go to stderr. Exit codes (README, "Commands"): 0 done, 1 runtime failure, 2 bad usage or input,
75 interrupted with a checkpoint saved.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import replace
from inspect import signature  # `inspect` is a command here
from pathlib import Path

import typer
import typer.main
from typer.exceptions import TyperException

from mirage_cli.base.errors import EXIT_FAILURE, InputError, Interrupted, MirageError
from mirage_cli.base.files import check_output
from mirage_cli.base.options import (
    BackboneOptions,
    MemoryMode,
    PinMode,
    Progress,
    RenderOptions,
    VideoOptions,
    parse_vram_budget,
)
from mirage_cli.cli.app import app, cache_app, err, print_json, run_body
from mirage_cli.cli.flags import (
    BACKBONE,
    MODEL_FLAGS,
    STEP_CACHE_FLAGS,
    VIDEO,
    Guidance,
    Loras,
    Preset,
    Sampler,
    SamplerName,
    Steps,
)
from mirage_cli.spec.branch_source import parse_from_flag
from mirage_cli.testing import pauses as test_hooks

# --- mirage validate -----------------------------------------------------------------------------


@app.command()
@MODEL_FLAGS(without=("device", "attention_backend", "compile_", "vram_budget"))
def validate(
    scene: Path = typer.Argument(..., help="Scene spec (YAML)."),
    json_out: bool = typer.Option(False, "--json", help="Print the resolved plan as one JSON object."),
    vram: bool = typer.Option(False, "--vram", help="Also predict the peak GPU memory of each stage (meta-device traces of "
                              "the real modules at the scene's size) and the memory plan a render would choose."),
    vram_budget: str | None = typer.Option(None, "--vram-budget", help="auto (the GPU's free memory, else a 24 GiB card) | "
                                           "GiB | none: the budget the memory plan must fit; implies --vram."),
    model: str | None = typer.Option(None, "--model", help="With --vram: diffusers model id or local directory (overrides the spec)."),
    backbone: BackboneOptions = BACKBONE,  # the model flags (MODEL_FLAGS)
    depth_model: str | None = typer.Option(None, "--depth-model", help="transformers depth model id/dir, or none."),
    lora: Loras = None,
    sampler: Sampler = None,
) -> None:
    """Check a scene spec and its files as a render would, and print the resolved plan (and, with
    --vram, the predicted GPU memory)."""

    def body():
        from mirage_cli.render.config import check_plan_calibration
        from mirage_cli.render.inputs import preflight
        from mirage_cli.render.prepare import estimate_intrinsics
        from mirage_cli.render.trained import check_plan_weights
        from mirage_cli.spec.plan import load_plan

        options = backbone if vram_budget is None else replace(backbone, vram_budget=vram_budget)
        parse_vram_budget(options.vram_budget)
        plan = load_plan(scene, overrides={"model": model, "depth_model": depth_model, "loras": _lora_stack(lora),
                                           "sampler": None if sampler is None else sampler.value}, preset=backbone.preset)
        check_plan_calibration(plan, backbone)  # as the render does
        plan = estimate_intrinsics(plan)
        preflight(plan, models=False)  # whether the models are here is a warning (below): specs are checked anywhere
        check_plan_weights(plan, options)  # every check a render makes on them, no model loaded
        from mirage_cli.render.availability import describe_models, models_of

        models = models_of(plan, options)
        for status in models:
            if not status.on_machine:
                err(f"warning: {status.warning()}")
        from mirage_cli.render.branch import already_branched, branch_source_problem

        if (plan.branch_from is not None and not already_branched(plan.branch_from, plan.output)
                and (why := branch_source_problem(plan.branch_from))):
            err(f"warning: from: {plan.branch_from.summary()}: {why} (a render of this spec refuses it while it is so)")
        summary = plan.summary()
        summary["models"] = [status.to_dict() for status in models]
        from mirage_cli.depth.scene_scale import describe_scale, scale_report
        from mirage_cli.render.inputs import load_start_depth

        summary["scale"] = scale_report(plan.scale, plan.trajectory, plan.chunks, load_start_depth(plan))
        vram_plan = None
        if vram or vram_budget is not None:
            from mirage_cli.vram.plan import vram_plan_for_validate

            vram_plan = vram_plan_for_validate(plan, options)
            summary["vram"] = vram_plan.to_dict()
        if json_out:
            print_json(summary)
        else:
            print(plan.describe())
            print(describe_models(models))
            print(describe_scale(summary["scale"]))
            if vram_plan is not None:
                from mirage_cli.vram.plan import describe_vram_plan

                print(describe_vram_plan(vram_plan))

    run_body(body)


# --- mirage render -------------------------------------------------------------------------------


@app.command()
@MODEL_FLAGS
@STEP_CACHE_FLAGS
def render(
    scene: Path = typer.Argument(..., help="Scene spec (YAML)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default: the spec's `output`, else "
                                                  "runs/<spec stem> beside the spec)."),
    model: str | None = typer.Option(None, "--model", help="diffusers model id or local directory (overrides the spec)."),
    backbone: BackboneOptions = BACKBONE,  # the model flags (MODEL_FLAGS)
    memory: MemoryMode | None = typer.Option(None, "--memory", help="What conditions each chunk (overrides the spec)."),
    pin: PinMode | None = typer.Option(None, "--pin", help="How memory latents are held while denoising (overrides the spec)."),
    pin_until: float | None = typer.Option(None, "--pin-until", help="Fraction of steps with memory pinned."),
    depth_model: str | None = typer.Option(None, "--depth-model", help="transformers depth model id/dir, or none."),
    conditioning: str | None = typer.Option(None, "--conditioning", help="pin (training-free) | vace (trained VACE "
                                            "branch, Mirage's recipe) | spatia (Spatia's weights and recipe); overrides the "
                                            "spec's conditioning.method."),
    vace: Path | None = typer.Option(None, "--vace", help="VACE weights (.safetensors from the official training code)."),
    memory_lora: Path | None = typer.Option(None, "--memory-lora", help="The DiT LoRA trained with the VACE weights "
                                            "(.safetensors from the official training code): conditioning.lora."),
    lora_scale: float | None = typer.Option(None, "--lora-scale", help="Weight of the memory LoRA's update (default 1)."),
    lora: Loras = None,
    step_cache: dict | None = None,  # the step-cache flags (STEP_CACHE_FLAGS)
    steps: Steps = None,
    guidance: Guidance = None,
    sampler: Sampler = None,
    seed: int | None = typer.Option(None, "--seed", help="Random seed (overrides the spec)."),
    crf: int = typer.Option(VIDEO.crf, "--crf", help="x264 quality of video.mp4: 0-51, lower is better."),
    encoder_preset: str = typer.Option(VIDEO.encoder_preset, "--encoder-preset", help="x264 speed preset of video.mp4."),
    lossless: bool = typer.Option(VIDEO.lossless, "--lossless", help="Also write video.mkv: FFV1, exactly the rendered frames."),
    frames: Path | None = typer.Option(VIDEO.frames_dir, "--frames", help="Also write every frame as a PNG into DIR."),
    restart: bool = typer.Option(False, "--restart", help="Discard an existing run in --out and start over."),
    trace: Path | None = typer.Option(None, "--trace", help="Write a torch.profiler Chrome trace of one chunk into DIR."),
    progress: Progress = typer.Option(Progress.AUTO, "--progress", help="auto: bars on a terminal, lines otherwise; "
                                      "jsonl: one JSON object per event on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary table."),
    json_out: bool = typer.Option(False, "--json", help="Print a final summary object on stdout."),
    parallel: str | None = typer.Option(None, "--parallel", help="ulysses | ring: under torchrun, split each denoising step "
                                        "over the processes (diffusers' context parallelism); rank 0 does all I/O."),
    branch_from: str | None = typer.Option(None, "--from", help="RUN or RUN@CHUNK: start from that run's state after CHUNK "
                                           "finished chunks (default: its last) instead of rendering them again."),
) -> None:
    """Render a scene spec to RUN_DIR/video.mp4 (resumes when RUN_DIR holds a checkpoint)."""
    from mirage_cli.cli.progress import JsonlRenderEvents, RichRenderEvents

    events = JsonlRenderEvents() if progress == Progress.JSONL else RichRenderEvents(quiet=quiet)

    def prepare():
        from mirage_cli.render.config import check_plan_calibration
        from mirage_cli.render.prepare import estimate_intrinsics
        from mirage_cli.spec.plan import load_plan

        overrides = render_overrides(model=model, steps=steps, guidance=guidance, seed=seed, depth_model=depth_model,
                                     memory=memory, pin=pin, pin_until=pin_until, conditioning=conditioning, vace=vace,
                                     lora=lora, lora_scale=lora_scale, step_cache=step_cache, memory_lora=memory_lora,
                                     sampler=sampler, branch_from=branch_from)
        video = VideoOptions(crf=crf, encoder_preset=encoder_preset, lossless=lossless, frames_dir=frames)
        options = RenderOptions(out=out, backbone=backbone, video=video, restart=restart, trace_dir=trace, parallel=parallel)
        plan = load_plan(scene, overrides=overrides, preset=backbone.preset)
        check_plan_calibration(plan, backbone)  # before the intrinsics model runs
        return estimate_intrinsics(plan), options

    run_body(lambda: _render_under_stop(prepare, events, progress, json_out), quiet_errors=progress == Progress.JSONL)


def render_overrides(*, model, steps, guidance, seed, depth_model, memory, pin, pin_until, conditioning, vace, lora,
                     lora_scale, step_cache: dict, memory_lora=None, sampler=None, branch_from=None) -> dict:
    """The spec fields ``mirage render``'s flags replace (``load_plan``'s overrides; None: not given)."""
    return {
        "model": model,
        "steps": steps,
        "guidance": guidance,
        "sampler": None if sampler is None else SamplerName(sampler).value,
        "seed": seed,
        "depth_model": depth_model,
        "memory.mode": memory,
        "memory.pin": pin,
        "memory.pin_until": pin_until,
        "conditioning.method": conditioning,
        "conditioning.vace": None if vace is None else os.path.abspath(vace.expanduser()),  # a link loop: refused by name
        "conditioning.lora": None if memory_lora is None else os.path.abspath(memory_lora.expanduser()),  # a link loop: refused by name
        "conditioning.lora_scale": lora_scale,
        "loras": _lora_stack(lora),
        "from": None if branch_from is None else parse_from_flag(branch_from),  # a parsed source: the flag's own base
        **step_cache,
    }


def _lora_stack(flags: list[str] | None) -> list[dict] | None:
    from mirage_cli.spec.loras import lora_stack  # torch-heavy: loaded when a command runs, not for --help

    return lora_stack(flags)


def render_flag_values(args: list[str]) -> dict:
    """The values ``mirage render SPEC ARGS`` would get, by parameter name, its flag groups built
    (``backbone``, ``step_cache``); ``args`` are parsed by the render command's own options (no render
    runs). InputError (field ``RENDER_ARGS``) for an argument it would refuse."""
    values: dict = {}

    def keep(**given):
        values.update(given)

    keep.__signature__ = signature(render)  # render's flags, the groups' flags expanded
    keep.__annotations__ = dict(render.__annotations__)
    parser = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    parser.command(add_help_option=False)(keep)
    try:
        typer.main.get_command(parser).main(args=["SPEC", *args], prog_name="mirage render", standalone_mode=False)
    except TyperException as e:
        raise InputError(f"{e.format_message()} (the arguments after `--` go to `mirage render`)", field="RENDER_ARGS") from None
    for group in (MODEL_FLAGS, STEP_CACHE_FLAGS):
        values[group.keyword] = group.build(**{flag.name: values.pop(flag.name) for flag in group.flags})
    return values


def _render_under_stop(prepare, events, progress: Progress, json_out: bool) -> None:
    """The body of ``mirage render``: ``prepare()`` (imports, the plan) and the render, under the
    process's stop handlers (``mirage_cli.base.signals``): a stop while starting exits 75 at once. Under
    ``--parallel`` a follower rank prints nothing and ends with the leader's exit code."""
    from mirage_cli.base.signals import GracefulStop, process_stop

    own = process_stop() is None  # in-process (tests): handlers for this command only
    with GracefulStop() if own else nullcontext(process_stop()) as stop:
        try:
            with events:
                try:
                    with stop.at_once("while starting"):
                        test_hooks.pause("imports")  # tests stop the render here (mirage_cli.testing.pauses)
                        from mirage_cli.render.session import render as run_render

                        plan, options = prepare()
                    if options.parallel is not None:
                        from mirage_cli.render.parallel import parallel_render

                        result = parallel_render(plan, options, events, stop)
                    else:
                        result = run_render(plan, options, events, stop=stop)
                except MirageError as e:
                    events.failed(e)
                    raise
                except Exception as e:
                    from mirage_cli.base.crash import write_crash_report

                    events.crashed(e, write_crash_report(e))
                    if progress == Progress.JSONL:  # the event says it all; stderr holds nothing else
                        raise typer.Exit(EXIT_FAILURE) from None
                    raise
                if not isinstance(result, int):
                    events.finish(result)
        finally:
            stop.settle()  # the outcome is decided: later signals only get recorded
    if isinstance(result, int):  # a follower of a parallel render
        raise typer.Exit(result)
    if json_out:
        print_json(result.summary())
    else:
        print(result.video)


# --- mirage inspect / mirage cache export ---------------------------------------------------------


@app.command()
def inspect(
    run_dir: Path = typer.Argument(..., help="Run directory (the --out of a render)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show a run's progress and whether it can be resumed (and why not)."""

    def body():
        from mirage_cli.rundir.layout import describe_inspection, inspect_run
        from mirage_cli.rundir.lineage import branches_of

        info = inspect_run(run_dir)
        info["branches"] = branches_of(run_dir)
        for warning in info["warnings"]:
            err(f"warning: {warning}")
        if json_out:
            print_json(info)
        else:
            print(describe_inspection(info))

    run_body(body)


@cache_app.command("export")
def cache_export(
    run_dir: Path = typer.Argument(..., help="Run directory (the --out of a render)."),
    ply: Path = typer.Option(..., "--ply", help="Write the memory's points to this PLY file."),
) -> None:
    """Export the latent memory of a run's newest good checkpoint as a PLY point cloud."""

    def body():
        from mirage_cli.rundir.layout import export_cache_ply

        check_output(ply, "--ply")
        result = export_cache_ply(run_dir, ply)
        for warning in result["warnings"]:
            err(f"warning: {warning}")
        print(result["ply"])

    run_body(body)


# --- mirage export ---------------------------------------------------------------------------------


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="Run directory (the --out of a render), finished or stopped."),
    colmap: Path | None = typer.Option(None, "--colmap", help="Write a COLMAP dataset here: images/ and sparse/0."),
    binary: bool = typer.Option(False, "--binary", help="The COLMAP model in binary files (default: text)."),
    nerfstudio: Path | None = typer.Option(None, "--nerfstudio", help="Write a nerfstudio dataset here: images/, "
                                           "transforms.json and the points (sparse_pc.ply)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as one JSON object."),
) -> None:
    """Export a run's frames, cameras and memory points as a COLMAP and/or nerfstudio dataset."""

    def body():
        from mirage_cli.export.datasets import target_problem, write_colmap_dataset, write_nerfstudio_dataset
        from mirage_cli.export.run_content import read_run

        if colmap is None and nerfstudio is None:
            raise InputError("name at least one dataset to write", field="--colmap / --nerfstudio")
        for flag, target in (("--colmap", colmap), ("--nerfstudio", nerfstudio)):
            if target is not None and (why := target_problem(target)):
                raise InputError(why, field=flag)
        if colmap is not None and nerfstudio is not None and colmap.absolute() == nerfstudio.absolute():
            raise InputError("the same folder as --colmap; name two folders", field="--nerfstudio")
        content = read_run(run_dir)
        written = {}
        if colmap is not None:
            write_colmap_dataset(content, colmap, binary)
            written["colmap"] = str(colmap)
        if nerfstudio is not None:
            write_nerfstudio_dataset(content, nerfstudio)
            written["nerfstudio"] = str(nerfstudio)
        result = {**written, "frames": len(content.frames), "points": len(content.xyz), "chunks_done": content.chunks_done,
                  "chunks": content.chunks, "checkpoint": content.checkpoint}
        if json_out:
            print_json(result)
        else:
            stopped = "" if content.chunks_done == content.chunks else f" (stopped run: {content.chunks_done} of {content.chunks} chunks)"
            print(f"{len(content.frames)} frames{stopped}, {len(content.xyz)} points -> {', '.join(written.values())}")

    run_body(body)


# --- mirage batch ----------------------------------------------------------------------------------


@app.command(context_settings={"allow_interspersed_args": True})
def batch(
    specs: list[str] = typer.Argument(
        ..., help="Scene specs, then optionally `--` and extra `mirage render` arguments.", metavar="SPEC... [-- RENDER_ARGS...]"
    ),
    out_root: Path = typer.Option(..., "--out-root", help="Each scene renders into OUT_ROOT/<spec stem>."),
    executor: str = typer.Option("local", "--executor", help="local | slurm (submitit)."),
    partition: str | None = typer.Option(None, "--partition", help="SLURM partition."),
    gpus_per_job: int | None = typer.Option(None, "--gpus-per-job", help="GPUs per scene job (local: each job gets its "
                                            "own, from CUDA_VISIBLE_DEVICES or every GPU, default 1, CPU jobs where there is "
                                            "none; slurm: default 1; 0: CPU jobs)."),
    time_min: float | None = typer.Option(
        None, "--time-min", help="Time limit per job in minutes (slurm default 240; local: none). Jobs are requeued and resume."
    ),
    array_parallelism: int | None = typer.Option(
        None, "--array-parallelism", help="At most K scenes at once (local default: one per GPU group, 1 without GPUs)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: render the I-th (0-based) of N shares here; `auto` reads SLURM_ARRAY_TASK_ID/COUNT."
    ),
    signal_delay_s: int = typer.Option(120, "--signal-delay-s", help="Seconds between the warning signal (USR1) and the time limit."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Re-runs of a scene that stops unexpectedly before it counts as failed."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Render the valid specs when some are refused by the "
                                      "checks every spec gets before submission (default: submit nothing, exit 2)."),
    json_out: bool = typer.Option(False, "--json", help="Print the batch summary as one JSON object."),
) -> None:
    """Render many scenes, one job per scene, resuming across preemption and time limits.

    Everything after `--` is passed to `mirage render` (e.g. `-- --preset tiny --steps 2`). Every spec
    is checked first, as `mirage validate` does with those settings: a refused spec stops the batch
    before anything is submitted (exit 2), unless --skip-invalid.
    Exit 0 when every scene is done, 75 when some were interrupted with a checkpoint saved, else 1.
    """

    def body():
        from mirage_cli.batch.check import spec_problems
        from mirage_cli.batch.run import BatchOptions, run_batch, split_render_args, summary_table

        spec_paths, extra = split_render_args(specs)
        flag_values = render_flag_values(extra)
        overrides = render_overrides(**{name: flag_values[name] for name in signature(render_overrides).parameters})
        options = BatchOptions(
            out_root=out_root,
            executor=executor,
            partition=partition,
            gpus_per_job=gpus_per_job,
            time_min=time_min,
            array_parallelism=array_parallelism,
            shard=shard,
            extra_args=extra,
            signal_delay_s=signal_delay_s,
            max_attempts=max_attempts,
            skip_invalid=skip_invalid,
        )
        summary = run_batch(spec_paths, options, on_start=lambda line: err(line),
                            check_spec=lambda spec: spec_problems(spec, overrides, flag_values["backbone"]))
        from rich.console import Console

        Console(stderr=True).print(summary_table(summary))
        if json_out:
            print_json(summary.to_dict())
        return summary.exit_code

    run_body(body)


# --- mirage preview ------------------------------------------------------------------------------


@app.command()
def preview(
    scene: Path = typer.Argument(..., help="Scene spec (YAML) with a start image and its `depth:`."),
    out: Path = typer.Option(Path("preview.mp4"), "--out", "-o", help="MP4 to write."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    depth_model: str | None = typer.Option(None, "--depth-model", help="transformers depth model id/dir, none, or tiny "
                                           "(overrides the spec): lifts a start image that has no `depth:`."),
    preset: Preset = None,
) -> None:
    """Fly the camera path through the start image lifted with its depth (CPU, seconds, holes in magenta)."""

    def body():
        from mirage_cli.render.preview import preview_scene

        check_output(out, "--out")
        result = preview_scene(scene, out, depth_model=depth_model, preset=preset)
        if json_out:
            print_json(result)
        else:
            print(f"{result['path']}: {result['frames']} frames, {result['width']}x{result['height']} at {result['fps']:g} fps")

    run_body(body)


def main() -> None:
    """Console-script entry point."""
    import logging

    from mirage_cli.base.signals import install_for_process

    stop = None
    try:  # a stop raised from here on, before a command body took over, is caught below
        stop = install_for_process()  # before anything slow: a stop at any moment becomes exit 75, never a death
        test_hooks.pause("main")  # tests stop the process here (mirage_cli.testing.pauses)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
        app(standalone_mode=True)
    except SystemExit:
        # click maps its own usage errors to exit 2 already; keep every other code as is.
        raise
    except Interrupted as e:  # stopped before a command body took over (logging setup, argument parsing)
        err(f"interrupted: {e}")
        sys.exit(e.exit_code)
    except Exception as e:  # a bug, not a user error: say so, and keep the traceback for the report
        from mirage_cli.base.crash import one_line, write_crash_report

        err(f"internal error: {one_line(e)}")
        try:
            report = write_crash_report(e)
        except OSError as write_error:
            err(f"(the traceback could not be written to a file: {write_error})")
            err("This is a bug in mirage; please report it with the command you ran.")
        else:
            err(f"This is a bug in mirage; please report it with the command you ran and {report} (the traceback).")
        sys.exit(EXIT_FAILURE)
    finally:
        if stop is not None:
            stop.settle()


from mirage_cli.cli import camera_path as cli_camera_path  # noqa: E402,F401  (registers trajectory on the app)
from mirage_cli.cli import measure as cli_measure  # noqa: E402,F401  (registers eval, bench and calibrate-cache on the app)

if __name__ == "__main__":
    main()
