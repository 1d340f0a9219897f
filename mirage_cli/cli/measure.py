"""The ``mirage`` commands that measure and tune: ``eval``, ``bench`` and ``calibrate-cache``
(registered on the application of ``mirage_cli.cli.main``)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import typer

from mirage_cli.base.errors import InputError, Interrupted
from mirage_cli.base.options import BackboneOptions
from mirage_cli.cli.app import app, err, print_json, run_body
from mirage_cli.cli.flags import (
    BACKBONE,
    MODEL_FLAGS,
    STEP_CACHE_FLAGS,
    Loras,
    Sampler,
    Steps,
)


def _console():
    from rich.console import Console

    return Console()


def _scene_or_example(scene: Path | None) -> Path:
    spec = scene or Path(__file__).resolve().parents[2] / "examples" / "room" / "scene.yaml"
    if not spec.exists():
        raise InputError("no SCENE given and the bundled example is not installed here; pass a scene spec", file=str(spec))
    return spec


# --- mirage eval ----------------------------------------------------------------------------------


@app.command("eval")
def evaluate(
    target: Path = typer.Argument(..., help="A run directory (the --out of a render) or a video file."),
    camera: Path | None = typer.Option(None, "--camera", help="The video's camera path, one camera per frame (any format "
                                       "`mirage trajectory` reads); a run directory gives its own."),
    depth: Path | None = typer.Option(None, "--depth", help="z-depth of every frame (.npy float [N, H, W], the path's units) "
                                      "for the 3D-consistency check; without it only rotation is checked."),
    reference: Path | None = typer.Option(None, "--reference", help="Ground-truth frames (a video, or a folder of images in "
                                          "name order): PSNR and SSIM against them."),
    depth_model: str | None = typer.Option(None, "--depth-model", help="A metric transformers depth model (id or folder) for the "
                                           "3D check, when neither --depth nor a run's memory gives a depth."),
    lpips: Path | None = typer.Option(None, "--lpips", help="Folder with LPIPS's weights (alexnet-owt-7be5be79.pth, alex.pth); "
                                      "default: torch's hub cache and the lpips/torchmetrics packages. Never downloaded."),
    html: Path | None = typer.Option(None, "--html", help="Also write a page with plots along the path and the worst pairs."),
    json_out: bool = typer.Option(False, "--json", help="Print the document (schema mirage-eval/1) on stdout."),
) -> None:
    """Measure camera following, 3D consistency, revisits, temporal stability and seams of a video."""

    def body():
        from mirage_cli.evaluation.command import run_eval

        document = run_eval(target, camera, depth, reference, lpips, html, depth_model)
        if json_out:
            print_json(document)

    run_body(body)


# --- mirage bench --------------------------------------------------------------------------------


@app.command()
@MODEL_FLAGS
@STEP_CACHE_FLAGS
def bench(
    scene: Path | None = typer.Argument(None, help="Scene spec (default: the bundled example)."),
    chunks: int | None = typer.Option(None, "--chunks", help="Render only the first N chunks (default: 1, or every "
                                      "chunk with --full)."),
    repeat: int | None = typer.Option(None, "--repeat", help="Measured rounds after the warm-up (default: 1, or 3 with --full)."),
    full: bool = typer.Option(False, "--full", help="Every chunk, 3 rounds, a warm-up render of every mode (the default is "
                              "quick: the first chunk, one round, one warm-up render)."),
    steps: Steps = None,
    resolution: str | None = typer.Option(None, "--resolution", help="WIDTHxHEIGHT, e.g. 1280x704 (overrides the spec)."),
    frames: int | None = typer.Option(None, "--frames", help="Video length, 4k+1 (overrides the spec)."),
    chunk_frames: int | None = typer.Option(None, "--chunk-frames", help="Frames per chunk, 4k+1 (overrides the spec)."),
    backbone: BackboneOptions = BACKBONE,  # the model flags (MODEL_FLAGS)
    step_cache: dict | None = None,  # the step-cache flags (STEP_CACHE_FLAGS)
    evaluate_: bool = typer.Option(False, "--eval", help="Also measure each mode's video with `mirage eval` (camera following, "
                                   "3D consistency, revisits, stability, seams)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
    lora: Loras = None,
    sampler: Sampler = None,
) -> None:
    """Render a scene with latent memory, RGB memory and no memory; print times, sizes and ratios.
    With --cache: the scene without and with that step cache (speed-up and change of the frames).
    With --sampler dmd: the scene with 50-step UniPC and with the few-step sampler, seconds per chunk
    by stage (--steps then sets the UniPC side's steps)."""

    def body():
        from mirage_cli.measure.bench import bench_table, run_bench
        from mirage_cli.render.prepare import estimate_intrinsics
        from mirage_cli.spec.plan import load_plan, trim_plan

        spec = _scene_or_example(scene)
        if chunks is not None and chunks < 1:
            raise InputError(f"must be at least 1, got {chunks}", field="--chunks")
        if repeat is not None and repeat < 1:
            raise InputError(f"must be at least 1, got {repeat}", field="--repeat")
        quick = not full and chunks is None and repeat is None
        rounds = repeat or (3 if full else 1)
        first = chunks if chunks is not None or full else 1
        from mirage_cli.measure.bench import bench_overrides

        overrides = bench_overrides(spec, steps=steps, resolution=resolution, frames=frames, chunk_frames=chunk_frames)
        from mirage_cli.spec.loras import lora_stack

        def on_run(mode, r, seconds=None):
            err(f"bench: {'warm-up' if r < 0 else f'round {r + 1}/{rounds}'} {mode} "
                + ("..." if seconds is None else f"done in {seconds:.1f} s"))

        if sampler is not None:
            with _stop_ends_bench():
                return _bench_samplers(spec, overrides, sampler.value, steps=steps, loras=lora_stack(lora), step_cache=step_cache,
                                       backbone=backbone, chunks=first, repeat=rounds, json_out=json_out, on_run=on_run)
        plan = load_plan(spec, overrides={**overrides, **step_cache, "loras": lora_stack(lora)}, preset=backbone.preset)
        plan = estimate_intrinsics(plan)

        if step_cache["step_cache.method"] not in (None, "none"):
            from mirage_cli.measure.step_cache_bench import cache_bench_table, run_cache_bench

            with _stop_ends_bench():
                result = run_cache_bench(trim_plan(plan, first), backbone, plan.step_cache, repeat=rounds, on_run=on_run)
            print_json(result) if json_out else _console().print(cache_bench_table(result))
            return
        from mirage_cli.base.signals import GracefulStop, process_stop

        # one stop for every render; between two renders a stop is only noted, and the next render ends the bench
        with GracefulStop() if process_stop() is None else nullcontext(process_stop()) as stop, stop.deferred():
            result = run_bench(plan, backbone, chunks=first, repeat=rounds, on_run=on_run, on_done=on_run, evaluate=evaluate_,
                               warm_up_every_mode=not quick, stop=stop)
        result["quick"] = quick
        if json_out:
            print_json(result)
        else:
            _console().print(bench_table(result))
            if evaluate_ and result["eval"]:
                from mirage_cli.measure.bench import eval_table

                _console().print(eval_table(result))
        if result["interrupted"]:
            raise Interrupted(f"bench {result['interrupted']}; the table has what was measured before (nothing to resume)")

    run_body(body)


@contextmanager
def _stop_ends_bench():
    """A stop signal during one of the bench's renders ends the bench with exit 75, without the render's
    own words about a checkpoint: its run directory is temporary and deleted."""
    try:
        yield
    except Interrupted as e:
        from mirage_cli.measure.bench import stop_signal_of

        raise Interrupted(f"bench stopped by {stop_signal_of(e)} before it finished; "
                          "nothing was measured to the end (nothing to resume)") from None


def _bench_samplers(spec: Path, overrides: dict, sampler: str, *, steps, loras, step_cache: dict, backbone: BackboneOptions,
                    chunks, repeat: int, json_out: bool, on_run) -> None:
    """``mirage bench --sampler``: the scene with UniPC (``--steps`` applies to it) and with ``sampler``."""
    from mirage_cli.measure.sampler_bench import run_sampler_bench, sampler_bench_table
    from mirage_cli.render.prepare import estimate_intrinsics
    from mirage_cli.spec.plan import load_plan, trim_plan

    if step_cache["step_cache.method"] not in (None, "none"):
        raise InputError("compares samplers without a step cache: leave out --cache (bench it on its own)", field="--sampler")
    if sampler == "unipc":
        raise InputError("compares a few-step sampler with 50-step UniPC: name one (dmd)", field="--sampler")
    common = {**overrides, "steps": None, "loras": loras}
    few_step = estimate_intrinsics(trim_plan(load_plan(spec, overrides={**common, "sampler": sampler}, preset=backbone.preset), chunks))
    baseline = estimate_intrinsics(trim_plan(load_plan(spec, overrides={**common, "sampler": "unipc", "steps": steps},
                                                           preset=backbone.preset), chunks))
    result = run_sampler_bench(baseline, few_step, backbone, repeat=repeat, on_run=on_run)
    print_json(result) if json_out else _console().print(sampler_bench_table(result))


# --- mirage calibrate-cache --------------------------------------------------------------------


@app.command("calibrate-cache")
@MODEL_FLAGS
def calibrate_cache(
    scene: Path = typer.Argument(..., help="Scene spec (YAML): its model, size, steps and first chunk are measured."),
    out: Path = typer.Option(..., "--out", "-o", help="The calibration file to write (JSON; give it to step_cache.calibration)."),
    steps: Steps = None,
    resolution: str | None = typer.Option(None, "--resolution", help="WIDTHxHEIGHT (overrides the spec)."),
    frames: int | None = typer.Option(None, "--frames", help="Video length, 4k+1 (overrides the spec; only the first chunk runs)."),
    chunk_frames: int | None = typer.Option(None, "--chunk-frames", help="Frames per chunk, 4k+1 (overrides the spec)."),
    backbone: BackboneOptions = BACKBONE,  # the model flags (MODEL_FLAGS)
    json_out: bool = typer.Option(False, "--json", help="Print the written calibration on stdout."),
) -> None:
    """Measure MagCache's per-step ratios for this model and size (one chunk, nothing skipped) into --out."""

    def body():
        from mirage_cli.base.files import check_output
        from mirage_cli.measure.bench import bench_overrides
        from mirage_cli.measure.calibration import calibrate_mag_cache
        from mirage_cli.render.prepare import estimate_intrinsics
        from mirage_cli.spec.plan import load_plan

        check_output(out, "--out")
        overrides = bench_overrides(scene, steps=steps, resolution=resolution, frames=frames, chunk_frames=chunk_frames)
        plan = estimate_intrinsics(load_plan(scene, overrides={**overrides, "step_cache": {"method": "none"}},
                                                         preset=backbone.preset))
        err(f"calibrate-cache: rendering the first chunk ({plan.chunks[0].end + 1} frames, {plan.steps} steps) without skipping")
        content = calibrate_mag_cache(plan, backbone, out)
        err(f"wrote {out}: {len(content['ratios'])} ratios for {content['model']} at {content['resolution']}")
        if json_out:
            print_json(content)

    run_body(body)
