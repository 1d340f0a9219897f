"""Slow, obviously correct twins of the fast geometry (``mirage_cli.geometry.projection`` and
``mirage_cli.geometry.splatting``), one per function.

Each twin computes the same thing with Python loops, one matrix, pixel, point or cell at a time,
straight from the definition, and carries the fast function's name. tests/test_geometry.py compares
the two on random inputs over several batch shapes. Nothing in the package calls these.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def latent_intrinsics(K: Tensor, stride: int) -> Tensor:
    """One matrix at a time, from the cell-centre definition: pixel = stride * cell + (stride-1)/2."""
    out = K.clone().reshape(-1, 3, 3)
    for m in out:
        # pixel u = fx X/Z + cx and u = s u' + (s-1)/2  =>  u' = (fx/s) X/Z + (cx - (s-1)/2)/s
        fx, sk, cx, fy, cy = m[0, 0].item(), m[0, 1].item(), m[0, 2].item(), m[1, 1].item(), m[1, 2].item()
        m[0, 0], m[0, 1], m[0, 2] = fx / stride, sk / stride, (cx - (stride - 1) / 2) / stride
        m[1, 1], m[1, 2] = fy / stride, (cy - (stride - 1) / 2) / stride
    return out.reshape(K.shape)


def cell_centre_depth(depth: Tensor, stride: int) -> Tensor:
    lead, (H, W) = depth.shape[:-2], depth.shape[-2:]
    flat = depth.reshape(-1, H, W)
    out = torch.full((flat.shape[0], H // stride, W // stride), float("nan"), dtype=depth.dtype)
    c = stride // 2
    rows = [c - 1, c] if stride % 2 == 0 else [c]
    for b in range(flat.shape[0]):
        for i in range(H // stride):
            for j in range(W // stride):
                vals = [flat[b, i * stride + a, j * stride + bb].item() for a in rows for bb in rows]
                vals = [x for x in vals if math.isfinite(x) and x > 0]
                if vals:
                    out[b, i, j] = sum(vals) / len(vals)
    return out.reshape(*lead, H // stride, W // stride)


def depth_edge_score(depth: Tensor, stride: int) -> Tensor:
    lead, (H, W) = depth.shape[:-2], depth.shape[-2:]
    flat = depth.reshape(-1, H, W).double()
    out = torch.empty(flat.shape[0], H // stride, W // stride, dtype=torch.float64)
    r = torch.arange(stride, dtype=torch.float64) - (stride - 1) / 2
    for b in range(flat.shape[0]):
        for i in range(H // stride):
            for j in range(W // stride):
                block = flat[b, i * stride:(i + 1) * stride, j * stride:(j + 1) * stride]
                if not bool((torch.isfinite(block) & (block > 0)).all()):
                    out[b, i, j] = float("inf")
                    continue
                rows = [[r[bb].item(), r[a].item(), 1.0] for a in range(stride) for bb in range(stride)]
                A = torch.tensor(rows, dtype=torch.float64)
                y = (1.0 / block).reshape(-1, 1)
                coeff = torch.linalg.lstsq(A, y).solution[:, 0]
                dev = max(abs(y[k, 0].item() - (A[k] @ coeff).item()) for k in range(A.shape[0]))
                out[b, i, j] = dev / abs(coeff[2].item())
    return out.reshape(*lead, H // stride, W // stride)


def backproject(depth: Tensor, K: Tensor, world_from_cam: Tensor) -> Tensor:
    """depth [B, h, w], K [B, 3, 3], world_from_cam [B, 4, 4] -> [B, h, w, 3], one pixel at a time."""
    B, h, w = depth.shape
    out = torch.empty(B, h, w, 3, dtype=torch.float64)
    for b in range(B):
        fx, sk, cx = K[b, 0, 0].item(), K[b, 0, 1].item(), K[b, 0, 2].item()
        fy, cy = K[b, 1, 1].item(), K[b, 1, 2].item()
        for i in range(h):
            for j in range(w):
                zz = depth[b, i, j].item()
                y = (i - cy) / fy * zz
                x = (j - cx - sk * (i - cy) / fy) / fx * zz
                for a in range(3):
                    out[b, i, j, a] = sum(world_from_cam[b, a, c].item() * (x, y, zz)[c] for c in range(3)) + world_from_cam[b, a, 3].item()
    return out


def backproject_at(depth: Tensor, K: Tensor, world_from_cam: Tensor, index: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """The indexed elements of ``backproject``: [M, 3]."""
    return backproject(depth, K, world_from_cam)[index]


def reproject(depth: Tensor, K_src: Tensor, K_dst: Tensor, dst_from_src: Tensor) -> tuple[Tensor, Tensor]:
    """depth [B, h, w], K_src/K_dst [B, 3, 3], dst_from_src [B, 4, 4] -> uv [B, h, w, 2], z [B, h, w]:
    each element lifted into the source camera, moved into the destination, projected, one at a time."""
    B, h, w = depth.shape
    uv = torch.empty(B, h, w, 2, dtype=torch.float64)
    z = torch.empty(B, h, w, dtype=torch.float64)
    for b in range(B):
        K_inv = torch.linalg.inv(K_src[b].double())
        for i in range(h):
            for j in range(w):
                cam = depth[b, i, j].item() * (K_inv @ torch.tensor([j, i, 1.0], dtype=torch.float64))
                moved = dst_from_src[b, :3, :3].double() @ cam + dst_from_src[b, :3, 3].double()
                image = K_dst[b].double() @ moved
                uv[b, i, j] = image[:2] / moved[2]
                z[b, i, j] = moved[2]
    return uv, z


def splat(
    uv: Tensor,
    z: Tensor,
    half_size: Tensor,
    valid: Tensor,
    size: tuple[int, int],
    max_half_size: float = 2.0,
    depth_tolerance: float = 0.0,
    tie_keys: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Python loops over frames, cells and points, with the same float32 arithmetic as ``splat``."""
    T, N = z.shape
    h, w = size
    winner = torch.full((T, h, w), -1, dtype=torch.long)
    out_depth = torch.full((T, h, w), float("inf"), dtype=z.dtype)
    for t in range(T):
        cands: dict[tuple[int, int], list] = {}
        for n in range(N):
            u, v = uv[t, n, 0], uv[t, n, 1]
            r = half_size[t, n].to(uv.dtype).clamp(max=max_half_size, min=0.0)
            if not (bool(valid[t, n]) and bool(torch.isfinite(u)) and bool(torch.isfinite(v)) and bool(torch.isfinite(r))):
                continue
            for i in range(h):
                for j in range(w):
                    ju, iv = torch.floor(u + 0.5), torch.floor(v + 0.5)
                    jf, i_f = torch.tensor(float(j), dtype=uv.dtype), torch.tensor(float(i), dtype=uv.dtype)
                    covered = bool((jf >= u - r) & (jf <= u + r) & (i_f >= v - r) & (i_f <= v + r))
                    nearest = bool((jf == ju) & (i_f == iv))
                    if covered or nearest:
                        d2 = (jf - u) * (jf - u) + (i_f - v) * (i_f - v)
                        cands.setdefault((i, j), []).append((z[t, n], d2, n))
        for (i, j), lst in cands.items():
            dmin = min(c[0] for c in lst)
            if depth_tolerance > 0:
                lst = [c for c in lst if bool(c[0] <= dmin * (1.0 + depth_tolerance))]
            else:
                lst = [c for c in lst if bool(c[0] == dmin)]
            d2min = min(c[1] for c in lst)
            lst = [c for c in lst if bool(c[1] == d2min)]
            if tie_keys is not None:
                for col in range(tie_keys.shape[1]):
                    kmin = min(tie_keys[c[2], col] for c in lst)
                    lst = [c for c in lst if bool(tie_keys[c[2], col] == kmin)]
            best = min(c[2] for c in lst)
            winner[t, i, j] = best
            out_depth[t, i, j] = z[t, best]
    return winner, out_depth


