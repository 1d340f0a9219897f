"""The few-step sampler of DMD-distilled Wan2.2 models, with diffusers' scheduler interface.

A DMD-distilled model (FastWan2.2-TI2V-5B, Wan2.2-TI2V-5B-Turbo) is sampled at a handful of fixed
timesteps ``t_0 > t_1 > ... > t_{n-1}`` (training-timestep units, 0..1000). At step ``i`` the model's
flow velocity ``v`` at ``x_t`` gives the clean latent

    x0 = x_t - sigma(t_i) * v

which is re-noised to the next timestep's level with fresh noise from the chunk's generator,

    x_{t_{i+1}} = (1 - sigma(t_{i+1})) * x0 + sigma(t_{i+1}) * eps,

and the last step returns ``x0``. ``sigma(t)`` is the sigma of the training table entry nearest to
``t``: the table is ``s_k = shift * u_k / (1 + (shift - 1) * u_k)`` with ``u_k = k / 1000`` for
``k = 1000 .. 1`` (float32) and timesteps ``1000 * s_k``, so ``sigma(t)`` is ``t / 1000`` up to the
table's spacing (the shift only sets where the table's entries lie). The transformer gets the
timestep ``t_i`` itself.

This is what FastVideo runs (hao-ai-lab/FastVideo, commit 2f3d4074, read for this module):
``fastvideo/pipelines/stages/denoising.py`` ``DmdDenoisingStage`` builds
``FlowMatchEulerDiscreteScheduler(shift=8.0)`` whatever the pipeline's ``flow_shift``, feeds the
model ``pipeline_config.dmd_denoising_steps`` unwarped, turns the prediction into ``x0`` with
``fastvideo/models/utils.py`` ``pred_noise_to_pred_video`` (nearest-timestep sigma lookup) and
re-noises with the scheduler's ``add_noise`` and ``torch.randn(latent shape, generator=batch.generator[0])``
once per step but the last. Its defaults for FastWan2.2-TI2V-5B are ``FastWan2_2_TI2V_5B_Config``
(``fastvideo/configs/pipelines/wan.py``): ``dmd_denoising_steps = [1000, 757, 522]``, ``flow_shift = 5``
(the distillation recipe ``examples/distill/Wan2.2-TI2V-5B-Diffusers/Data-free/distill_dmd_t2v_5B.sh``
trains at the same unwarped steps). Differences, on purpose: FastVideo's DMD stage has no TI2V
first-frame path (it ignores the start image); here the loops hold frame 0 (and pinned tokens) at
timestep 0 exactly as under UniPC (``mirage_cli.denoise.loop``). FastVideo keeps the latents in
bfloat16 between steps; here they stay float32. (FastVideo's MLX runtime warps the steps through the
shifted table instead, ``warp_denoising_step``; its torch stage, the reference here, does not.)

``FewStepScheduler`` has the pieces of diffusers' scheduler interface the loops use (``timesteps``,
``sigmas``, ``set_begin_index``, ``step``, and UniPC's state attributes, empty: a few-step step
depends only on the sample, the velocity and the generator), so ``denoise_chunk`` and
``denoise_vace_chunk`` run it unchanged and ``DenoiseState`` resumes it bit-exactly (the latents,
the step index and the generator state are everything it needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

TRAIN_TIMESTEPS = 1000
"""Training timesteps of Wan2.2 (the sigma table's length)."""


def sigma_table(shift: float, train_timesteps: int = TRAIN_TIMESTEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The shifted flow-matching training table: (timesteps [N] float32, sigmas [N] float32), descending.

    ``u_k = k / N`` for ``k = N .. 1``, ``s_k = shift * u_k / (1 + (shift - 1) * u_k)``, timestep ``N * s_k``.
    """
    u = torch.from_numpy(np.linspace(1, train_timesteps, train_timesteps, dtype=np.float32)[::-1].copy()) / train_timesteps
    sigmas = shift * u / (1 + (shift - 1) * u)  # [N] float32
    return sigmas * train_timesteps, sigmas


def sigma_of(timesteps: Sequence[float], shift: float) -> torch.Tensor:
    """``sigma(t)`` of each timestep: the sigma of the nearest table entry. Returns [n] float32."""
    table_t, table_sigma = sigma_table(shift)
    wanted = torch.tensor([float(t) for t in timesteps], dtype=torch.float32)  # [n]
    nearest = torch.argmin((table_t.unsqueeze(0) - wanted.unsqueeze(1)).abs(), dim=1)  # [n]
    return table_sigma[nearest]


def check_timesteps(timesteps: Sequence[float]) -> None:
    """ValueError unless ``timesteps`` is a non-empty, strictly decreasing list in (0, 1000]."""
    values = [float(t) for t in timesteps]
    if not values:
        raise ValueError("timesteps: expected at least one timestep")
    if any(not 0 < t <= TRAIN_TIMESTEPS for t in values):
        raise ValueError(f"timesteps: expected values in (0, {TRAIN_TIMESTEPS}], got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"timesteps: expected strictly decreasing values, got {values}")


class FewStepScheduler:
    """DMD's few-step sampling (module docstring) behind diffusers' ``step`` interface.

    ``timesteps``: the sampling timesteps (training units, decreasing). ``shift``: the sigma table's
    shift (FastVideo's DMD stage: 8). ``generator``: the chunk's generator; each step but the last
    draws one standard-normal [1, C, T, h, w] float32 tensor from it. ``device``: where ``timesteps``
    live and the noise goes.

    Attributes as diffusers': ``timesteps`` [n] float32 on ``device``, ``sigmas`` [n + 1] float32 on
    the CPU (the last 0), ``_step_index``; ``model_outputs``, ``timestep_list`` (empty lists),
    ``lower_order_nums`` (0), ``last_sample`` (None): no multistep state.
    """

    def __init__(self, timesteps: Sequence[float], shift: float, generator: torch.Generator, device):
        check_timesteps(timesteps)
        self.shift = float(shift)
        self.generator = generator
        self.device = torch.device(device)
        self.timesteps = torch.tensor([float(t) for t in timesteps], dtype=torch.float32, device=self.device)  # [n]
        self.sigmas = torch.cat([sigma_of(timesteps, shift), torch.zeros(1)])  # [n + 1]
        self.model_outputs: list = []
        self.timestep_list: list = []
        self.lower_order_nums = 0
        self.last_sample = None
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def set_begin_index(self, begin_index: int = 0) -> None:
        """The first step's index (a fresh start at a later step)."""
        self._begin_index = begin_index

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = False):
        """One few-step update: ``x0 = sample - sigma_i * model_output``, re-noised to ``sigma_{i+1}``.

        ``model_output`` (flow velocity) and ``sample``: [1, C, T, h, w] float32. ``timestep`` is
        ignored (the step index says where the schedule is, as in diffusers). Returns ``(next sample,)``:
        ``x0`` itself at the last step.
        """
        if self._step_index is None:
            self._step_index = self._begin_index or 0
        i = self._step_index
        x0 = sample - self.sigmas[i].to(sample.device) * model_output  # [1, C, T, h, w]
        self._step_index = i + 1
        if i + 1 >= len(self.timesteps):
            return (x0,)
        eps = _draw(self.generator, tuple(sample.shape), sample.device)  # [1, C, T, h, w]
        sigma_next = self.sigmas[i + 1].to(sample.device)
        return ((1.0 - sigma_next) * x0 + sigma_next * eps,)


def _draw(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal float32 noise from ``generator`` (drawn on its device), placed on ``device``."""
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(device)
