"""Preset camera paths: functions of a few parameters that return keyframes.

Each preset returns a list of keyframes in the schema of ``keyframes.py`` (position + look_at or
yaw), without frame/time, so the path is spread over however many frames the render has. Every
preset starts at the origin looking along +z (identity world_from_cam) unless its parameters move
the start: the first frame is the start image's camera. Distances are in the units of the scene
(the start image's depth); ``height`` is up, which is world -y (OpenCV y points down).

The files ``trajectories/<name>.yaml`` are the same presets as YAML a user copies and edits.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np

from mirage_cli.base.errors import did_you_mean
from mirage_cli.base.limits import MAX_COORDINATE, MAX_KEYFRAMES
from mirage_cli.base.values import as_number
from mirage_cli.camera.keyframes import as_vector


def _kf(position, **rotation) -> dict:
    return {"position": [float(x) for x in position], **rotation}


def orbit(radius: float = 2.0, degrees: float = 90.0, height: float = 0.0, look_at: list | None = None,
          keyframe_count: int = 9) -> list[dict]:
    """Circle ``degrees`` around a vertical axis through ``look_at``, always looking at it.

    ``look_at`` (the centre c) defaults to [0, 0, radius], straight ahead of the start camera, so with
    height 0 the path starts at the origin with the identity rotation. The camera starts at
    [c_x, c_y - height, c_z - radius]; degrees > 0 moves it to its right (towards +x) first.
    ``height`` lifts the camera above the centre (it then looks down at it).
    """
    c = [0.0, 0.0, float(radius)] if look_at is None else [float(x) for x in look_at]
    out = []
    for k in range(keyframe_count):
        a = math.radians(degrees) * k / (keyframe_count - 1)
        p = [c[0] + radius * math.sin(a), c[1] - height, c[2] - radius * math.cos(a)]
        out.append(_kf(p, look_at=c))
    return out


def dolly_in(distance: float = 1.0, height: float = 0.0, look_at: list | None = None, keyframe_count: int = 5) -> list[dict]:
    """Move straight forward (+z) by ``distance``; looking ahead, or at ``look_at`` when given."""
    out = []
    for k in range(keyframe_count):
        p = [0.0, -height, distance * k / (keyframe_count - 1)]
        out.append(_kf(p, look_at=[float(x) for x in look_at]) if look_at is not None else _kf(p, yaw=0.0))
    return out


def pan_and_return(degrees: float = 60.0, distance: float = 0.0, keyframe_count: int = 9) -> list[dict]:
    """Turn right by ``degrees`` (drifting ``distance`` sideways, towards +x) and come back.

    The last frame equals the first: the revisit case the latent memory exists for.
    """
    out = []
    for k in range(keyframe_count):
        s = math.sin(math.pi * k / (keyframe_count - 1))  # 0 -> 1 -> 0
        out.append(_kf([distance * s, 0.0, 0.0], yaw=degrees * s))
    return out


def forward_walk(distance: float = 3.0, sway: float = 0.05, bob: float = 0.02, steps: int = 6,
                 keyframe_count: int = 13) -> list[dict]:
    """Walk forward (+z) by ``distance`` with a small sideways ``sway`` and vertical ``bob``.

    ``steps`` footsteps: the camera bobs once per step and sways once per two steps; it looks
    straight ahead (yaw 0).
    """
    out = []
    for k in range(keyframe_count):
        s = k / (keyframe_count - 1)
        x = sway * math.sin(math.pi * steps * s)
        y = -bob * abs(math.sin(math.pi * steps * s))  # up is -y
        out.append(_kf([x, y, distance * s], yaw=0.0))
    return out


def loop3(radius: float = 1.5, loops: int = 3, height: float = 0.0, keyframes_per_loop: int = 8) -> list[dict]:
    """Drive ``loops`` times (default 3) around a circle of ``radius``, looking along the path.

    Starts at the origin looking along +z and turns right (the circle's centre is at [radius, 0, 0]);
    every loop closes exactly on the start pose, so every view is revisited ``loops`` times.
    """
    out = []
    n = loops * keyframes_per_loop
    for k in range(n + 1):
        a = 2.0 * math.pi * k / keyframes_per_loop
        p = [radius - radius * math.cos(a), -height, radius * math.sin(a)]
        out.append(_kf(p, yaw=math.degrees(a)))
    return out


PRESETS: dict[str, Callable[..., list[dict]]] = {
    "orbit": orbit,
    "dolly_in": dolly_in,
    "pan_and_return": pan_and_return,
    "forward_walk": forward_walk,
    "loop3": loop3,
}


def preset_parameters(name: str) -> dict:
    """Parameter names of preset ``name`` and their defaults."""
    return {p.name: p.default for p in inspect.signature(PRESETS[name]).parameters.values()}


_MIN_INT = {"keyframe_count": 2, "loops": 1, "keyframes_per_loop": 3, "steps": 1}
_POSITIVE = {"radius"}


def preset_keyframes(name, params: dict, problems, where: str = "") -> list[dict] | None:
    """Validate ``params`` for preset ``name`` and return its keyframes, or None after adding problems.

    Args:
        name: the value of ``preset:``.
        params: parameter name -> YAML value (unknown names are reported with a suggestion).
        problems: a ``keyframes.ProblemList``; fields are named ``{where}.{param}`` (``where`` may be "").
    """
    def field(key: str) -> str:
        return f"{where}.{key}" if where else key

    if not isinstance(name, str) or name not in PRESETS:
        problems.add(field("preset"), f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; "
                                      f"available: {', '.join(PRESETS)}")
        return None
    defaults = preset_parameters(name)
    kwargs = {}
    start = len(problems.items)
    for key, value in params.items():
        if key not in defaults:
            problems.add(field(key), f"unknown parameter '{key}' for preset {name}{did_you_mean(key, defaults)}; "
                                     f"parameters: {', '.join(defaults)}")
            continue
        default = defaults[key]
        if key == "look_at":
            if value is None:
                continue
            v, why = as_vector(value, 3)
        elif isinstance(default, int) and not isinstance(default, bool):
            low = _MIN_INT.get(key, 0)
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_KEYFRAMES
            v, why = (value, None) if ok else (None, f"expected an integer between {low} and {MAX_KEYFRAMES:,}, got {value!r}")
        else:
            v, why = as_number(value)
            if why is None and key in _POSITIVE and v <= 0:
                why = f"must be > 0, got {v:g}"
            elif why is None and abs(v) > MAX_COORDINATE:
                why = f"must be at most {MAX_COORDINATE:g} in size, got {v:g}"
        if why is None and key == "look_at" and float(np.max(np.abs(v))) > MAX_COORDINATE:
            why = f"coordinates must be at most {MAX_COORDINATE:g} in size"
        if why:
            problems.add(field(key), why)
        else:
            kwargs[key] = v.tolist() if key == "look_at" else v
    if len(problems.items) > start:
        return None
    counts = {k: v for k, v in kwargs.items() if k in _MIN_INT}
    if int(np.prod(list(counts.values()) or [1])) > MAX_KEYFRAMES:
        problems.add(field("preset"), f"preset {name}: {counts} asks for more than {MAX_KEYFRAMES:,} keyframes")
        return None
    try:
        items = PRESETS[name](**kwargs)
    except ValueError as e:
        problems.add(field("preset"), f"preset {name}: {e}")
        return None
    return items
