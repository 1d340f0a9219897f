"""The checks ``mirage batch`` runs on every spec before it submits a job: the ones ``mirage validate``
runs, with the settings the jobs' ``mirage render`` will get (the arguments after ``--``).

A spec is read and checked as the render reads it (``load_plan`` with the render's overrides), its
MagCache calibration is fitted to the render's model, steps and size, its start image, depth and mask
are read in full (``preflight``) and its trained weights (VACE, LoRA) are checked against the model's
configuration (their headers; the render reads their values as it loads them). Nothing runs a model:
``intrinsics: auto`` and the depth model are estimated by the job, as the render does.
"""

from __future__ import annotations

from pathlib import Path

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.options import BackboneOptions
from mirage_cli.render.config import check_plan_calibration
from mirage_cli.render.inputs import preflight
from mirage_cli.render.trained import check_plan_weights
from mirage_cli.spec.plan import load_plan


def spec_problems(spec: Path, overrides: dict, backbone: BackboneOptions) -> list[Problem]:
    """Every problem a ``mirage render`` of ``spec`` with ``overrides`` (spec fields the render's flags
    replace, as ``load_plan`` takes them) and ``backbone`` (its model flags) would be refused for
    before it loads the model; an empty list when it would start."""
    try:
        plan = load_plan(spec, overrides=overrides, preset=backbone.preset)
        check_plan_calibration(plan, backbone)
        preflight(plan)
        check_plan_weights(plan, backbone, values=False)
    except InputError as e:
        return list(e.problems)
    return []
