"""Plain JSON values from what the code holds (paths, enums, numpy and torch scalars and arrays).

One conversion for everything written as JSON: reports, checkpoint manifests, run configurations
and their fingerprints.
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any


def to_jsonable(obj: Any, *, nonfinite: str = "error") -> Any:
    """``obj`` as plain JSON types: dicts with string keys, lists, str, int, float, bool, None.

    Paths become strings, enums their values, tuples and sets lists, numpy and torch scalars and
    arrays numbers and (nested) lists; anything else its ``str``. ``nonfinite`` says what a NaN or
    infinite float becomes: ``"error"`` raises ValueError (fingerprints and checkpoints must not
    carry them), ``"null"`` writes None (reports).
    """
    if isinstance(obj, enum.Enum):
        obj = obj.value
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, nonfinite=nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, nonfinite=nonfinite) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        if nonfinite == "null":
            return None
        raise ValueError(f"{obj} is not a finite number (not allowed here)")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist(), nonfinite=nonfinite)
    return str(obj)


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj``: sorted keys, no spaces, exact floats, NaN refused (ValueError)."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
