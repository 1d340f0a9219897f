"""Latent spatial memory vs RGB point-cloud memory on the synthetic room: accuracy, speed, size.

    python benchmarks/memory_bench.py                 # both tables (several minutes on a laptop CPU)
    python benchmarks/memory_bench.py --skip-speed    # accuracy table only (seconds)
    python benchmarks/memory_bench.py --only-insertion  # voxel-fused vs append-only insertion (a minute)

Accuracy (256x448, 60 deg vertical fov, camera inside the room): the memory holds one source view
and is queried at a target camera. Latent: cell coverage and relative L2 error of the warped
latents against the linear encoding of the target view, on covered cells. RGB baseline: pixel
coverage of its render and relative L2 error of the render's linear encoding, on cells whose 16x16
block is fully covered.

Speed and size (one 121-frame chunk at 704x1280 by default): the latent memory takes the chunk's 31
latent frames (every 4th pixel frame, as the VAE lays them out), the RGB memory its 121 pixel
frames. Each inserts its frames with ``insert_unexplained`` (a frame only adds what neither the
memory nor the previous frame explains, so the cache grows with the explored surface) and then answers a query at every
one of its frames' cameras (31 latent cells grids / 121 full-resolution renders). Frames are
ray-cast first and not timed; the RGB path's VAE encode of its renders (the rollout's extra cost)
is not included either. Each timing is the minimum over runs: 3 for the (cheap) latent memory,
``--repeat`` (default 1) for the RGB memory.
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mirage_cli.memory import LatentSpatialMemory, RGBPointMemory
from mirage_cli.testing import synthetic_room as S


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def accuracy_rows(height: int = 256, width: int = 448) -> list[dict]:
    """One row per scenario (plus dolly-in with nearest-cell splatting), see the module docstring."""
    K = torch.tensor(S.intrinsics(height, width))
    rows = []
    for sc in S.scenarios():
        rgb_s, d_s = S.render(K, sc.source, height, width)
        rgb_t, _ = S.render(K, sc.target, height, width)
        lat_s, lat_t = S.linear_encoder(rgb_s), S.linear_encoder(rgb_t)
        target = torch.tensor(sc.target)
        lat_mem = LatentSpatialMemory()
        lat_mem.insert(lat_s, d_s, K, torch.tensor(sc.source))
        rgb_mem = RGBPointMemory()
        rgb_mem.insert(rgb_s, d_s, K, torch.tensor(sc.source))
        variants = [("", {})]
        if sc.name.startswith("dolly"):
            variants.append((" (nearest cell)", {"max_half_size": 0.0}))
        for suffix, kw in variants:
            v = lat_mem.query(K, target, (height, width), mark_seen=False, **kw)
            m = v.mask[0]
            r = rgb_mem.query(K, target, (height, width), mark_seen=False, **kw)
            full = torch.nn.functional.avg_pool2d(r.mask[0][None, None].float(), 16)[0, 0] == 1
            enc = S.linear_encoder(r.rgb[0])
            rows.append(
                dict(
                    scenario=sc.name + suffix,
                    latent_coverage=float(m.float().mean()),
                    latent_error=_rel(v.latents[0].float()[:, m], lat_t[:, m]) if m.any() else float("nan"),
                    latent_confident=float(v.confident[0].float().mean()),
                    rgb_coverage=r.coverage,
                    rgb_error=_rel(enc[:, full], lat_t[:, full]) if full.any() else float("nan"),
                )
            )
    return rows


def chunk_cameras(frames: int) -> np.ndarray:
    """float64 [frames, 4, 4]: a smooth forward move with a pan to the right and a slight tilt."""
    out = []
    for k in range(frames):
        s = k / max(frames - 1, 1)
        e = 0.5 - 0.5 * math.cos(math.pi * s)  # ease in and out
        out.append(S.world_from_cam((0.4 * e, -0.05 * e, 0.9 * e), 20.0 * e, -3.0 * e))
    return np.stack(out)


def _timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def speed_rows(height: int, width: int, frames: int, repeat: int, log) -> dict:
    K = torch.tensor(S.intrinsics(height, width))
    cams = chunk_cameras(frames)
    log(f"ray-casting {frames} frames at {width}x{height} (not timed) ...")
    t0 = time.perf_counter()
    rgb, depth = S.render_views(K, cams, height, width)  # [F, 3, H, W], [F, H, W]
    log(f"  {time.perf_counter() - t0:.0f} s")
    lat_idx = torch.arange(0, frames, 4)  # latent frame k <-> pixel frame 4k
    lat = S.linear_encoder(rgb[lat_idx])  # [T, 48, h, w]
    wfc = torch.tensor(cams)

    def latent_run():
        mem = LatentSpatialMemory()
        t_ins = time.perf_counter()
        mem.insert_unexplained(lat, depth[lat_idx], K, wfc[lat_idx], frame_index=lat_idx)
        t_q = time.perf_counter()
        mem.query(K, wfc[lat_idx], (height, width))
        return mem, t_q - t_ins, time.perf_counter() - t_q

    def rgb_run():
        mem = RGBPointMemory()
        t_ins = time.perf_counter()
        mem.insert_unexplained(rgb, depth, K, wfc, frame_index=torch.arange(frames))
        t_q = time.perf_counter()
        mem.query(K, wfc, (height, width))
        return mem, t_q - t_ins, time.perf_counter() - t_q

    out = {}
    for name, run in (("latent", latent_run), ("rgb", rgb_run)):
        log(f"{name} memory: insert + query ...")
        runs = [run() for _ in range(max(repeat, 3) if name == "latent" else repeat)]
        mem = runs[-1][0]
        out[name] = dict(
            frames=int(lat_idx.numel() if name == "latent" else frames),
            insert_s=min(r[1] for r in runs),
            query_s=min(r[2] for r in runs),
            total_s=min(r[1] + r[2] for r in runs),
            points=mem.num_points,
            nbytes=mem.nbytes,
        )
        log(f"  {out[name]['total_s']:.2f} s, {mem.num_points} points, {mem.nbytes / 2**20:.1f} MiB")
    # the plain batched insert (no per-frame query) for reference, latent only
    out["latent_plain_insert_s"], _ = _timed(lambda: LatentSpatialMemory().insert(lat, depth[lat_idx], K, wfc[lat_idx]), max(repeat, 3))
    return out


def print_accuracy(rows: list[dict]) -> None:
    print("Accuracy on the synthetic room (256x448, 60 deg vertical fov; error = relative L2 of linear-encoded latents)")
    print(f"| {'scenario':<28} | latent coverage | latent error | latent confident | RGB coverage | RGB error |")
    print(f"|{'-' * 30}|----------------:|-------------:|-----------------:|-------------:|----------:|")
    for r in rows:
        print(
            f"| {r['scenario']:<28} | {r['latent_coverage']:>15.1%} | {r['latent_error']:>12.2%} | {r['latent_confident']:>16.1%} |"
            f" {r['rgb_coverage']:>12.1%} | {r['rgb_error']:>9.2%} |"
        )


def print_speed(res: dict, height: int, width: int, frames: int) -> None:
    lat, rgb = res["latent"], res["rgb"]
    print()
    print(f"Speed and size: one {frames}-frame chunk at {width}x{height} on {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| memory | frames | insert s | query s | insert + query s | points | bytes |")
    print("|--------|-------:|---------:|--------:|-----------------:|-------:|------:|")
    for name, r in (("latent", lat), ("RGB", rgb)):
        print(f"| {name:<6} | {r['frames']:>6} | {r['insert_s']:>8.3f} | {r['query_s']:>7.3f} | {r['total_s']:>16.3f} "
              f"| {r['points']:>6} | {r['nbytes']:>5} |")
    print(f"| RGB / latent | | {rgb['insert_s'] / lat['insert_s']:.1f}x | {rgb['query_s'] / lat['query_s']:.1f}x | "
          f"{rgb['total_s'] / lat['total_s']:.1f}x | {rgb['points'] / max(lat['points'], 1):.1f}x | "
          f"{rgb['nbytes'] / max(lat['nbytes'], 1):.1f}x |")
    print(f"(latent plain batched insert of the {lat['frames']} frames, no per-frame query: {res['latent_plain_insert_s']:.3f} s)")


def append_only_insert(lat: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, wfc: torch.Tensor, stride: int = 16):
    """The append-only way to grow a latent point cloud (what the official Mirage code does per
    chunk): lift every latent cell with valid depth to one world point and append it; no voxel
    fusion, no plane test, no query. Returns (xyz [M, 3], latents [M, C])."""
    from mirage_cli.geometry import projection as geometry

    z = geometry.cell_centre_depth(depth, stride)  # [T, h, w]
    ok = geometry.valid_depth(z)
    xyz = geometry.backproject(torch.where(ok, z, torch.ones_like(z)), geometry.latent_intrinsics(K.double(), stride), wfc.double())
    return xyz[ok].float(), lat.permute(0, 2, 3, 1)[ok]


def insertion_runs(lat: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, wfc: torch.Tensor, frames: torch.Tensor) -> dict:
    """The three ways to put one chunk's latent frames into an empty memory, by name."""
    return {
        "voxel-fused insert_unexplained": lambda: LatentSpatialMemory().insert_unexplained(lat, depth, K, wfc, frame_index=frames),
        "voxel-fused insert": lambda: LatentSpatialMemory().insert(lat, depth, K, wfc, frame_index=frames),
        "append-only": lambda: append_only_insert(lat, depth, K, wfc),
    }


