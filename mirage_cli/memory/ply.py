"""PLY export of point caches, readable by any point-cloud viewer (MeshLab, CloudCompare, Blender).

Binary little-endian, one ``vertex`` element with float x, y, z and uchar red, green, blue.
Latents have no colour, so they are shown by their first 3 principal components, each stretched
from its 1st to its 99th percentile onto 0..255.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from mirage_cli.base.atomic import atomic_path


def pca_colours(features: Tensor) -> Tensor:
    """uint8 [N, 3] colours from the first 3 principal components of ``features`` [N, C].

    Component signs are fixed (largest-magnitude loading positive) so the colours are
    deterministic. Fewer than 3 components (C < 3 or N < 2) leave the missing channels at 128.
    """
    x = features.detach().to(torch.float32).cpu()
    N, C = x.shape
    out = torch.full((N, 3), 128, dtype=torch.uint8)
    if N < 2:
        return out
    x = x - x.mean(dim=0)
    cov = x.T @ x / (N - 1)  # [C, C]
    evals, evecs = torch.linalg.eigh(cov.double())  # ascending
    k = min(3, C)
    comps = evecs[:, -k:].flip(-1).to(torch.float32)  # [C, k] largest first
    signs = torch.sign(comps.gather(0, comps.abs().argmax(dim=0, keepdim=True)))  # [1, k]
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = x @ comps  # [N, k]
    ordered = proj.sort(dim=0).values  # [N, k]
    lo, hi = ordered[int(0.01 * (N - 1))], ordered[int(round(0.99 * (N - 1)))]  # [k], [k]
    scaled = ((proj - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1) * 255.0
    out[:, :k] = (scaled + 0.5).to(torch.uint8)
    return out


def write_point_cloud(path: str | os.PathLike, xyz: Tensor, colours: Tensor) -> int:
    """Write ``xyz`` float [N, 3] with ``colours`` uint8 [N, 3] to a binary PLY, atomically; returns N."""
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz: expected shape [N, 3], got {list(xyz.shape)}")
    if colours.shape != xyz.shape or colours.dtype != torch.uint8:
        raise ValueError(f"colours: expected uint8 [{xyz.shape[0]}, 3], got {colours.dtype} {list(colours.shape)}")
    n = int(xyz.shape[0])
    vertex = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    p = xyz.detach().to(torch.float32).cpu().numpy()
    c = colours.detach().cpu().numpy()
    vertex["x"], vertex["y"], vertex["z"] = p[:, 0], p[:, 1], p[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = c[:, 0], c[:, 1], c[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by mirage (OpenCV world frame: y down)\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with atomic_path(path, suffix=".ply") as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertex.tobytes())
    return n


def read_point_cloud(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by ``write_point_cloud``: float32 [N, 3] xyz and uint8 [N, 3] colours."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v = np.frombuffer(data[end:], dtype=dt, count=n)
    return np.stack([v["x"], v["y"], v["z"]], 1), np.stack([v["red"], v["green"], v["blue"]], 1)
