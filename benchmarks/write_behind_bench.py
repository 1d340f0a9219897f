"""What writing a chunk's files behind the next chunk saves (one run, ratios).

    python benchmarks/write_behind_bench.py [--resolution 640x352] [--frames 33] [--chunk-frames 17]
                                            [--steps 4] [--device cpu] [--rounds 2]

The example room rendered with the tiny preset (random tiny components, nothing to download), in one
process and one backbone, alternately one after the other (``write_behind=False``: segment, PNG frames,
latents and checkpoint written in the render thread after each chunk) and written behind the next
chunk (``mirage_cli.render.write_behind``), each ``--rounds`` times after a warm-up render. From each
render's profile: the mean wall time of a chunk, the time of the whole render, the writes (in the
render thread, or in the background beside the next chunk) and the time the render thread waited for
the writer. Both give the same files (tests/test_write_behind.py); this only times them.

Prints a Markdown table; nothing is asserted (tests assert behaviour, benchmarks report numbers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mirage_cli.base.options import BackboneOptions, RenderOptions, VideoOptions
from mirage_cli.render.session import RenderEvents, load_backbone_for, render
from mirage_cli.spec.plan import load_plan

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "room" / "scene.yaml"
WRITES = ("mp4_write", "outputs_write", "checkpoint_write")


def one_render(plan, backbone, options: BackboneOptions, out: Path, write_behind: bool) -> dict:
    """Render ``plan`` into a fresh ``out``; returns the numbers of its profile."""
    frames_dir = out.with_name(out.name + "-frames")
    video = VideoOptions(frames_dir=frames_dir)
    t0 = time.perf_counter()
    result = render(plan, RenderOptions(out=out, backbone=options, video=video, restart=True), RenderEvents(),
                    backbone=backbone, write_behind=write_behind)
    wall = time.perf_counter() - t0
    chunks = result.report["chunks"]
    stages = result.report["stages"]
    return {
        "chunk_wall": statistics.mean(c["wall_seconds"] for c in chunks),
        "render_wall": wall,
        "writes": sum(stages[n]["seconds"] for n in WRITES if n in stages and n != "checkpoint_write")
        + sum(c["stages"].get("checkpoint_write", 0.0) for c in chunks),
        "background": stages.get("background_write", {}).get("seconds", 0.0),
        "wait": stages.get("write_wait", {}).get("seconds", 0.0),
        "decode": stages["decode"]["seconds"],
        "denoise": stages["denoise"]["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="640x352")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--chunk-frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    plan = load_plan(EXAMPLE, {"resolution": args.resolution, "frames": args.frames, "chunk_frames": args.chunk_frames,
                               "steps": args.steps, "memory.mode": "latent", "image": str(EXAMPLE.parent / "start.png"),
                               "depth": str(EXAMPLE.parent / "depth.npy")})
    options = BackboneOptions(preset="tiny", device=args.device)
    backbone = load_backbone_for(plan, options)
    numbers: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        one_render(plan, backbone, options, Path(tmp) / "warmup", True)
        for r in range(args.rounds):
            for behind in (False, True):
                numbers[behind].append(one_render(plan, backbone, options, Path(tmp) / f"run-{behind}-{r}", behind))

    mean = {b: {k: statistics.mean(n[k] for n in runs) for k in runs[0]} for b, runs in numbers.items()}
    seq, bg = mean[False], mean[True]
    print(f"tiny preset, {args.resolution}, {args.frames} frames in chunks of {args.chunk_frames}, {args.steps} steps, "
          f"{len(plan.chunks)} chunks, --frames PNGs, device {backbone.device}, mean of {args.rounds} round(s)\n")
    print("| | one after the other | written behind | ratio |")
    print("|---|---|---|---|")
    for key, label in (("chunk_wall", "s per chunk (wall)"), ("render_wall", "s per render"), ("denoise", "denoise s"),
                       ("decode", "decode s")):
        print(f"| {label} | {seq[key]:.3f} | {bg[key]:.3f} | {bg[key] / seq[key]:.2f} |")
    print(f"| writes in the render thread s | {seq['writes']:.3f} | {bg['wait']:.3f} (waiting) | |")
    print(f"| writes in the background s | 0 | {bg['background']:.3f} | |")


if __name__ == "__main__":
    main()
