"""Whether the models a render needs are on this machine: what ``mirage validate`` reports (as
warnings: specs are often checked where the weights are not). Nothing here contacts the hub."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mirage_cli.backbone.model_dir import model_on_machine
from mirage_cli.base.options import BackboneOptions
from mirage_cli.conditioning.conditioners import CONDITIONERS
from mirage_cli.depth.providers import depth_model_on_machine


@dataclass(frozen=True)
class ModelStatus:
    """One model of a render: ``role`` (``model``, ``depth_model``), its ``name``, whether it is
    ``on_machine``, and ``detail`` (where it is, or why it is not)."""

    role: str
    name: str
    on_machine: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)

    def warning(self) -> str:
        """The line ``mirage validate`` prints on stderr for a model that is not here."""
        return (f"{self.role} {self.name} is not on this machine ({self.detail}): a render here downloads it, or fails "
                "offline (HF_HUB_OFFLINE) or without the hub")


def models_of(plan, options: BackboneOptions) -> list[ModelStatus]:
    """The diffusion model (unless ``--preset`` or ``--random-weights`` build it) and the depth model (when
    the memory stores frames) a render of ``plan`` with ``options`` loads, each with its status."""
    out = []
    if options.preset is not None or options.random_weights:
        out.append(ModelStatus("model", options.preset or "random weights", True, "no download: random weights built at load"))
    else:
        out.append(ModelStatus("model", plan.model, *model_on_machine(plan.model)))
    if CONDITIONERS[plan.memory.mode].stores_frames:
        out.append(ModelStatus("depth_model", plan.depth_model, *depth_model_on_machine(plan.depth_model)))
    return out


def describe_models(statuses: list[ModelStatus]) -> str:
    """``mirage validate``'s lines: each model and whether it is here."""
    lines = []
    for i, s in enumerate(statuses):
        head = "models      " if i == 0 else "            "
        lines.append(f"{head}{s.role} {s.name}: " + (f"here ({s.detail})" if s.on_machine else f"NOT HERE ({s.detail})"))
    return "\n".join(lines)
