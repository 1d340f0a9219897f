"""The denoising loop of one chunk: UniPC (or the few-step sampler of DMD-distilled models,
``mirage_cli.denoise.few_step``) over the Wan2.2 transformer, with pinned tokens.

Conditioning, training-free:

- Latent frame 0 is the conditioning frame (start image latent, or the previous chunk's last latent).
  As in Wan2.2-TI2V (diffusers' ``expand_timesteps``), its tokens get timestep 0 and its latents are
  overwritten with the clean condition before every step and in the output.
- Frames 1..T-1 carry the memory's warped latents where ``pin_mask`` is set, in one of two modes:
  ``clean``: a token (1x2x2 latent cells) whose 4 cells are all in ``pin_mask`` gets timestep 0 and
  its latents are replaced by the warped latents before every step, like frame 0.
  ``noised``: the pinned *cells* are set to the flow-matching forward sample of the warped latent
  at the step's sigma, ``(1 - sigma) * z + sigma * eps`` with ``eps`` from the chunk's generator;
  timesteps stay uniform (frame 0 still 0).
- Pinning holds while ``step < pin_until * steps``; later steps let the model harmonize.

Cells held clean (frame 0, and clean-pinned tokens) also get a zero velocity before the scheduler
step. Under the flow ODE a sample equal to its own clean prediction then stays put, so UniPC's
multistep history for those cells is exactly the pinned latent rather than an update computed from a
prediction the model made at t=0 for a sample the scheduler believes is at sigma. Other cells are
unaffected (the scheduler update is elementwise).

Classifier-free guidance: one forward with the prompt and one with the negative prompt (each in its
own ``cache_context`` so diffusers' step caches keep them apart), ``uncond + g * (cond - uncond)``.

The loop never moves tensors to the CPU and reads one device value on the host a step late: whether
the latents are still finite (``FiniteWatch``; a NaN or inf stops the chunk with ``NonFiniteLatents``
instead of rendering noise to the end). The scheduler's sigma table is a CPU tensor by diffusers'
design. A ``DenoiseState`` taken after any step holds everything needed to continue bit-exactly
(latents, UniPC's multistep state, the generator state, the step cache's state when one is on:
``mirage_cli.denoise.step_cache``); ``to_tensors`` / ``from_tensors`` make it a safetensors-compatible dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch

from mirage_cli.base.errors import RenderError
from mirage_cli.base.options import PinMode
from mirage_cli.denoise import step_cache
from mirage_cli.denoise.few_step import FewStepScheduler
from mirage_cli.profiling.profiler import DENOISE_STEP

PATCH = 2
"""Latent cells per token along y and x (transformer patch (1, 2, 2))."""


@dataclass
class SchedulerState:
    """UniPC's internal state between steps (everything ``step`` reads that ``set_timesteps`` does not set).

    ``model_outputs`` and ``timestep_list``: lists of length solver_order, entries a tensor or None
    (model_outputs [1, C, T, h, w] float32; timesteps 0-d). ``last_sample``: [1, C, T, h, w] or None.
    ``step_index``: the next step's index (None before the first step). ``this_order``: the order of
    the last predictor (None before the first step).
    """

    model_outputs: list
    timestep_list: list
    lower_order_nums: int
    last_sample: torch.Tensor | None
    step_index: int | None
    this_order: int | None

    @classmethod
    def capture(cls, scheduler) -> SchedulerState:
        """Snapshot ``scheduler`` (tensor references are shared, the lists are copied)."""
        return cls(
            model_outputs=list(scheduler.model_outputs),
            timestep_list=list(scheduler.timestep_list),
            lower_order_nums=int(scheduler.lower_order_nums),
            last_sample=scheduler.last_sample,
            step_index=scheduler._step_index,
            this_order=getattr(scheduler, "this_order", None),
        )

    def restore(self, scheduler, device: torch.device) -> None:
        """Put this state into a scheduler on which ``set_timesteps`` has been called."""
        if len(self.model_outputs) != len(scheduler.model_outputs):
            raise ValueError(
                f"resume_state: solver order {len(self.model_outputs)} does not match the scheduler's "
                f"{len(scheduler.model_outputs)}"
            )
        scheduler.model_outputs = [None if t is None else t.to(device) for t in self.model_outputs]
        scheduler.timestep_list = [None if t is None else t.to(device) for t in self.timestep_list]
        scheduler.lower_order_nums = self.lower_order_nums
        scheduler.last_sample = None if self.last_sample is None else self.last_sample.to(device)
        scheduler._step_index = self.step_index
        if self.this_order is not None:
            scheduler.this_order = self.this_order


@dataclass
class DenoiseState:
    """Everything needed to continue a chunk's denoising bit-exactly after step ``step - 1``.

    ``latents``: [1, C, T, h, w] float32, the scheduler's sample after the last completed step.
    ``step``: index of the next step to run. ``steps`` and ``shift``: the schedule it belongs to.
    ``scheduler``: UniPC's multistep state. ``generator_state``: uint8 state of the chunk's generator.
    """

    latents: torch.Tensor
    step: int
    steps: int
    shift: float
    scheduler: SchedulerState
    generator_state: torch.Tensor
    cache: dict[str, torch.Tensor] | None = None
    """The step cache's state (``mirage_cli.denoise.step_cache.capture_state``), None without a cache."""

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """A flat ``{name: tensor}`` dict for ``safetensors.torch.save_file`` (None entries made explicit).

        Tensors are returned where they live (move them to the CPU to save); all are contiguous.
        """
        out: dict[str, torch.Tensor] = {
            "latents": self.latents.contiguous(),
            "step": torch.tensor(self.step, dtype=torch.int64),
            "steps": torch.tensor(self.steps, dtype=torch.int64),
            "shift": torch.tensor(self.shift, dtype=torch.float64),
            "generator_state": self.generator_state.contiguous(),
            "scheduler.lower_order_nums": torch.tensor(self.scheduler.lower_order_nums, dtype=torch.int64),
            "scheduler.step_index": _optional_int(self.scheduler.step_index),
            "scheduler.this_order": _optional_int(self.scheduler.this_order),
            "scheduler.solver_order": torch.tensor(len(self.scheduler.model_outputs), dtype=torch.int64),
            "scheduler.has_last_sample": torch.tensor(self.scheduler.last_sample is not None),
        }
        if self.scheduler.last_sample is not None:
            out["scheduler.last_sample"] = self.scheduler.last_sample.contiguous()
        for name in ("model_outputs", "timestep_list"):
            entries = getattr(self.scheduler, name)
            out[f"scheduler.{name}.present"] = torch.tensor([entry is not None for entry in entries])
            for k, entry in enumerate(entries):
                if entry is not None:
                    out[f"scheduler.{name}.{k}"] = torch.as_tensor(entry).contiguous()
        for key, tensor in (self.cache or {}).items():
            out[f"cache.{key}"] = tensor.detach().clone()  # hooks may hold views of one storage; a file needs them apart
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> DenoiseState:
        """Rebuild a state from ``to_tensors``' dict (e.g. loaded with ``safetensors.torch.load_file``)."""
        try:
            order = int(tensors["scheduler.solver_order"])
            lists = {}
            for name in ("model_outputs", "timestep_list"):
                present = tensors[f"scheduler.{name}.present"].tolist()
                if len(present) != order:
                    raise ValueError(f"scheduler.{name}.present has {len(present)} entries, expected {order}")
                lists[name] = [tensors[f"scheduler.{name}.{k}"] if present[k] else None for k in range(order)]
            step_index = int(tensors["scheduler.step_index"])
            this_order = int(tensors["scheduler.this_order"])
            scheduler = SchedulerState(
                model_outputs=lists["model_outputs"],
                timestep_list=lists["timestep_list"],
                lower_order_nums=int(tensors["scheduler.lower_order_nums"]),
                last_sample=tensors["scheduler.last_sample"] if bool(tensors["scheduler.has_last_sample"]) else None,
                step_index=None if step_index < 0 else step_index,
                this_order=None if this_order < 0 else this_order,
            )
            return cls(
                latents=tensors["latents"],
                step=int(tensors["step"]),
                steps=int(tensors["steps"]),
                shift=float(tensors["shift"]),
                scheduler=scheduler,
                generator_state=tensors["generator_state"],
                cache={k.removeprefix("cache."): v for k, v in tensors.items() if k.startswith("cache.")} or None,
            )
        except KeyError as exc:
            raise ValueError(f"denoise state: missing entry {exc.args[0]!r}") from None


