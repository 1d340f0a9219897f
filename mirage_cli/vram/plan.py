"""``--vram-budget``: the offload mode and VAE tiling a render runs with, chosen from the predicted
peaks (``mirage_cli.vram.predict``) before any weights load, and the refusal when nothing fits.

The budget is ``auto`` (the GPU's free memory; with no GPU here, as for ``mirage validate`` on a
laptop, a 24 GiB card is assumed), a number of GiB, or ``none`` (run the options as given, predict
nothing). The options the user gave are kept; what is added is, in order of preference:

1. nothing;  2. ``--offload model`` (same pixels; the weights cross PCIe once per stage);
3. ``--vae-tiling`` (different pixels: tiles are blended);  4. both;
5. ``--offload group --vae-tiling``;  6. ``--offload sequential --vae-tiling`` (slowest).

A plan fits when its predicted peak plus a headroom (5% and 0.5 GiB: kernel workspaces, allocator
rounding, fragmentation) is within the budget. A run that already exists keeps its VAE tiling (it is
in the fingerprint), so a resume on another card cannot change the pixels.

Stage traces take seconds (a tiled decode of 35 latent frames is the longest); they are cached per
component configuration and shape in ``$XDG_CACHE_HOME/mirage/vram`` (atomically written JSON).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mirage_cli import __version__
from mirage_cli.backbone import resolve_device, resolve_dtype
from mirage_cli.backbone.loading import check_backbone_options
from mirage_cli.base.atomic import atomic_write_json
from mirage_cli.base.errors import InputError
from mirage_cli.base.files import cache_folder
from mirage_cli.base.options import BackboneOptions
from mirage_cli.base.options import parse_vram_budget as parse_budget
from mirage_cli.vram.meta_models import meta_components
from mirage_cli.vram.predict import GIB, RenderShape, Transients, VramPrediction, predict_vram, trace_transients

HEADROOM_FRACTION = 0.05
HEADROOM_BYTES = GIB // 2
ASSUMED_FREE_GIB = 23.5
"""What ``auto`` plans for where no GPU can be asked (``mirage validate`` without one): a 24 GiB card
(an RTX 4090 or L4 class), 23.5 GiB free once the CUDA context is up."""
CANDIDATES = (("none", False), ("model", False), ("none", True), ("model", True), ("group", True), ("sequential", True))
TRACE_CACHE_VERSION = 2
"""Part of every trace cache key: raise it when the traced code changes what it allocates (2: lean blocks)."""


def needed_bytes(prediction: VramPrediction) -> int:
    """The budget a prediction needs: its peak plus the headroom."""
    return int(prediction.peak * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES


def flags(offload: str, tiling: bool) -> str:
    """The command-line flags of a plan, e.g. ``--offload model --vae-tiling`` (``defaults`` for none)."""
    parts = ([f"--offload {offload}"] if offload != "none" else []) + (["--vae-tiling"] if tiling else [])
    return " ".join(parts) or "no offload, no tiling"


@dataclass
class VramPlan:
    """What a render runs with and why: ``offload``, ``vae_tiling``, the budget (bytes or None) and
    where it came from, the chosen plan's prediction (None with ``--vram-budget none`` or on the CPU)."""

    offload: str
    vae_tiling: bool
    budget_bytes: int | None
    budget_source: str
    prediction: VramPrediction | None
    reason: str

    def apply(self, options: BackboneOptions) -> BackboneOptions:
        return replace(options, offload=self.offload, vae_tiling=self.vae_tiling)

    def to_dict(self) -> dict:
        return {
            "offload": self.offload,
            "vae_tiling": self.vae_tiling,
            "budget_gib": None if self.budget_bytes is None else round(self.budget_bytes / GIB, 3),
            "budget_source": self.budget_source,
            "reason": self.reason,
            "predicted": None if self.prediction is None else self.prediction.to_dict(),
        }


def device_budget(device: torch.device) -> tuple[int, str]:
    """The free memory of a CUDA ``device`` and a phrase saying so."""
    free, total = torch.cuda.mem_get_info(device)
    return int(free), f"free memory of {device} ({free / GIB:.1f} of {total / GIB:.1f} GiB)"


