"""The spec's ``sampler:`` field: which sampler denoises a chunk.

``sampler: unipc`` (default): 50-step UniPC with classifier-free guidance, Wan2.2's own.
``sampler: dmd``: the few-step sampler of DMD-distilled models (``mirage_cli.denoise.few_step``):
FastWan2.2-TI2V-5B(-FullAttn), Wan2.2-TI2V-5B-Turbo. Written out: ``sampler: {name: dmd, timesteps:
[1000, 757, 522], shift: 8}``. ``timesteps`` default to FastWan2.2-TI2V-5B's, ``FASTWAN_TIMESTEPS``;
``shift`` (of the sigma table the timesteps are looked up in) to ``DMD_TABLE_SHIFT``. The flag
``--sampler`` sets the name.

A DMD-distilled model is guidance-distilled and trained for its timesteps, so with ``dmd`` the steps
are the timesteps' count and guidance is 1 (no negative branch): a spec or flag asking for other
steps, or for guidance above 1, is refused (exit 2) rather than silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirage_cli.base.errors import ProblemList

UNIPC = "unipc"
DMD = "dmd"
SAMPLERS = (UNIPC, DMD)

FASTWAN_TIMESTEPS = (1000, 757, 522)
"""FastWan2.2-TI2V-5B's sampling timesteps: FastVideo's ``FastWan2_2_TI2V_5B_Config.dmd_denoising_steps``
(``fastvideo/configs/pipelines/wan.py``, hao-ai-lab/FastVideo 2f3d4074), as its distillation recipe trains
(``examples/distill/Wan2.2-TI2V-5B-Diffusers/Data-free/distill_dmd_t2v_5B.sh``: ``--dmd_denoising_steps 1000,757,522``)."""

DMD_TABLE_SHIFT = 8.0
"""Shift of the sigma table the DMD timesteps are looked up in: FastVideo's ``DmdDenoisingStage`` builds
``FlowMatchEulerDiscreteScheduler(shift=8.0)`` (``fastvideo/pipelines/stages/denoising.py``)."""

SAMPLER_KEYS = ("name", "timesteps", "shift")


@dataclass(frozen=True)
class SamplerSettings:
    """The checked ``sampler:``: ``name`` (``SAMPLERS``); for ``dmd`` its ``timesteps`` (decreasing, in
    (0, 1000]) and table ``shift``."""

    name: str = UNIPC
    timesteps: tuple[int, ...] = ()
    shift: float = DMD_TABLE_SHIFT

    @property
    def few_step(self) -> bool:
        return self.name == DMD

    def summary(self) -> dict:
        if not self.few_step:
            return {"name": self.name}
        return {"name": self.name, "timesteps": list(self.timesteps), "shift": self.shift}

    def describe(self) -> str:
        if not self.few_step:
            return "unipc (multistep, classifier-free guidance)"
        return f"dmd, timesteps {list(self.timesteps)}, table shift {self.shift:g} (few-step, guidance-distilled)"


def check_sampler(value, problems: ProblemList) -> SamplerSettings | None:
    """``sampler:`` (None, a name, or ``{name, timesteps, shift}``) checked; None with a problem added."""
    if value is None:
        return SamplerSettings()
    section = {"name": value} if isinstance(value, str) else value
    if not isinstance(section, dict):
        problems.add("sampler", f"expected a name ({' | '.join(SAMPLERS)}) or {{name, timesteps, shift}}, got {value!r}")
        return None
    unknown = [k for k in section if k not in SAMPLER_KEYS]
    if unknown:
        problems.add(f"sampler.{unknown[0]}", f"unknown key (expected one of {', '.join(SAMPLER_KEYS)})")
        return None
    name = section.get("name", DMD if "timesteps" in section else UNIPC)
    if name not in SAMPLERS:
        problems.add("sampler.name" if isinstance(value, dict) else "sampler", f"expected one of {', '.join(SAMPLERS)}, got {name!r}")
        return None
    if name == UNIPC:
        if "timesteps" in section or "shift" in section:
            problems.add("sampler.timesteps" if "timesteps" in section else "sampler.shift",
                         "only the dmd sampler takes timesteps and shift (UniPC's come from steps and the top-level shift)")
            return None
        return SamplerSettings()
    timesteps = section.get("timesteps", FASTWAN_TIMESTEPS)
    if (not isinstance(timesteps, (list, tuple)) or not timesteps
            or any(isinstance(t, bool) or not isinstance(t, int) for t in timesteps)):
        problems.add("sampler.timesteps", f"expected a non-empty list of integers, got {timesteps!r}")
        return None
    if any(not 0 < t <= 1000 for t in timesteps) or any(b >= a for a, b in zip(timesteps, timesteps[1:])):
        problems.add("sampler.timesteps", f"expected strictly decreasing values in 1..1000, got {list(timesteps)}")
        return None
    shift = section.get("shift", DMD_TABLE_SHIFT)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0 < shift <= 100:
        problems.add("sampler.shift", f"must be a number > 0 and at most 100, got {shift!r}")
        return None
    return SamplerSettings(DMD, tuple(timesteps), float(shift))


def fit_steps_and_guidance(v: dict, settings_from: dict, sampler: SamplerSettings, problems: ProblemList) -> None:
    """With a few-step sampler: ``steps`` set to the timesteps' count and ``guidance`` to 1 where they
    are the method's defaults; a spec or flag value that differs is a problem (module docstring)."""
    if not sampler.few_step:
        return
    count = len(sampler.timesteps)
    for name, wanted, why in (("steps", count, f"the dmd sampler runs one step per timestep ({count})"),
                              ("guidance", 1.0, "the dmd sampler samples a guidance-distilled model: guidance must be 1")):
        origin = settings_from.get(name, "")
        if origin.startswith("method") or name not in settings_from:
            v[name] = wanted
            settings_from[name] = "sampler dmd"
        elif isinstance(v[name], (int, float)) and v[name] != wanted:
            problems.add(name, f"{why}, got {v[name]:g} (from the {origin})")
