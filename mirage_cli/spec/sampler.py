"""The spec's ``sampler:`` field: which sampler denoises a chunk.

``sampler: unipc`` (default): 50-step UniPC with classifier-free guidance, Wan2.2's own.
``sampler: dmd``: the few-step sampler of DMD-distilled models (``mirage_cli.denoise.few_step``):
FastWan2.2-TI2V-5B(-FullAttn), Wan2.2-TI2V-5B-Turbo. Written out: ``sampler: {name: dmd, timesteps:
[1000, 757, 522], shift: 8}``. ``timesteps`` default to FastWan2.2-TI2V-5B's, ``FASTWAN_TIMESTEPS``;
``shift`` (of the sigma table the timesteps are looked up in) to ``DMD_TABLE_SHIFT``. The flag
``--sampler NAME`` sets the name (a spec section naming the same sampler keeps its timesteps).

Where neither the spec nor the flag names a sampler, the model says (``model_sampler``): a FastWan2.2-TI2V-5B
model (its hub id or folder name, as FastVideo's registry knows it) or a local model folder whose
``model_index.json`` names a DMD pipeline (``_class_name`` like FastVideo's ``WanDMDPipeline``) is sampled
with ``dmd`` at FastWan's timesteps; a Wan2.2-TI2V-5B-Turbo model (by name) at Turbo's,
``TURBO_TIMESTEPS``. ``--sampler dmd`` on such a model keeps the model's timesteps.

A DMD-distilled model is guidance-distilled and trained for its timesteps, so with ``dmd`` the steps
are the timesteps' count and guidance is 1 (no negative branch): a spec or flag asking for other
steps, or for guidance above 1, is refused (exit 2) rather than silently changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.json_text import JsonTextError, load_json

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
    source: str = field(default="default", compare=False)
    """Where the name came from: ``default``, ``spec``, ``flag`` or ``model <why>`` (not in ``summary``:
    the same sampler renders the same, whoever chose it)."""

    @property
    def few_step(self) -> bool:
        return self.name == DMD

    def summary(self) -> dict:
        if not self.few_step:
            return {"name": self.name}
        return {"name": self.name, "timesteps": list(self.timesteps), "shift": self.shift}

    def describe(self) -> str:
        origin = f"; from the {self.source}" if self.source.startswith("model") else ""
        if not self.few_step:
            return f"unipc (multistep, classifier-free guidance{origin})"
        return f"dmd, timesteps {list(self.timesteps)}, table shift {self.shift:g} (few-step, guidance-distilled{origin})"


def check_sampler(value, source: str, problems: ProblemList) -> SamplerSettings | None:
    """``sampler:`` (None, a name, or ``{name, timesteps, shift}``) checked, chosen by ``source``
    (``SamplerSettings.source``); None with a problem added."""
    if value is None:
        return SamplerSettings(source=source)
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
        return SamplerSettings(source=source)
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
    return SamplerSettings(DMD, tuple(timesteps), float(shift), source)


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
            chosen = ""
            if sampler.source.startswith("model"):
                chosen = f"; the sampler comes from the {sampler.source}: --sampler unipc to sample otherwise"
            problems.add(name, f"{why}, got {v[name]:g} (from the {origin}){chosen}")


def override_sampler(current, name: str):
    """The spec's ``sampler`` value once ``--sampler name`` is applied: the spec's own section when it
    names the same sampler (its timesteps and shift stay), else the bare name."""
    if isinstance(current, dict) and current.get("name", DMD if "timesteps" in current else UNIPC) == name:
        return current
    return name


FASTWAN_NAMES = ("fastwan2.2-ti2v-5b",)
"""Model names (hub id's last part or folder name, lower case, prefix) FastVideo's registry maps to its
``FastWan2_2_TI2V_5B_Config`` (``FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers`` and
``FastVideo/FastWan2.2-TI2V-5B-Diffusers``), whose ``dmd_denoising_steps`` are ``FASTWAN_TIMESTEPS``."""

TURBO_NAMES = ("wan2.2-ti2v-5b-turbo",)
"""Model names (hub id's last part or folder name, lower case, prefix) of Wan2.2-TI2V-5B-Turbo
(``quanhaol/Wan2.2-TI2V-5B-Turbo``), a 4-step model distilled from Wan2.2-TI2V-5B with Self-Forcing."""

TURBO_TIMESTEPS = (1000, 750, 500, 250)
"""Wan2.2-TI2V-5B-Turbo's sampling timesteps: its inference configuration's ``denoising_step_list``
(``configs/inference/wan22.yaml``). Its few-step pipeline predicts the clean latent at each and re-noises
it to the next with the sigma of Self-Forcing's flow-matching table, whose ``WanDiffusionWrapper`` builds
it with ``timestep_shift`` 8.0 when none is given (as Turbo's pipeline does): ``DMD_TABLE_SHIFT``."""

MODEL_INDEX_LIMIT = 1 << 20


def model_sampler(model: str) -> tuple[str | dict, str] | None:
    """The ``sampler`` value ``model`` (a hub id or a local folder) is sampled with and why, or None when
    it does not say.

    A model index that cannot be read is left to the loader, which refuses it by name."""
    name = Path(model.rstrip("/\\")).name.lower()
    if name.startswith(FASTWAN_NAMES):
        return DMD, f"model {Path(model).name} (FastWan2.2-TI2V-5B)"
    if name.startswith(TURBO_NAMES):
        return ({"name": DMD, "timesteps": list(TURBO_TIMESTEPS), "shift": DMD_TABLE_SHIFT},
                f"model {Path(model).name} (Wan2.2-TI2V-5B-Turbo)")
    index = Path(model).expanduser() / "model_index.json"
    if not os.path.isfile(index):
        return None
    try:
        pipeline = load_json(read_text(index, MODEL_INDEX_LIMIT)).get("_class_name")
    except (InputError, JsonTextError, AttributeError):
        return None
    if isinstance(pipeline, str) and "dmd" in pipeline.lower():
        return DMD, f"model directory's model_index.json ({pipeline})"
    return None
