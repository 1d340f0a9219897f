"""Depth for newly generated frames.

Two providers, one interface (``DepthProvider.estimate``):

- ``TransformersDepth``: a transformers depth-estimation model (Depth Anything V2 by default) run on
  the decoded frames, which exist anyway for the output video, so the memory never costs an extra
  decode. Metric models (``config.depth_estimation_type == "metric"``) predict z-depth in metres;
  relative models predict relative *inverse* depth. Either way the caller aligns the estimate to
  the memory's rendered depth (``mirage_cli.memory.filters.align_depth``).
- ``MemoryPropagatedDepth`` (``--depth-model none``): no model; depth comes from the memory's
  rendered depth, holes filled from the nearest valid neighbour.

``DepthAligner`` turns either into depth in the camera path's units for the rollout: the start
image's depth when the spec gives none, and the new frames' depth aligned to the memory's rendered
depth, keeping the last fit for frames that do not overlap the memory.

All tensors stay on the provider's device.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from mirage_cli.base.errors import InputError
from mirage_cli.base.hub import cached_file
from mirage_cli.depth.tiny import build_tiny_depth_model, is_tiny_model, tiny_depth_processor
from mirage_cli.memory.filters import align_depth

log = logging.getLogger(__name__)

DEPTH_KIND_METRIC = "metric"
DEPTH_KIND_RELATIVE_INVERSE = "relative_inverse"

TINY_TRY_OUT = "to try the pipeline on a CPU, --preset tiny brings a tiny depth model with random weights"

DEPTH_FRAMES_PER_BATCH = 8
"""Frames the depth model sees per forward (``TransformersDepth.estimate``): a chunk's 30 new latent
frames in 4 micro-batches instead of one batch (about a quarter of the activation memory)."""


def fill_depth_holes(depth: torch.Tensor, valid: torch.Tensor, max_iters: int = 64) -> torch.Tensor:
    """Fill invalid cells of a depth map from their valid neighbours (iterated 3x3 dilation).

    Each pass gives every invalid cell the mean of its valid 8-neighbours; cells still unreachable
    after ``max_iters`` passes (or an all-invalid map) get the median of the valid depth (or 1.0).

    Args:
        depth: float [T, h, w] z-depth.
        valid: bool [T, h, w].

    Returns:
        float [T, h, w], equal to ``depth`` where ``valid``.
    """
    if depth.shape != valid.shape or depth.dim() != 3:
        raise ValueError(f"depth, valid: expected matching [T, h, w], got {list(depth.shape)} and {list(valid.shape)}")
    d = torch.where(valid, depth, torch.zeros_like(depth)).unsqueeze(1).float()  # [T, 1, h, w]
    v = valid.unsqueeze(1).float()  # [T, 1, h, w]
    kernel = torch.ones(1, 1, 3, 3, device=depth.device)
    for _ in range(max_iters):
        if bool(v.min() > 0):
            break
        s = F.conv2d(d * v, kernel, padding=1)  # [T, 1, h, w]
        n = F.conv2d(v, kernel, padding=1)  # [T, 1, h, w]
        grow = (v == 0) & (n > 0)
        d = torch.where(grow, s / n.clamp(min=1), d)
        v = torch.where(grow, torch.ones_like(v), v)
    out = d.squeeze(1)  # [T, h, w]
    still = v.squeeze(1) == 0
    if bool(still.any()):
        fallback = depth[valid].median() if bool(valid.any()) else torch.tensor(1.0, device=depth.device)
        out = torch.where(still, fallback.to(out.dtype), out)
    return out.to(depth.dtype)


class MemoryPropagatedDepth:
    """Depth from the memory itself (no model): the rendered depth with holes filled."""

    kind = DEPTH_KIND_METRIC
    name = "none"

    def from_memory(self, rendered: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Pixel-resolution z-depth from the memory's rendered depth.

        Args:
            rendered: float [T, h, w] rendered z-depth (latent or pixel grid).
            valid: bool [T, h, w].
            size: (H, W) output size.

        Returns:
            float32 [T, H, W] (nearest-neighbour upsampling of the filled map).
        """
        filled = fill_depth_holes(rendered.float(), valid)  # [T, h, w]
        if tuple(filled.shape[-2:]) == tuple(size):
            return filled
        return F.interpolate(filled.unsqueeze(1), size=size, mode="nearest").squeeze(1)  # [T, H, W]