def _allowed(options: BackboneOptions, recorded_tiling: bool | None) -> list[tuple[str, bool]]:
    """The candidate plans that keep what the user asked for and what the run already recorded."""
    out = []
    for offload, tiling in CANDIDATES:
        if options.vae_tiling and not tiling:
            continue
        if options.offload != "none" and offload != options.offload:
            continue
        if recorded_tiling is not None and tiling != recorded_tiling:
            continue
        out.append((offload, tiling))
    own = (options.offload, bool(options.vae_tiling))
    if own not in out and (recorded_tiling is None or own[1] == recorded_tiling):
        out.insert(0, own)
    return out


def choose_vram_plan(model: str, options: BackboneOptions, depth_model: str, shape: RenderShape, *, budget: str | float,
                free: tuple[int, str] | None, recorded_tiling: bool | None = None, vace: Path | None = None,
                predict: bool = False) -> VramPlan:
    """The plan a CUDA render of ``shape`` runs with (see the module docstring).

    ``free``: ``device_budget(device)`` of the GPU the render will use, or None where there is none
    (then ``auto`` assumes a 24 GiB card). ``recorded_tiling``: the VAE tiling of the run being resumed.
    ``vace``: the VACE weights of a trained-conditioning render (their branch is counted). ``predict``:
    with ``--vram-budget none``, still predict the options as given (validate shows it; a render skips it).
    Raises InputError (exit 2) naming the budget, the prediction and what would fit when nothing does.
    """
    if budget == "none":
        own = (options.offload, bool(options.vae_tiling))
        prediction = _predict_candidates(model, options, depth_model, shape, [own], vace)[0][1] if predict else None
        return VramPlan(*own, None, "--vram-budget none", prediction, "the options as given")
    if budget == "auto":
        assumed = (int(ASSUMED_FREE_GIB * GIB), f"no GPU here: a 24 GiB card assumed ({ASSUMED_FREE_GIB:g} GiB free)")
        budget_bytes, source = free if free is not None else assumed
        source = f"--vram-budget auto: {source}"
    else:
        budget_bytes, source = int(float(budget) * GIB), f"--vram-budget {float(budget):g}"
    candidates = _allowed(options, recorded_tiling)
    if not candidates:
        raise InputError(f"this run was rendered {'with' if recorded_tiling else 'without'} --vae-tiling (it changes the pixels); "
                         "resume it with the same setting, or pass --restart", field="vae-tiling")
    predictions = _predict_candidates(model, options, depth_model, shape, candidates, vace)
    own = (options.offload, bool(options.vae_tiling))
    for (offload, tiling), prediction in predictions:
        if needed_bytes(prediction) <= budget_bytes:
            if (offload, tiling) == own:
                reason = f"the options as given fit: {prediction.peak / GIB:.1f} GiB predicted at the peak ({prediction.peak_stage})"
            else:
                first = predictions[0][1]
                reason = (f"{flags(*own)} would need {needed_bytes(first) / GIB:.1f} GiB ({first.peak_stage}); "
                          f"{flags(offload, tiling)} needs {needed_bytes(prediction) / GIB:.1f} GiB")
            return VramPlan(offload, tiling, budget_bytes, source, prediction, reason)
    smallest_plan, smallest = min(predictions, key=lambda item: item[1].peak)
    raise InputError(
        f"the render does not fit the VRAM budget of {budget_bytes / GIB:.1f} GiB ({source}): the smallest plan, "
        f"{flags(*smallest_plan)}, needs {needed_bytes(smallest) / GIB:.1f} GiB (peak {smallest.peak / GIB:.1f} GiB in "
        f"{smallest.peak_stage}, plus headroom). Free memory on the GPU, use a larger one, or render smaller chunks "
        "(chunk_frames) or a lower resolution",
        field="--vram-budget",
    )


def _predict_candidates(model, options, depth_model, shape, candidates, vace=None) -> list[tuple[tuple[str, bool], VramPrediction]]:
    dtype = resolve_dtype("bfloat16" if options.dtype == "auto" else options.dtype)
    out, by_tiling = [], {}
    for offload, tiling in candidates:
        if tiling not in by_tiling:
            parts = meta_components(model, replace(options, vae_tiling=tiling), depth_model, dtype, vace=vace)
            by_tiling[tiling] = (parts, cached_transients(parts, shape))
        parts, transients = by_tiling[tiling]
        out.append(((offload, tiling), predict_vram(parts, shape, offload=offload, transients=transients)))
    return out