def _optional_int(value: int | None) -> torch.Tensor:
    """An int64 scalar tensor, -1 standing for None (the values encoded this way are never negative)."""
    return torch.tensor(-1 if value is None else value, dtype=torch.int64)


@dataclass
class DenoiseResult:
    """``latents`` [1, C, T, h, w] float32 normalized; ``completed`` False when ``on_step`` stopped the loop
    (then ``latents`` are the raw mid-schedule sample and ``state`` resumes it)."""

    latents: torch.Tensor
    completed: bool
    state: DenoiseState | None


# --------------------------------------------------------------------------------------------------
# Small pure pieces
# --------------------------------------------------------------------------------------------------


def token_pin_mask(pin_mask: torch.Tensor) -> torch.Tensor:
    """Tokens whose 2x2 latent cells are all pinned: [T, h, w] bool -> [T, h/2, w/2] bool."""
    frames, height, width = pin_mask.shape
    cells = pin_mask.reshape(frames, height // PATCH, PATCH, width // PATCH, PATCH)  # [T, h2, 2, w2, 2]
    return cells.all(dim=4).all(dim=2)  # [T, h2, w2]


def token_mask_to_cells(token_mask: torch.Tensor) -> torch.Tensor:
    """Spread a token mask to its cells: [T, h2, w2] bool -> [T, 2*h2, 2*w2] bool."""
    return token_mask.repeat_interleave(PATCH, dim=1).repeat_interleave(PATCH, dim=2)  # [T, h, w]


def per_token_timestep(t: torch.Tensor, zero_tokens: torch.Tensor, batch: int) -> torch.Tensor:
    """The transformer's per-token timestep: 0 on ``zero_tokens``, ``t`` elsewhere.

    ``t``: 0-d timestep tensor; ``zero_tokens``: [T, h2, w2] bool. Returns [batch, T*h2*w2] float32,
    tokens in the transformer's order (frame, row, column).
    """
    zero = torch.zeros((), dtype=torch.float32, device=zero_tokens.device)
    per_token = torch.where(zero_tokens, zero, t.to(torch.float32))  # [T, h2, w2]
    return per_token.flatten().unsqueeze(0).expand(batch, -1)  # [B, tokens]


def forward_noised(clean: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Flow-matching forward sample ``(1 - sigma) * clean + sigma * eps`` (same shapes in, same out)."""
    return (1.0 - sigma) * clean + sigma * eps


def draw_eps(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal noise of ``shape`` (float32) from ``generator``, placed on ``device``.

    Best with a generator on ``device``. A CPU generator with a CUDA device draws on the CPU and
    copies through pinned memory without blocking, so the host never waits for the GPU.
    """
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    if eps.device == torch.device(device):
        return eps
    if eps.device.type == "cpu" and torch.device(device).type == "cuda":
        return eps.pin_memory().to(device, non_blocking=True)
    return eps.to(device)


def is_pinned_step(step: int, steps: int, pin_until: float) -> bool:
    """Memory pinning holds while ``step < pin_until * steps``."""
    return step < pin_until * steps


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _check_inputs(
    noise, cond_frame0, pinned_latents, pin_mask, pin_mode, pin_until, steps, prompt_embeds, negative_prompt_embeds, guidance
) -> None:
    """ValueError naming the argument for any shape or value that the loop cannot use."""
    if noise.ndim != 5 or noise.shape[0] != 1:
        raise ValueError(f"noise: expected shape [1, C, T, h, w], got {list(noise.shape)}")
    _, channels, frames, height, width = noise.shape
    if height % PATCH or width % PATCH:
        raise ValueError(f"noise: latent h and w must be even (2x2 tokens), got h={height}, w={width}")
    if tuple(cond_frame0.shape) != (channels, height, width):
        raise ValueError(f"cond_frame0: expected shape {[channels, height, width]}, got {list(cond_frame0.shape)}")
    if tuple(pinned_latents.shape) != (frames, channels, height, width):
        expected = [frames, channels, height, width]
        raise ValueError(f"pinned_latents: expected shape {expected}, got {list(pinned_latents.shape)}")
    if tuple(pin_mask.shape) != (frames, height, width) or pin_mask.dtype != torch.bool:
        expected = [frames, height, width]
        raise ValueError(f"pin_mask: expected bool shape {expected}, got {pin_mask.dtype} {list(pin_mask.shape)}")
    if pin_mode not in PinMode.values():
        raise ValueError(f"pin_mode: expected one of {PinMode.values()}, got {pin_mode!r}")
    if not 0.0 <= pin_until <= 1.0:
        raise ValueError(f"pin_until: expected a fraction in [0, 1], got {pin_until}")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
        raise ValueError(f"prompt_embeds: expected shape [1, L, D], got {list(prompt_embeds.shape)}")
    if guidance > 1.0:
        if negative_prompt_embeds is None:
            raise ValueError("negative_prompt_embeds: required when guidance > 1")
        if negative_prompt_embeds.shape[0] != 1 or negative_prompt_embeds.shape[2:] != prompt_embeds.shape[2:]:
            expected = f"[1, L, {prompt_embeds.shape[2]}]"
            raise ValueError(f"negative_prompt_embeds: expected shape {expected}, got {list(negative_prompt_embeds.shape)}")


class NonFiniteLatents(RenderError):
    """The latents held NaN or inf after denoising step ``step`` (0-based) of ``steps``; the caller names
    the chunk (``mirage_cli.render.session``)."""

    def __init__(self, step: int, steps: int):
        self.step, self.steps = step, steps
        super().__init__(f"step {step + 1}/{steps}: the latents are not finite (NaN or inf)")


class FiniteWatch:
    """Checks after every step that the latents are finite, without stalling the device.

    Each step's flag (one bool reduced on the device) is copied to the host asynchronously and read
    one step later, when the device is already busy with the next step; ``flush`` reads the last
    one (before a state is handed out or the chunk ends). On the CPU the copy is immediate. Raises
    ``NonFiniteLatents`` naming the first step whose latents were not finite.
    """

    def __init__(self, steps: int):
        self.steps = steps
        self.pending: tuple[int, torch.Tensor, torch.cuda.Event | None] | None = None

    def after_step(self, step: int, latents: torch.Tensor) -> None:
        flag = torch.isfinite(latents).all()  # [] bool, on the latents' device
        event = None
        if flag.device.type == "cuda":
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            flag = host
        previous, self.pending = self.pending, (step, flag, event)
        if previous is not None:
            self._check(previous)

    def flush(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self._check(pending)

    def _check(self, pending: tuple[int, torch.Tensor, torch.cuda.Event | None]) -> None:
        step, flag, event = pending
        if event is not None:
            event.synchronize()
        if not bool(flag):
            raise NonFiniteLatents(step, self.steps)


def _predict_velocity(transformer, hidden_states, timestep, prompt_embeds, negative_prompt_embeds, guidance):
    """The transformer's flow velocity with classifier-free guidance: [1, C, T, h, w] float32."""
    with _cache_context(transformer, "cond"):
        velocity = transformer(
            hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=prompt_embeds, return_dict=False
        )[0]
    velocity = velocity.to(torch.float32)
    if guidance > 1.0:
        with _cache_context(transformer, "uncond"):
            uncond = transformer(
                hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=negative_prompt_embeds, return_dict=False
            )[0]
        uncond = uncond.to(torch.float32)
        velocity = uncond + guidance * (velocity - uncond)
    return velocity  # [1, C, T, h, w]


def _cache_context(transformer, name: str):
    """diffusers' ``cache_context(name)`` when the model has one (keeps step caches per CFG branch)."""
    import contextlib

    context = getattr(transformer, "cache_context", None)
    return context(name) if context is not None else contextlib.nullcontext()


@dataclass
class _PinCells:
    """Which cells and tokens are held during the pinned steps and after them (see the module docstring).

    ``frame0_tokens`` bool [T, h2, w2]; ``frame0_cells`` / ``memory_cells`` / ``clean_cells_pinned``
    bool [1, 1, T, h, w]; ``pinned_zero_tokens`` bool [T, h2, w2] (timestep 0 while pinned).
    """

    frame0_tokens: torch.Tensor
    frame0_cells: torch.Tensor
    memory_cells: torch.Tensor
    pinned_zero_tokens: torch.Tensor
    clean_cells_pinned: torch.Tensor
    noised: bool  # pin_mode noised: memory cells are set to the memory noised to the step's sigma

    @classmethod
    def build(cls, pin_mask: torch.Tensor, pin_mode: str, device: torch.device) -> _PinCells:
        """From the memory's ``pin_mask`` bool [T, h, w] (frame 0 ignored) and the pin mode."""
        frames, height, width = pin_mask.shape
        frame0_tokens = torch.zeros(frames, height // PATCH, width // PATCH, dtype=torch.bool, device=device)  # [T, h2, w2]
        frame0_tokens[0] = True
        memory_cells = pin_mask.to(device).clone()  # [T, h, w]
        memory_cells[0] = False
        if pin_mode == PinMode.CLEAN:
            memory_tokens = token_pin_mask(memory_cells)  # [T, h2, w2]
            memory_cells = token_mask_to_cells(memory_tokens)  # [T, h, w]: whole tokens only
            pinned_zero_tokens = frame0_tokens | memory_tokens  # [T, h2, w2]
        else:
            pinned_zero_tokens = frame0_tokens
        frame0_cells = token_mask_to_cells(frame0_tokens).view(1, 1, frames, height, width)  # [1, 1, T, h, w]
        memory_cells = memory_cells.view(1, 1, frames, height, width)  # [1, 1, T, h, w]
        clean_cells_pinned = frame0_cells | memory_cells if pin_mode == PinMode.CLEAN else frame0_cells  # [1, 1, T, h, w]
        return cls(frame0_tokens, frame0_cells, memory_cells, pinned_zero_tokens, clean_cells_pinned, pin_mode == PinMode.NOISED)

    def pin(self, latents: torch.Tensor, clean_values: torch.Tensor, pinned: bool, sigma: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
        """The sample a step starts from: held cells set to their ``clean_values``, and while ``pinned``
        in the noised mode the memory cells set to the memory forward-noised to ``sigma`` (one eps draw
        from ``generator``). ``latents``, ``clean_values``: [1, C, T, h, w]."""
        latents = torch.where(self.clean_cells_pinned if pinned else self.frame0_cells, clean_values, latents)
        if self.noised and pinned:
            eps = draw_eps(generator, tuple(latents.shape), latents.device)  # [1, C, T, h, w]
            latents = torch.where(self.memory_cells, forward_noised(clean_values, eps, sigma), latents)
        return latents


def _clean_values(pinned_latents: torch.Tensor, cond_frame0: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What "clean" means for each cell: frame 0 -> the condition, frames 1.. -> the warped memory.

    ``pinned_latents`` [T, C, h, w], ``cond_frame0`` [C, h, w] -> float32 [1, C, T, h, w].
    """
    clean_values = pinned_latents.to(device=device, dtype=torch.float32).permute(1, 0, 2, 3).clone()  # [C, T, h, w]
    clean_values[:, 0] = cond_frame0.to(device=device, dtype=torch.float32)
    return clean_values.unsqueeze(0)  # [1, C, T, h, w]


DIFFUSERS_SIGMAS = "diffusers"
"""diffusers' flow sigmas: ``linspace(1, 1/N, steps + 1)[:-1]`` shifted (N: training timesteps), as its WanPipeline."""
WAN_SIGMAS = "wan"
"""The original Wan2.2 inference's flow sigmas: ``linspace(1 - 1/N, 0, steps + 1)[:-1]`` shifted (its
``FlowUniPCMultistepScheduler``, which the official Mirage inference runs): other timesteps from step 7 on."""


def set_sigmas(scheduler, steps: int, device, sigmas: str = DIFFUSERS_SIGMAS) -> None:
    """``scheduler.set_timesteps`` for ``steps`` steps on the ``sigmas`` grid (``DIFFUSERS_SIGMAS`` or ``WAN_SIGMAS``)."""
    if sigmas == DIFFUSERS_SIGMAS:
        scheduler.set_timesteps(steps, device=device)
    elif sigmas == WAN_SIGMAS:
        train = scheduler.config.num_train_timesteps
        scheduler.set_timesteps(device=device, sigmas=np.linspace(1.0 - 1.0 / train, 0.0, steps + 1)[:-1])
    else:
        raise ValueError(f"sigmas: expected {DIFFUSERS_SIGMAS!r} or {WAN_SIGMAS!r}, got {sigmas!r}")


def make_scheduler(backbone, steps: int, shift: float, generator: torch.Generator, sigmas: str = DIFFUSERS_SIGMAS,
                   timesteps: Sequence[float] | None = None):
    """The chunk's scheduler: UniPC on the ``sigmas`` grid (``set_sigmas``), or, with ``timesteps``, the
    few-step sampler of DMD-distilled models at those timesteps (``mirage_cli.denoise.few_step``; ``shift``
    is then its sigma table's shift and ``steps`` must be ``len(timesteps)``)."""
    if timesteps is None:
        scheduler = backbone.make_scheduler(shift)
        set_sigmas(scheduler, steps, backbone.device, sigmas)
        return scheduler
    if steps != len(timesteps):
        raise ValueError(f"steps: {steps} contradicts the {len(timesteps)} few-step timesteps {list(timesteps)}")
    return FewStepScheduler(timesteps, shift, generator, backbone.device)


def _start(backbone, noise, steps, shift, generator, start_step, resume_state, sigmas: str = DIFFUSERS_SIGMAS,
           timesteps: Sequence[float] | None = None):
    """The scheduler (``make_scheduler``), the starting sample [1, C, T, h, w] and the first step index: a
    fresh start at ``start_step``, or exactly where ``resume_state`` stopped (step cache included)."""
    device = backbone.device
    step_cache.reset_state(backbone.transformer)
    scheduler = make_scheduler(backbone, steps, shift, generator, sigmas, timesteps)
    if resume_state is None:
        if not 0 <= start_step < steps:
            raise ValueError(f"start_step: expected 0 <= start_step < {steps}, got {start_step}")
        scheduler.set_begin_index(start_step)
        return scheduler, noise.to(device=device, dtype=torch.float32), start_step
    if resume_state.steps != steps or resume_state.shift != float(shift):
        raise ValueError(
            f"resume_state: made for steps={resume_state.steps}, shift={resume_state.shift}; got steps={steps}, shift={shift}"
        )
    if start_step not in (0, resume_state.step):
        raise ValueError(f"start_step: {start_step} contradicts resume_state.step={resume_state.step}")
    resume_state.scheduler.restore(scheduler, device)
    if step_cache.cache_enabled(backbone.transformer):
        if resume_state.cache is None:
            raise ValueError("resume_state: saved without a step cache; this loop runs with one")
        step_cache.restore_state(backbone.transformer, resume_state.cache, device)
    generator.set_state(resume_state.generator_state.to(torch.uint8).cpu())
    return scheduler, resume_state.latents.to(device=device, dtype=torch.float32), resume_state.step


def _with_cache_state(state: DenoiseState, transformer) -> DenoiseState:
    """``state`` with the step cache's state when a cache is on: taken only for a state that is kept
    (the loop stopped), not walked through the hooks after every step."""
    if not step_cache.cache_enabled(transformer):
        return state
    return replace(state, cache=step_cache.capture_state(transformer))


@torch.no_grad()
def denoise_chunk(
    backbone,
    *,
    noise: torch.Tensor,
    cond_frame0: torch.Tensor,
    pinned_latents: torch.Tensor,
    pin_mask: torch.Tensor,
    pin_mode: str,
    pin_until: float,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None,
    guidance: float,
    steps: int,
    shift: float,
    generator: torch.Generator,
    start_step: int = 0,
    resume_state: DenoiseState | None = None,
    on_step: Callable[[int, DenoiseState], bool | None] | None = None,
    profiler=None,
    timesteps: Sequence[float] | None = None,
) -> DenoiseResult:
    """Denoise one chunk's latents with frame 0 and the memory-covered tokens pinned.

    ``backbone``: a ``mirage_cli.backbone.Backbone``. ``noise``: [1, C, T, h, w] float, the initial
    sample (unit Gaussian from the caller's generator). ``cond_frame0``: [C, h, w] normalized latent of
    the conditioning frame. ``pinned_latents``: [T, C, h, w] normalized warped memory (frame 0 ignored).
    ``pin_mask``: [T, h, w] bool, memory-covered confident cells (frame 0 ignored). ``pin_mode``:
    ``clean`` | ``noised``. ``pin_until``: fraction of steps during which memory pinning holds.
    ``prompt_embeds`` / ``negative_prompt_embeds``: [1, L, D] (negative required when guidance > 1).
    ``guidance``: CFG scale (<= 1 disables the negative branch). ``steps``, ``shift``: UniPC schedule.
    ``generator``: draws the ``noised`` mode's eps (one [1, C, T, h, w] draw per pinned step), best on
    ``backbone.device``. ``start_step``: first step of a fresh start (the noise at that step's sigma).
    ``resume_state``: continue from a ``DenoiseState`` (the other inputs as the interrupted call's).
    ``on_step(i, state)``: called after step ``i`` with a state that resumes at step ``i + 1`` (cheap: it
    references the loop's tensors, never modified in place; the step cache's state is added only when the
    loop stops; ``state.to_tensors()`` serializes it); returning True stops the loop (``completed=False``).
    ``profiler``: times each step as stage ``denoise_step``. ``timesteps``: the few-step DMD sampler at these
    instead of UniPC (``make_scheduler``; its re-noise draws follow the step's pin draw on ``generator``).
    Returns ``DenoiseResult(latents [1, C, T, h, w] float32 on the device, completed, state)``; raises
    ``NonFiniteLatents`` when a step leaves NaN or inf in the latents (found a step late at most).
    """
    _check_inputs(noise, cond_frame0, pinned_latents, pin_mask, pin_mode, pin_until, steps, prompt_embeds,
                  negative_prompt_embeds, guidance)
    device, dtype, transformer = backbone.device, backbone.dtype, backbone.transformer
    backbone.use("transformer")
    clean_values = _clean_values(pinned_latents, cond_frame0, device)  # [1, C, T, h, w]
    cells = _PinCells.build(pin_mask, pin_mode, device)
    scheduler, latents, first = _start(backbone, noise, steps, shift, generator, start_step, resume_state, timesteps=timesteps)
    prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
    if guidance > 1.0:
        negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
    zero = torch.zeros((), device=device, dtype=torch.float32)
    timesteps = scheduler.timesteps
    watch = FiniteWatch(steps)

    for i in range(first, steps):
        with profiler.stage(DENOISE_STEP) if profiler is not None else nullcontext():
            t = timesteps[i]
            pinned = is_pinned_step(i, steps, pin_until)
            clean_cells = cells.clean_cells_pinned if pinned else cells.frame0_cells
            latents = cells.pin(latents, clean_values, pinned, scheduler.sigmas[i], generator)  # [1, C, T, h, w]
            timestep = per_token_timestep(t, cells.pinned_zero_tokens if pinned else cells.frame0_tokens, batch=1)  # [1, tokens]
            model_input = latents.to(dtype)  # [1, C, T, h, w]
            velocity = _predict_velocity(transformer, model_input, timestep, prompt_embeds, negative_prompt_embeds, guidance)
            velocity = torch.where(clean_cells, zero, velocity)  # held cells stay on their clean latent
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]  # [1, C, T, h, w]
            watch.after_step(i, latents)
        if on_step is not None:
            state = DenoiseState(latents, i + 1, steps, float(shift), SchedulerState.capture(scheduler), generator.get_state())
            if on_step(i, state) is True and i + 1 < steps:
                watch.flush()  # a stop never saves latents that are not finite
                return DenoiseResult(latents=latents, completed=False, state=_with_cache_state(state, transformer))
    watch.flush()

    final_clean = cells.clean_cells_pinned if is_pinned_step(steps - 1, steps, pin_until) else cells.frame0_cells
    latents = torch.where(final_clean, clean_values, latents)  # [1, C, T, h, w]
    return DenoiseResult(latents=latents, completed=True, state=None)