class TransformersDepth:
    """A transformers depth-estimation model (e.g. Depth Anything V2) on decoded frames."""

    name: str
    kind: str

    def __init__(self, model: str, device: torch.device, dtype: torch.dtype = torch.float32):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name = model
        local = Path(os.path.expanduser(model))
        from huggingface_hub import is_offline_mode

        offline = is_offline_mode()  # huggingface_hub's own rule (HF_HUB_OFFLINE, read when it is imported)
        why = depth_model_problem(model)  # the same check as ``mirage validate``'s
        if why is not None:
            raise InputError(why, field="depth_model")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(model), local_files_only=offline or local.exists())
            self.model = AutoModelForDepthEstimation.from_pretrained(
                str(model), local_files_only=offline or local.exists(), dtype=dtype
            )
        except OSError as e:
            raise InputError(
                f"cannot load depth model {model!r}: {e}. Download it first (e.g. `hf download {model}`), "
                f"pass a local directory, or use --depth-model none with a `depth:` map in the spec ({TINY_TRY_OUT})",
                field="depth_model",
            ) from None
        self._place(device, dtype)

    @classmethod
    def from_model(cls, name: str, model: torch.nn.Module, device: torch.device, processor=None) -> TransformersDepth:
        """A provider around an already built ``model`` (the VRAM predictor's meta-device copy); without
        a ``processor``, Depth Anything's preprocessing (518 px short side, ImageNet mean and std)."""
        provider = cls.__new__(cls)
        provider.name, provider.model, provider.processor = name, model, processor
        provider._place(device, next(model.parameters()).dtype)
        return provider

    def _place(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model.to(device).eval()
        self.device = device
        self.dtype = dtype
        depth_type = getattr(self.model.config, "depth_estimation_type", "relative")
        self.kind = DEPTH_KIND_METRIC if depth_type == "metric" else DEPTH_KIND_RELATIVE_INVERSE
        mean = getattr(self.processor, "image_mean", None) or [0.485, 0.456, 0.406]
        std = getattr(self.processor, "image_std", None) or [0.229, 0.224, 0.225]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.input_side = _processor_side(getattr(self.processor, "size", None))

    @torch.no_grad()
    def estimate(self, frames: torch.Tensor) -> torch.Tensor:
        """Depth of RGB frames.

        Preprocessing runs on the device (resize so the short side is ``input_side`` rounded to a
        multiple of 14, normalise with the processor's mean/std), so frames never leave the GPU.

        Args:
            frames: float [N, 3, H, W] in [0, 1].

        Returns:
            float32 [N, H, W]: metric z-depth for metric models, relative inverse depth otherwise.
        """
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames: expected [N, 3, H, W], got {list(frames.shape)}")
        n, _, h, w = frames.shape
        scale = self.input_side / min(h, w)
        th, tw = max(14, round(h * scale / 14) * 14), max(14, round(w * scale / 14) * 14)
        out = []
        for start in range(0, n, DEPTH_FRAMES_PER_BATCH):  # bounded activations: 30 frames at once took 5.6 GiB
            part = frames[start:start + DEPTH_FRAMES_PER_BATCH]
            x = F.interpolate(part.to(self.device, torch.float32), size=(th, tw), mode="bicubic", align_corners=False)
            x = ((x.clamp(0, 1) - self.mean) / self.std).to(self.dtype)  # [n', 3, th, tw]
            pred = self.model(pixel_values=x).predicted_depth  # [n', th', tw']
            out.append(F.interpolate(pred.unsqueeze(1).float(), size=(h, w), mode="bilinear", align_corners=False).squeeze(1))
        return torch.cat(out)  # [N, H, W]


def _processor_side(size) -> int:
    """The processor's target side (``height`` or ``shortest_edge``), 518 (Depth Anything's) if unknown."""
    for key in ("height", "shortest_edge"):
        try:
            value = size[key] if isinstance(size, dict) else getattr(size, key, None)
        except (KeyError, TypeError):
            value = None
        if value:
            return int(value)
    return 518


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def depth_model_problem(name: str, *, on_machine: bool = True) -> str | None:
    """Why the depth model ``name`` (``none``, ``tiny``, a local directory or a hub id) cannot be loaded,
    or None.

    A hub id that is not in the Hugging Face cache is a problem only in offline mode or when the hub
    does not know it (otherwise the render downloads it). ``on_machine=False``: only the name is checked
    (``mirage validate`` reports whether the model is here as a warning, ``depth_model_on_machine``).
    """
    if is_no_model(name) or is_tiny_model(name):
        return None
    local = Path(os.path.expanduser(name))
    if os.path.exists(local):
        if not (os.path.isdir(local) and os.path.isfile(local / "config.json")):
            return f"{local} is not a transformers depth model directory: config.json is missing"
        return None
    if not _HUB_ID.match(name):
        return f"{name!r} is neither a local directory nor a Hugging Face model id (org/name)"
    from huggingface_hub import is_offline_mode

    if not on_machine or cached_file(name, "config.json") is not None:
        return None
    alternatives = (f"Download it first (e.g. `hf download {name}`), pass a local directory, or use --depth-model none "
                    f"with a `depth:` map in the spec ({TINY_TRY_OUT})")
    if is_offline_mode():
        return (f"cannot load depth model {name!r}: it is not in the Hugging Face cache and offline mode (HF_HUB_OFFLINE) "
                f"is on. {alternatives}")
    return _hub_model_problem(name, alternatives)


def depth_model_on_machine(name: str) -> tuple[bool, str]:
    """Whether the depth model ``name`` (a well-formed one: ``depth_model_problem``) is on this machine,
    and where it is or why not; never contacts the hub. ``none`` and ``tiny`` need nothing."""
    if is_no_model(name):
        return True, "no depth model"
    if is_tiny_model(name):
        return True, "no download: random weights built at load"
    local = Path(os.path.expanduser(name))
    if os.path.isdir(local):
        return True, str(local)
    found = cached_file(name, "config.json")
    return (True, str(found.parent)) if found is not None else (False, "not in the Hugging Face cache")


def _hub_model_problem(name: str, alternatives: str) -> str | None:
    """Ask the hub whether model ``name`` exists (the render would download it); None when it does."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=HUB_CHECK_TIMEOUT_S)
    except GatedRepoError:
        return f"depth model {name!r} is gated on the Hugging Face hub: log in (`hf auth login`) with access to it. {alternatives}"
    except RepositoryNotFoundError:
        return f"depth model {name!r} is not on the Hugging Face hub (nor in its cache): check the name. {alternatives}"
    except Exception as e:  # no network, a proxy, a timeout: the render could not download it either
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        return f"depth model {name!r} is not in the Hugging Face cache and the hub cannot be reached ({reason}). {alternatives}"
    return None


HUB_CHECK_TIMEOUT_S = 10.0
"""How long ``mirage validate`` waits for the hub when it checks a depth model that is not cached."""


def is_no_model(name: str) -> bool:
    """Whether a ``depth_model`` value means "no depth model" (``none``, any case)."""
    return name.strip().lower() == "none"


def make_depth_provider(name: str, device: torch.device):
    """``none`` -> MemoryPropagatedDepth; ``tiny`` -> the tiny random model (``depth.tiny``);
    anything else -> TransformersDepth(name)."""
    if is_no_model(name):
        return MemoryPropagatedDepth()
    if is_tiny_model(name):
        return TransformersDepth.from_model(name, build_tiny_depth_model(), device, tiny_depth_processor())
    return TransformersDepth(name, device)


def fit_to_points(estimated: torch.Tensor, uv, z, metric: bool):
    """A depth model's output [H, W] fitted to sparse depths ``z`` [P] (path units) at pixels ``uv``
    [P, 2] (robust: ``align_depth``; scale for a metric model, scale and shift of inverse depth for a
    relative one). Returns (depth float32 [H, W], ``DepthFit``)."""
    H, W = estimated.shape
    cols = torch.as_tensor(uv[:, 0], dtype=torch.float64).round().long().clamp(0, W - 1)
    rows = torch.as_tensor(uv[:, 1], dtype=torch.float64).round().long().clamp(0, H - 1)
    reference = torch.zeros(H, W, dtype=torch.float64, device=estimated.device)
    valid = torch.zeros(H, W, dtype=torch.bool, device=estimated.device)
    reference[rows.to(estimated.device), cols.to(estimated.device)] = torch.as_tensor(z, dtype=torch.float64, device=estimated.device)
    valid[rows.to(estimated.device), cols.to(estimated.device)] = True
    return align_depth(estimated, reference, valid, fit="scale" if metric else "scale_shift_inverse")


# A frame is aligned to the memory when at least this many of its pixels overlap the memory's depth.
MIN_ALIGN_PIXELS = 64


class DepthAligner:
    """Depth of the start image and of every generated frame, in the camera path's units.

    Args:
        provider: ``TransformersDepth`` or ``MemoryPropagatedDepth``.
        size: (H, W) of the render.

    State (checkpointed): ``fit_scale``, the scale of the last successful alignment, used for frames
    that do not overlap the memory.
    """

    def __init__(self, provider, size: tuple[int, int]):
        self.provider = provider
        self.size = (int(size[0]), int(size[1]))
        self.fit_scale: float | None = None

    def start_depth(self, image: torch.Tensor, scale=None) -> torch.Tensor:
        """z-depth float32 [H, W] of the start image float [3, H, W] in [0, 1], from the depth model,
        in the camera path's units as ``scale`` (``mirage_cli.depth.scene_scale.SceneScale``) decides: fitted
        to the COLMAP points it holds, used as is from a metric model, or set to a median of 1 path
        unit where the spec says to assume that (or states a scale for a relative model).

        Raises:
            InputError: the provider has no model (``--depth-model none``; the render session checks
                this before loading anything), or the scale needs a metric model and this one is relative.
        """
        if isinstance(self.provider, MemoryPropagatedDepth):
            raise InputError(
                "no depth for the start image: give `depth:` in the spec or use a depth model (depth_model / --depth-model)",
                field="depth",
            )
        est = self.provider.estimate(image.unsqueeze(0))[0]  # [H, W]
        metric = self.provider.kind == DEPTH_KIND_METRIC
        if scale is not None and scale.points_z is not None:
            return fit_to_points(est, scale.points_uv, scale.points_z, metric)[0]
        if scale is not None and scale.needs_metric and not metric:
            raise InputError(f"{self.provider.name} is a relative depth model but the camera path is in metres (camera.units): "
                             "use a metric depth model, give `depth:`, or state the scale with camera.scale", field="depth_model")
        if metric and (scale is None or scale.source in ("metric model", "explicit scale")):
            return est
        if metric:  # assumed median depth
            return est / est[est > 0].median()
        inv = est.clamp(min=1e-6)
        return inv.median() / inv  # [H, W], median depth 1

    def new_frames(self, frames01: torch.Tensor, view) -> torch.Tensor:
        """z-depth float32 [T-1, H, W] of a chunk's new latent frames.

        Args:
            frames01: float [T-1, 3, H, W] in [0, 1], the pixel frames of latent frames 1..T-1.
            view: the chunk's ``mirage_cli.conditioning.conditioners.ConditionView`` (T latent frames): its
                latent-grid ``depth`` and ``covered`` are the alignment reference; without a depth
                model its ``memory_depth`` is propagated instead.
        """
        if isinstance(self.provider, MemoryPropagatedDepth):
            return self.provider.from_memory(view.memory_depth[1:], view.memory_depth_valid[1:], self.size)

        ref = view.depth[1:]  # [T-1, h, w]
        ref_valid = view.covered[1:] & (ref > 0)  # [T-1, h, w]
        est = self.provider.estimate(frames01)  # [T-1, H, W]
        ref_px = F.interpolate(ref.unsqueeze(1), size=self.size, mode="nearest").squeeze(1)  # [T-1, H, W]
        valid_px = F.interpolate(ref_valid.float().unsqueeze(1), size=self.size, mode="nearest").squeeze(1) > 0
        fit_kind = "scale" if self.provider.kind == DEPTH_KIND_METRIC else "scale_shift_inverse"
        out = []
        for k in range(est.shape[0]):
            if int(valid_px[k].sum()) >= MIN_ALIGN_PIXELS:
                aligned, fit = align_depth(est[k], ref_px[k], valid_px[k], fit=fit_kind)
                self.fit_scale = float(fit.scale)
            elif fit_kind == "scale":
                aligned = est[k] * (self.fit_scale or 1.0)
            else:
                # No overlap with the memory: keep the last known scale of inverse depth.
                aligned = (self.fit_scale or 1.0) / est[k].clamp(min=1e-6)
            out.append(aligned)
        return torch.stack(out)  # [T-1, H, W]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``{"depth_fit_scale": float64 [1]}`` once a fit happened, else empty."""
        if self.fit_scale is None:
            return {}
        return {"depth_fit_scale": torch.tensor([self.fit_scale], dtype=torch.float64)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore ``state_tensors``' output (a missing entry means no fit yet)."""
        self.fit_scale = float(tensors["depth_fit_scale"][0]) if "depth_fit_scale" in tensors else None
