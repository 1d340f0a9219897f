"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
AlexNet variant, version 0.1: computed only from weights already on this machine, never downloaded.

Two files are needed:

- the ImageNet AlexNet of torchvision, ``alexnet-owt-7be5be79.pth`` (keys ``features.{0,3,6,8,10}``);
- LPIPS's learned per-channel weights for AlexNet, ``alex.pth`` (keys ``lin{0..4}.model.1.weight``,
  shapes [1, C, 1, 1]), as shipped inside the ``lpips`` and ``torchmetrics`` packages.

They are looked for in ``--lpips DIR`` when given, else in torch's hub cache (``$TORCH_HOME/hub/
checkpoints``) and in an installed ``lpips`` or ``torchmetrics`` package. Both are read with
``torch.load(weights_only=True)`` (no code runs from the file), only as regular files of at most
``MAX_LPIPS_BYTES``, and must be mappings of floating-point tensors whose values are finite and at
most ``limits.MAX_WEIGHT_MAGNITUDE`` (a NaN weight would make every distance NaN).

The distance: both images scaled to [-1, 1] and standardised with LPIPS's fixed shift and scale, the
five ReLU outputs of AlexNet's convolutions unit-normalised along channels, their squared difference
weighted per channel by the learned weights, averaged over space and summed over the five layers.
0 for identical images, larger is more different.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.files import check_file
from mirage_cli.base.limits import MAX_WEIGHT_MAGNITUDE

BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
LINEAR_FILE = "alex.pth"
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
BATCH = 8
MAX_LPIPS_BYTES = 1 << 30
"""Size of each weights file (1 GiB; torchvision's AlexNet is 233 MB, LPIPS's own weights 6 KB)."""
CHANNELS = (64, 192, 384, 256, 256)


class AlexNetTaps(nn.Module):
    """AlexNet's convolutional trunk returning the five ReLU outputs LPIPS compares.

    Input float [B, 3, H, W] (standardised); output five tensors with 64, 192, 384, 256, 256 channels."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        self.taps = (1, 4, 7, 9, 11)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                out.append(x)
        return out


class LPIPS(nn.Module):
    """LPIPS distance between two batches of uint8-range RGB images (see the module docstring)."""

    def __init__(self, backbone: dict[str, torch.Tensor], linear: dict[str, torch.Tensor], files: tuple[Path, Path] | None = None):
        super().__init__()
        self.files = files  # where the weights came from (named in the document), or None
        self.trunk = AlexNetTaps()
        trunk_keys = {k: v for k, v in backbone.items() if k.startswith("features.")}
        self.trunk.load_state_dict(trunk_keys, strict=True)
        self.weights = [linear[f"lin{k}.model.1.weight"].float() for k in range(5)]
        for k, (w, c) in enumerate(zip(self.weights, CHANNELS, strict=True)):
            if tuple(w.shape) != (1, c, 1, 1):
                raise ValueError(f"LPIPS weights: lin{k}.model.1.weight has shape {list(w.shape)}, expected [1, {c}, 1, 1]")
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval()

    @torch.no_grad()
    def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances float [B] of uint8 RGB images ``a``, ``b`` [B, H, W, 3]."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"LPIPS: expected two uint8 [B, H, W, 3] batches of the same shape, got {a.shape} and {b.shape}")
        taps = [self.trunk(self._standardise(x)) for x in (a, b)]
        total = torch.zeros(len(a))
        for fa, fb, w in zip(taps[0], taps[1], self.weights, strict=True):
            diff = (_unit(fa) - _unit(fb)) ** 2
            total += (diff * w).sum(1).mean((1, 2))
        return total.numpy()

    def _standardise(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return (t - self.shift) / self.scale


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def find_weights(folder: Path | None = None) -> tuple[Path, Path] | None:
    """(backbone file, linear file), or None when either is missing (see the module docstring). In a
    given ``folder`` anything under the two names counts as found (``load_lpips`` says what it is)."""
    if folder is not None:
        backbone, linear = folder / BACKBONE_FILE, folder / LINEAR_FILE
        return (backbone, linear) if backbone.exists() and linear.exists() else None
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILE
    linear = _package_file("lpips", "weights/v0.1/alex.pth") or _package_file("torchmetrics", "functional/image/lpips_models/alex.pth")
    return (backbone, linear) if backbone.is_file() and linear is not None else None


def _tensors_problem(loaded, used: list[str]) -> str | None:
    """What is wrong with a loaded weights file whose tensors ``used`` are needed, or None."""
    if not isinstance(loaded, dict):
        return f"holds a {type(loaded).__name__}, not a mapping of tensor names to tensors (a state_dict)"
    missing = [name for name in used if name not in loaded]
    if missing:
        return f"has no tensor {missing[0]!r} ({len(missing)} of the {len(used)} needed are missing)"
    for name in used:
        value = loaded[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            what = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
            return f"{name} is {what}, expected a floating-point tensor"
        if not bool(torch.isfinite(value).all()):
            return f"{name} holds NaN or infinite values"
        if value.numel() and float(value.abs().max()) > MAX_WEIGHT_MAGNITUDE:
            return f"{name} holds values beyond {MAX_WEIGHT_MAGNITUDE:g} in magnitude (not trained weights)"
    return None


def _used_tensors(index: int) -> list[str]:
    """The tensor names LPIPS reads from the backbone file (0) or the linear file (1)."""
    if index == 0:
        return [f"features.{k}.{part}" for k in (0, 3, 6, 8, 10) for part in ("weight", "bias")]
    return [f"lin{k}.model.1.weight" for k in range(len(CHANNELS))]


def load_lpips(files: tuple[Path, Path], field: str | None = "--lpips") -> LPIPS:
    """The metric from the two weight files (module docstring); InputError naming the file that does
    not fit and ``field``."""
    loaded = []
    for index, path in enumerate(files):
        check_file(path, MAX_LPIPS_BYTES, field=field)
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged or foreign file: say which
            why = f"not a readable weights file ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
            raise InputError(Problem(file=str(path), field=field, message=why)) from None
        why = _tensors_problem(content, _used_tensors(index))
        if why is not None:
            what = "torchvision's AlexNet weights" if index == 0 else "LPIPS's AlexNet weights (v0.1)"
            raise InputError(Problem(file=str(path), field=field, message=f"{why} (it should hold {what})"))
        loaded.append(content)
    try:
        return LPIPS(*loaded, files=files)
    except (KeyError, RuntimeError, ValueError) as exc:
        why = f"not AlexNet and LPIPS-alex weights ({' '.join(str(exc).split())[:160]})"
        raise InputError(Problem(file=f"{files[0]}, {files[1]}", field=field, message=why)) from None


def lpips_distances(metric: LPIPS, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """LPIPS of every frame pair of ``a``, ``b`` uint8 [N, H, W, 3], in batches."""
    return np.concatenate([metric(a[k : k + BATCH], b[k : k + BATCH]) for k in range(0, len(a), BATCH)])
