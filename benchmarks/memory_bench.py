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
import importlib.util
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mirage_cli.geometry import projection as geometry
from mirage_cli.geometry import splatting
from mirage_cli.memory import LatentSpatialMemory, RGBPointMemory
from mirage_cli.memory.points import UNEXPLAINED_DEPTH_MARGIN
from mirage_cli.testing import synthetic_room as S

ROLLOUT = "insert_unexplained (the rollout's)"
OFFICIAL = "official LatentPointCloud (its code)"
PER_FRAME = "per-frame rule (until c5c6df9)"


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
    z = geometry.cell_centre_depth(depth, stride)  # [T, h, w]
    ok = geometry.valid_depth(z)
    xyz = geometry.backproject(torch.where(ok, z, torch.ones_like(z)), geometry.latent_intrinsics(K.double(), stride), wfc.double())
    return xyz[ok].float(), lat.permute(0, 2, 3, 1)[ok]


def insertion_runs(lat: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, wfc: torch.Tensor, frames: torch.Tensor) -> dict:
    """The ways to put one chunk's latent frames into an empty memory, by name (the chunk-wide rule:
    the rollout's insertion before the next-chunk table, for its transient memory)."""
    return {
        "voxel-fused insert_unexplained": lambda: LatentSpatialMemory().insert_unexplained(lat, depth, K, wfc, frame_index=frames),
        "chunk-wide rule (before)": lambda: chunk_wide_rule(lat, depth, K, wfc, frames),
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


# --- what the memory keeps: the next chunk's views ---------------------------------------------------


def rollout_views(height: int, width: int, frames: int, log) -> dict:
    """One chunk and the next on one path (``chunk_cameras`` over both): the chunk's latent frames
    (pixel frames 0, 4, .., frames - 1) with exact depth, and the next chunk's latent views (pixel
    frames frames + 3, .., 2 frames + 2) with their linear encodings, the targets."""
    K = torch.tensor(S.intrinsics(height, width))
    cams = chunk_cameras(2 * frames + 3)
    chunk, after = np.arange(0, frames, 4), np.arange(frames + 3, 2 * frames + 3, 4)
    log(f"ray-casting {chunk.size} + {after.size} latent frames at {width}x{height} (not timed) ...")
    rgb, depth = S.render_views(K, cams[chunk], height, width)
    rgb_next, _ = S.render_views(K, cams[after], height, width)
    return {
        "K": K, "latents": S.linear_encoder(rgb), "depth": depth, "world_from_cam": torch.tensor(cams[chunk]),
        "frames": torch.tensor(chunk), "targets": torch.tensor(cams[after]), "target_latents": S.linear_encoder(rgb_next),
    }


def per_frame_rule(lat, depth, K, wfc, frames, stride: int = 16) -> LatentSpatialMemory:
    """The rollout's insertion until c5c6df9, rebuilt from the memory's public calls: frame after
    frame, a query of the memory so far at the frame's camera, then insert the cells it leaves empty
    or renders clearly behind the new depth."""
    mem = LatentSpatialMemory(stride=stride)
    size = tuple(depth.shape[-2:])
    for t in range(lat.shape[0]):
        z = geometry.cell_centre_depth(depth[t], stride)  # [h, w]
        v = mem.query(K, wfc[t], size, mark_seen=False)
        explained = v.mask[0] & (z >= v.depth[0] * (1.0 - UNEXPLAINED_DEPTH_MARGIN))
        mem.insert(lat[t], depth[t], K, wfc[t], keep=~explained, frame_index=int(frames[t]))
    return mem


def chunk_wide_rule(lat, depth, K, wfc, frames, stride: int = 16) -> LatentSpatialMemory:
    """The rollout's insertion from c5c6df9 until the next-chunk table, into an empty memory: a cell
    the previous frame saw (lifted, projected into camera t - 1, a depth there within the margin)
    is not inserted, whatever the footprint that frame left."""
    T = lat.shape[0]
    z = geometry.cell_centre_depth(depth, stride)  # [T, h, w]
    h, w = z.shape[-2:]
    K_grid = geometry.latent_intrinsics(K.double().expand(T, 3, 3), stride)
    valid = geometry.valid_depth(z)
    lifted = torch.where(valid, z, torch.ones_like(z))
    seen = torch.zeros_like(valid)
    prev_from_next = geometry.invert_rigid(wfc[:-1].double()) @ wfc[1:].double()
    uv, there = geometry.reproject(lifted[1:], K_grid[1:], K_grid[:-1], prev_from_next)
    u, v = torch.round(uv[..., 0]).long(), torch.round(uv[..., 1]).long()
    inside = (there > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    held = z[:-1].flatten(1).gather(1, (v.clamp(0, h - 1) * w + u.clamp(0, w - 1)).flatten(1)).view(T - 1, h, w)
    seen[1:] = inside & geometry.valid_depth(held) & ((there - held).abs() <= UNEXPLAINED_DEPTH_MARGIN * held) & valid[1:]
    mem = LatentSpatialMemory(stride=stride)
    mem.insert(lat, depth, K, wfc, keep=~seen, frame_index=frames)
    return mem


def official_cloud(module, lat, depth, K, wfc):
    """The official ``LatentPointCloud`` of one chunk, built as its pipeline does: the first frame,
    then ``update`` with the rest (every cell appended)."""
    cloud = module.LatentPointCloud.from_geometry(depth[0], K.float(), wfc[0].float(), lat[0][:, None], device="cpu")
    cloud.update(depth[1:], K.float().expand(lat.shape[0] - 1, 3, 3), wfc[1:].float(), lat[1:])
    return cloud


def load_official(repo: Path):
    """``src/mirage/latent_point_cloud.py`` of a LatentSpatialMemory checkout, imported as it is."""
    path = repo / "src" / "mirage" / "latent_point_cloud.py"
    if not path.is_file():
        raise SystemExit(f"--mirage-repo: {repo} is not a checkout of microsoft/LatentSpatialMemory (no {path.relative_to(repo)})")
    spec = importlib.util.spec_from_file_location("official_latent_point_cloud", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nearest_query(xyz, latents, K, targets, size, stride: int = 16):
    """Appended points queried as the official ``project`` does (nearest cell, nearest depth wins),
    batched: latents [T, C, h, w], mask [T, h, w]."""
    T = targets.shape[0]
    h, w = size[0] // stride, size[1] // stride
    K_lat = geometry.latent_intrinsics(K.double().expand(T, 3, 3), stride).float()
    pts = geometry.transform_points(geometry.invert_rigid(targets.double()).float(), xyz.float())  # [T, N, 3]
    uv, z = geometry.project(pts, K_lat)
    winner, _ = splatting.nearest_cell(uv, z, z > 0, (h, w))  # [T, h, w]
    mask = winner >= 0
    out = latents.float()[winner.clamp(min=0)] * mask[..., None]  # [T, h, w, C]
    return out.permute(0, 3, 1, 2), mask


def next_chunk_rows(height: int, width: int, frames: int, rounds: int, log, mirage_repo: Path | None = None) -> dict:
    """Each way to put the chunk's latent frames into an empty memory, then the next chunk's views:
    insert time (1 thread, alternating rounds, median), points, bytes, coverage and error of the
    query at the next chunk's views (error: relative L2 against the targets' encodings, on the
    covered cells, and on the cells every way covers), the confident cells a render pins, and the
    order sensitivity (the same frames given reversed, with their indices: cells whose coverage
    differs, relative difference of the queried latents)."""
    data = rollout_views(height, width, frames, log)
    K, targets, size = data["K"], data["targets"], (height, width)
    forward = (data["latents"], data["depth"], K, data["world_from_cam"], data["frames"])
    back = torch.arange(forward[0].shape[0] - 1, -1, -1)
    reverse = tuple(x if x is K else x[back].contiguous() for x in forward)

    def query(mem):
        v = mem.query(K, targets, size, mark_seen=False)
        return v.latents.float(), v.mask, v.confident

    def ours(build):
        return (lambda args: build(*args)), query, lambda mem: (mem.num_points, mem.nbytes)

    def rollout_rule(lat, depth, K_, wfc, idx):
        mem = LatentSpatialMemory()
        mem.insert_unexplained(lat, depth, K_, wfc, frame_index=idx)
        return mem

    def plain(lat, depth, K_, wfc, idx):
        mem = LatentSpatialMemory()
        mem.insert(lat, depth, K_, wfc, frame_index=idx)
        return mem

    ways = {
        ROLLOUT: ours(rollout_rule),
        PER_FRAME: ours(per_frame_rule),
        "chunk-wide rule (c5c6df9 on)": ours(chunk_wide_rule),
        "insert (every cell, fused)": ours(plain),
        "append-only": (lambda args: append_only_insert(*args[:4]),
                        lambda pts: (*_nearest_query(pts[0], pts[1], K, targets, size), None),
                        lambda pts: (pts[0].shape[0], pts[0].numel() * 4 + pts[1].numel() * 4)),
    }
    if mirage_repo is not None:
        official = load_official(mirage_repo)

        def official_query(cloud):
            outs = [cloud.project(targets[t].float()) for t in range(targets.shape[0])]
            return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs]), None
        ways[OFFICIAL] = (
            lambda args: official_cloud(official, *args[:4]), official_query,
            lambda c: (c.points_world.shape[0], sum(t.numel() * t.element_size() for t in (c.points_world, c.features, c.valid_mask))))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # timings on one thread; the official project's overlapping writes are ordered only on one
    try:
        return _next_chunk_measured(ways, forward, reverse, data["target_latents"], rounds, log)
    finally:
        torch.set_num_threads(threads)


def _next_chunk_measured(ways: dict, forward: tuple, reverse: tuple, truth: torch.Tensor, rounds: int, log) -> dict:
    """``next_chunk_rows`` once its ways and inputs are set up: alternating timed rounds, then the queries."""
    seconds = {name: [] for name in ways}
    for _ in range(rounds):
        for name, (run, _, _) in ways.items():
            t0 = time.perf_counter()
            run(forward)
            seconds[name].append(time.perf_counter() - t0)
    log("querying the next chunk's views ...")
    out, views = {}, {}
    for name, (run, query, size_of) in ways.items():
        held = run(forward)
        lat_q, mask, confident = query(held)
        lat_r, mask_r, _ = query(run(reverse))
        points, nbytes = size_of(held)
        views[name] = (lat_q, mask, confident)
        out[name] = {
            "seconds": statistics.median(seconds[name]), "points": points, "bytes": nbytes,
            "coverage": float(mask.float().mean()), "error": _masked_error(lat_q, truth, mask),
            "pinned": None if confident is None else float(confident.float().mean()),
            "pinned_error": None if confident is None else _masked_error(lat_q, truth, confident),
            "reversed_cells": float((mask != mask_r).float().mean()),
            "reversed_latents": _rel(lat_r, lat_q),
        }
    common = torch.stack([m for _, m, _ in views.values()]).all(0)
    for name, (lat_q, _, _) in views.items():
        out[name]["common_error"] = _masked_error(lat_q, truth, common)
    ours, per_frame = views[ROLLOUT], views[PER_FRAME]
    both = ours[1] & per_frame[1]  # the cells the rollout's rule and the per-frame rule both cover
    versus_per_frame = {"both": float(both.float().mean()), "ours": _masked_error(ours[0], truth, both),
                        "per_frame": _masked_error(per_frame[0], truth, both)}
    return {"rows": out, "views": int(truth.shape[0]), "frames": int(forward[0].shape[0]), "common": float(common.float().mean()),
            "versus_per_frame": versus_per_frame}


def _masked_error(latents: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """Relative L2 of ``latents`` against ``truth`` [T, C, h, w] on the cells of ``mask`` [T, h, w]."""
    if not bool(mask.any()):
        return float("nan")
    return _rel(latents.permute(0, 2, 3, 1)[mask], truth.permute(0, 2, 3, 1)[mask])


def print_next_chunk(res: dict, height: int, width: int) -> None:
    rows = res["rows"]
    base = rows["append-only"]["seconds"]

    def opt(x):
        return "-" if x is None else f"{x:.3f}"
    print()
    print(f"What the memory keeps: {res['frames']} latent frames at {width}x{height} into an empty memory (1 thread, median of the "
          f"rounds), then a query at the next chunk's {res['views']} views")
    print("| insertion | insert s | vs append | points | MB | coverage | error | error, common cells | pinned | pinned error "
          "| reversed: cells differ | reversed: latents differ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.4f} | {r['seconds'] / base:.2f}x | {r['points']} | {r['bytes'] / 1e6:.2f} | {r['coverage']:.3f} "
              f"| {r['error']:.4f} | {r['common_error']:.4f} | {opt(r['pinned'])} | {opt(r['pinned_error'])} "
              f"| {r['reversed_cells']:.4f} | {r['reversed_latents']:.4f} |")
    print(f"(error: relative L2 against the next views' encodings on the cells each covers; common cells: the {res['common']:.1%} "
          "every row covers; pinned: confident cells, what a render conditions on; reversed: the same frames given in reverse order)")
    ours, per_frame, official = rows[ROLLOUT], rows[PER_FRAME], rows.get(OFFICIAL)
    vs = res["versus_per_frame"]
    print(f"{ROLLOUT} against the {PER_FRAME}: coverage {ours['coverage']:.3f} vs {per_frame['coverage']:.3f}; on the {vs['both']:.1%} "
          f"both cover, error {vs['ours']:.4f} vs {vs['per_frame']:.4f}; pinned {opt(ours['pinned'])} vs {opt(per_frame['pinned'])} "
          f"at an error of {opt(ours['pinned_error'])} vs {opt(per_frame['pinned_error'])}")
    if official is not None:
        print(f"{ROLLOUT} against the {OFFICIAL} in this run: {ours['seconds'] / official['seconds']:.2f}x its time, "
              f"coverage {ours['coverage']:.3f} vs {official['coverage']:.3f}, error on the common cells "
              f"{ours['common_error']:.4f} vs {official['common_error']:.4f}")


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
    p.add_argument("--only-next-chunk", action="store_true", help="only the next-chunk table (what each insertion keeps)")
    p.add_argument("--next-rounds", type=int, default=11, help="alternating rounds of the next-chunk table (median)")
    p.add_argument("--mirage-repo", type=Path, help="a LatentSpatialMemory checkout: its LatentPointCloud joins the next-chunk table")
    args = p.parse_args(argv)
    if (args.frames - 1) % 4:
        p.error("--frames must be 4k+1")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.only_next_chunk:
        next_chunk = next_chunk_rows(args.height, args.width, args.frames, args.next_rounds, log, args.mirage_repo)
        print_next_chunk(next_chunk, args.height, args.width)
        return 0
    if args.only_insertion:
        print_fused_vs_append(fused_vs_append_rows(args.height, args.width, args.frames, args.rounds, log), args.height, args.width)
        return 0
    if not args.skip_accuracy:
        print_accuracy(accuracy_rows())
        sys.stdout.flush()
    if not args.skip_speed:
        print_speed(speed_rows(args.height, args.width, args.frames, args.repeat, log), args.height, args.width, args.frames)
        print_fused_vs_append(fused_vs_append_rows(args.height, args.width, args.frames, args.rounds, log), args.height, args.width)
        next_chunk = next_chunk_rows(args.height, args.width, args.frames, args.next_rounds, log, args.mirage_repo)
        print_next_chunk(next_chunk, args.height, args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