def _trace_key(parts, shape: RenderShape) -> str:
    import diffusers
    import transformers

    def config(module):
        if module is None:
            return None
        cfg = module.config
        return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)

    facts = {"v": TRACE_CACHE_VERSION, "mirage": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
             "transformers": transformers.__version__, "shape": shape.__dict__, "dtype": str(parts.dtype),
             "fp8": _is_fp8(parts.transformer), "classes": [type(parts.transformer).__name__, type(parts.transformer.blocks[0]).__name__],
             "tiling": bool(getattr(parts.vae, "use_tiling", False)), "transformer": config(parts.transformer),
             "vae": config(parts.vae), "text": config(parts.text_encoder),
             "depth": config(None if parts.depth is None else parts.depth.model)}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _is_fp8(module: torch.nn.Module) -> bool:
    return any(p.dtype == torch.float8_e4m3fn for p in module.parameters())


def cached_transients(parts, shape: RenderShape) -> Transients:
    """``trace_transients``, read from / written to the trace cache."""
    path = cache_folder("vram") / f"{_trace_key(parts, shape)}.json"
    try:
        data = json.loads(path.read_text())
        return {stage: (int(v[0]), int(v[1])) for stage, v in data.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        pass
    transients = trace_transients(parts, shape)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {stage: list(v) for stage, v in transients.items()})
    except OSError:
        pass  # a read-only home: predict again next time
    return transients


def describe_vram_plan(plan: VramPlan) -> str:
    """The plan and its per-stage prediction as text (``mirage validate --vram``)."""
    lines = [f"memory plan:     {flags(plan.offload, plan.vae_tiling)}", f"  budget:        {plan.budget_source}",
             f"  why:           {plan.reason}"]
    prediction = plan.prediction
    if prediction is None:
        return "\n".join(lines)
    lines.append(f"  predicted peak {prediction.peak / GIB:.2f} GiB in {prediction.peak_stage} "
                 f"(+ headroom: needs {needed_bytes(prediction) / GIB:.2f} GiB)")
    lines.append(f"  {'stage':<18}{'peak GiB':>9}{'weights':>9}{'carried':>9}{'transient':>10}  on the device")
    for stage in prediction.stages:
        lines.append(f"  {stage.stage:<18}{stage.peak / GIB:>9.2f}{stage.weights / GIB:>9.2f}{stage.carried / GIB:>9.2f}"
                     f"{stage.transient / GIB:>10.2f}  {', '.join(stage.on_device)}")
    lines.extend(f"  note: {note}" for note in prediction.notes)
    return "\n".join(lines)


def vram_plan_for_render(plan, options: BackboneOptions, recorded_tiling: bool | None = None) -> VramPlan | None:
    """The memory plan of a render of ``plan`` (a ``mirage_cli.spec.plan.Plan``) with ``options`` on the
    device it names; None when that device is not a GPU (nothing to plan)."""
    budget = parse_budget(options.vram_budget)
    device = resolve_device(options.device)
    if device.type != "cuda":
        return None
    return choose_vram_plan(plan.model, options, plan.depth_model, RenderShape.of_plan(plan), budget=budget,
                       free=device_budget(device), recorded_tiling=recorded_tiling, vace=plan.conditioning.vace)


def vram_plan_for_validate(plan, options: BackboneOptions) -> VramPlan:
    """The memory plan ``mirage validate --vram`` shows: a GPU render of ``plan`` on this machine's GPU,
    else on a 24 GiB card; the backbone options are checked as a render would check them."""
    budget = parse_budget(options.vram_budget)
    check_backbone_options(replace(options, device="cpu", offload="none", dtype="float32" if options.dtype == "auto" else options.dtype))
    free = device_budget(torch.device("cuda")) if torch.cuda.is_available() else None
    return choose_vram_plan(plan.model, options, plan.depth_model, RenderShape.of_plan(plan), budget=budget, free=free,
                       vace=plan.conditioning.vace, predict=True)
