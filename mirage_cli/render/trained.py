"""The trained-weight files of a plan checked before anything loads or is written: the check
``mirage validate`` runs and a render runs in its first stage (``mirage_cli.backbone.trained``)."""

from __future__ import annotations

from mirage_cli.backbone.lora_stack import check_lora_stack
from mirage_cli.backbone.trained import check_trained_weights, meta_transformer
from mirage_cli.base.errors import InputError
from mirage_cli.base.options import BackboneOptions
from mirage_cli.spec.plan import Plan
from mirage_cli.vram.meta_models import render_transformer_config


def check_plan_weights(plan: Plan, options: BackboneOptions, *, values: bool = True) -> None:
    """Check ``plan.conditioning``'s VACE and LoRA files and the LoRA stack ``plan.loras`` against the transformer a render of ``plan`` with
    ``options`` loads (its config, no weights). ``values``: read every value too (``validate`` and a
    render's first stage; False: the headers only). Raises InputError naming the file, the field and the
    tensor."""
    trained = plan.conditioning
    if trained.vace is None and trained.lora is None and not plan.loras:
        return
    config = render_transformer_config(plan.model, options)
    problems = []
    try:
        check_trained_weights(trained, config, values=values)
    except InputError as e:
        problems.extend(e.problems)
    if plan.loras and config is not None:  # config unknown (model not downloaded): checked when it loads
        try:
            check_lora_stack(meta_transformer(config), plan.loras, values=values)
        except InputError as e:
            problems.extend(e.problems)
    if problems:
        raise InputError(problems)