def nearest_cell(uv: Tensor, z: Tensor, valid: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Point by point: round to the nearest cell (ties to even), keep the nearest depth (then the lowest index)."""
    T, N = z.shape
    h, w = size
    winner = torch.full((T, h, w), -1, dtype=torch.long)
    depth = torch.full((T, h, w), float("inf"), dtype=z.dtype)
    for t in range(T):
        for n in range(N):
            u, v, d = uv[t, n, 0].item(), uv[t, n, 1].item(), z[t, n].item()
            if not valid[t, n] or not d > 0 or not (math.isfinite(u) and math.isfinite(v)):
                continue
            j, i = round(u), round(v)  # Python's round: half to even, as torch.round
            if 0 <= j < w and 0 <= i < h and d < depth[t, i, j].item():  # strictly nearer: the lower index keeps a tie
                winner[t, i, j], depth[t, i, j] = n, d
    return winner, depth


def occlusion_filter(depth: Tensor, mask: Tensor, threshold: float) -> Tensor:
    T, h, w = depth.shape
    out = torch.zeros_like(mask)

    def at(t, i, j):
        if 0 <= i < h and 0 <= j < w and mask[t, i, j]:
            return depth[t, i, j].item()
        return float("inf")

    for t in range(T):
        for i in range(h):
            for j in range(w):
                if not mask[t, i, j]:
                    continue
                z = depth[t, i, j].item()
                sandwiched = any(
                    z > (1.0 + threshold) * max(at(t, i + di, j + dj), at(t, i - di, j - dj))
                    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1))
                )
                out[t, i, j] = not sandwiched
    return out


def zbuffer_winner(
    cell: Tensor,
    depth: Tensor,
    point: Tensor,
    num_cells: int,
    dist2: Tensor | None = None,
    depth_tolerance: float = 0.0,
    tie_keys: Tensor | None = None,
) -> Tensor:
    """The z-buffer's rules applied one cell at a time to lists of candidates (same arguments)."""
    by_cell: dict[int, list[int]] = {}
    for m in range(cell.numel()):
        by_cell.setdefault(int(cell[m]), []).append(m)
    winner = torch.full((num_cells,), -1, dtype=torch.long)
    for c, cands in by_cell.items():
        front = min(depth[m] for m in cands)  # 1. the front depth
        if depth_tolerance > 0:  # 2. the front surface
            cands = [m for m in cands if bool(depth[m] <= front * (1.0 + depth_tolerance))]
        else:
            cands = [m for m in cands if bool(depth[m] == front)]
        if dist2 is not None:  # 3. nearest to the cell centre
            best = min(dist2[m] for m in cands)
            cands = [m for m in cands if bool(dist2[m] == best)]
        if tie_keys is not None and len(cands) > 1:  # 4. intrinsic keys, column by column
            for col in range(tie_keys.shape[1]):
                best = min(tie_keys[point[m], col] for m in cands)
                cands = [m for m in cands if bool(tie_keys[point[m], col] == best)]
        winner[c] = min(int(point[m]) for m in cands)  # 5. lowest point index
    return winner
