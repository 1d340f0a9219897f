"""The checks of a scene's trained weights (``conditioning.vace``, ``conditioning.lora``) that need no
model loaded: the one function ``mirage validate`` and a render's first stage share.

``check_trained_weights`` opens each file through the guarded reader (regular file, size, header,
dtypes: ``mirage_cli.backbone.diffsynth_names.open_weights``), checks its keys, shapes and LoRA ranks
against the transformer the render will load, described by its config and built on the meta device
(``check_vace_file``, ``check_lora_file``), and with ``values`` reads every value block by block,
keeping nothing (NaN, infinities, magnitudes beyond ``limits.MAX_WEIGHT_MAGNITUDE``).

A render runs it in its first stage, before its run directory is written (a file refused later would
leave a run directory whose recorded settings name the bad file's hash, and the fixed file would then
need ``--restart``); the tensors are read once more when the model loads and checked again as they are
read (``read_weights``), which also covers the callers that load without that stage (``mirage bench``).
"""

from __future__ import annotations

from functools import partial

import torch

from mirage_cli.backbone.diffsynth_names import weight_file_problems
from mirage_cli.backbone.lora import check_lora_file
from mirage_cli.backbone.vace import check_vace_file
from mirage_cli.base.errors import InputError


def meta_transformer(config: dict) -> torch.nn.Module:
    """The ``WanTransformer3DModel`` of ``config`` on the meta device (its modules, no memory)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        return WanTransformer3DModel.from_config(config)


def check_trained_weights(trained, config: dict | None, *, values: bool) -> None:
    """Every check of the trained-weight files of ``trained`` (a ``ConditioningSettings``) that a render
    makes, without loading a model (module docstring); one ``InputError`` with a problem per bad file.

    ``config``: the transformer's constructor arguments (None: not known here, e.g. a model that is not
    downloaded; then keys and shapes are checked when it loads). ``values``: also read every value.
    """
    problems = []
    transformer = None
    for name in ("vace", "lora"):
        path = getattr(trained, name)
        if path is None:
            continue
        check = None
        if config is not None and name == "vace":
            check = partial(check_vace_file, config=config)
        elif config is not None:
            transformer = transformer or meta_transformer(config)
            check = partial(check_lora_file, transformer=transformer)
        problems += weight_file_problems(path, f"conditioning.{name}", check, values=values)
    if problems:
        raise InputError(problems)
