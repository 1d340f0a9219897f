"""The trained-weight files of a plan checked before anything loads or is written: the check
``mirage validate`` runs and a render runs in its first stage (``mirage_cli.backbone.trained``)."""

from __future__ import annotations

from mirage_cli.backbone.trained import check_trained_weights
from mirage_cli.base.options import BackboneOptions
from mirage_cli.spec.plan import Plan
from mirage_cli.vram.meta_models import render_transformer_config


def check_plan_weights(plan: Plan, options: BackboneOptions, *, values: bool = True) -> None:
    """Check ``plan.conditioning``'s VACE and LoRA files against the transformer a render of ``plan`` with
    ``options`` loads (its config, no weights). ``values``: read every value too (``validate`` and a
    render's first stage; False: the headers only). Raises InputError naming the file, the field and the
    tensor."""
    trained = plan.conditioning
    if trained.vace is None and trained.lora is None:
        return
    check_trained_weights(trained, render_transformer_config(plan.model, options), values=values)
