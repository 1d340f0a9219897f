"""The stages between a loaded spec and a render that need a model (``load_plan`` runs none).

``estimate_intrinsics``: ``intrinsics: auto`` asks a field-of-view model (DepthPro) for the start
image's focal length (``mirage_cli.depth.field_of_view``, cached per image and model) and samples the
camera path with it (``mirage_cli.spec.plan.with_intrinsics``). ``mirage validate``, ``render``,
``preview``, ``bench`` and ``calibrate-cache`` run it right after ``load_plan``; ``render`` runs it
too for a plan handed to it unresolved.
"""

from __future__ import annotations

from mirage_cli.depth.field_of_view import estimated_intrinsics
from mirage_cli.spec.plan import Plan, with_intrinsics


def estimate_intrinsics(plan: Plan) -> Plan:
    """``plan`` with ``intrinsics: auto`` estimated and its camera path sampled; the plan itself when
    its intrinsics are given. Raises InputError (exit 2) naming the spec's ``intrinsics`` when the model
    cannot load or does not see a camera."""
    auto = plan.intrinsics_auto
    if auto is None:
        return plan
    mapping, record = estimated_intrinsics(plan.image_path, auto.model, plan.width, plan.height)
    return with_intrinsics(plan, mapping, record)