def _peak_growth_of(name: str, inputs: Path) -> int:
    """Bytes the resident set grows by at its peak while ``name`` runs once on the chunk: in a fresh
    process that holds the inputs already (mapped from the file and read once) and has run ``name`` on
    the chunk's first frame (one-time costs such as library set-up, without a full run's freed memory
    to hide the next one's), the kernel's peak RSS is reset (``/proc/self/clear_refs``, Linux) and
    compared with the RSS before the run."""
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[3]); import memory_bench as B; torch.set_num_threads(1); "
        "args = torch.load(sys.argv[1], mmap=True); [a.sum() for a in args]; run = B.insertion_runs(*args)[sys.argv[2]]; "
        "lat, depth, K, wfc, frames = args; B.insertion_runs(lat[:1], depth[:1], K, wfc[:1], frames[:1])[sys.argv[2]](); "
        "kib = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]); "
        "before = kib('VmRSS:'); open('/proc/self/clear_refs', 'w').write('5'); run(); "
        "print((kib('VmHWM:') - before) * 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(inputs), name, str(Path(__file__).parent)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"measuring the transient memory of {name} failed (exit {out.returncode}):\n{out.stderr}")
    return int(out.stdout.split()[-1])


def fused_vs_append_rows(height: int, width: int, frames: int, rounds: int, log) -> dict:
    """Voxel-fused insertion (``insert_unexplained``, what the rollout calls, and plain ``insert``)
    against append-only, on the chunk's latent frames into an empty memory: time alternating, 1
    thread, best of ``rounds``; transient memory (peak RSS growth) of one run in a fresh process each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        K = torch.tensor(S.intrinsics(height, width))
        cams = chunk_cameras(frames)
        lat_idx = torch.arange(0, frames, 4)
        log(f"ray-casting {lat_idx.numel()} latent frames at {width}x{height} (not timed) ...")
        rgb, depth = S.render_views(K, cams[lat_idx.numpy()], height, width)
        args = (S.linear_encoder(rgb), depth, K, torch.tensor(cams)[lat_idx], lat_idx)
        runs = insertion_runs(*args)
        best = {name: float("inf") for name in runs}
        for _ in range(rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            inputs = Path(tmp) / "chunk.pt"
            torch.save(args, inputs)
            log("transient memory, one fresh process per way ...")
            growth = {name: _peak_growth_of(name, inputs) for name in runs}
        return {"seconds": best, "frames": int(lat_idx.numel()), "peak_growth_bytes": growth}
    finally:
        torch.set_num_threads(threads)


def print_fused_vs_append(res: dict, height: int, width: int) -> None:
    sec = res["seconds"]
    base = sec["append-only"]
    print()
    print(f"Voxel-fused vs append-only: {res['frames']} latent frames at {width}x{height} into an empty memory, "
          "1 thread, best of the rounds")
    print("| insertion | s | vs append-only | transient MiB |")
    print("|---|---:|---:|---:|")
    for name, s in sec.items():
        print(f"| {name} | {s:.3f} | {s / base:.2f}x | {res['peak_growth_bytes'][name] / 2**20:.0f} |")
    print("(transient: growth of the peak RSS over one run, in a fresh process that holds the chunk and ran once on its first frame)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--frames", type=int, default=121, help="pixel frames in the chunk, 4k+1")
    p.add_argument("--repeat", type=int, default=1, help="timed runs; the minimum is reported")
    p.add_argument("--only-insertion", action="store_true", help="only the voxel-fused vs append-only table")
    p.add_argument("--rounds", type=int, default=15, help="alternating rounds of the insertion table")
    args = p.parse_args(argv)
    if (args.frames - 1) % 4:
        p.error("--frames must be 4k+1")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.only_insertion:
        print_fused_vs_append(fused_vs_append_rows(args.height, args.width, args.frames, args.rounds, log), args.height, args.width)
        return 0
    if not args.skip_accuracy:
        print_accuracy(accuracy_rows())
        sys.stdout.flush()
    if not args.skip_speed:
        print_speed(speed_rows(args.height, args.width, args.frames, args.repeat, log), args.height, args.width, args.frames)
        print_fused_vs_append(fused_vs_append_rows(args.height, args.width, args.frames, args.rounds, log), args.height, args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
