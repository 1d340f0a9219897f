"""Whether a YAML file is a scene spec or a camera file (``mirage trajectory`` reads both); light:
no torch, so ``mirage trajectory`` starts fast."""

from __future__ import annotations

from pathlib import Path

from mirage_cli.base.errors import InputError
from mirage_cli.base.files import read_text
from mirage_cli.base.limits import MAX_SPEC_BYTES
from mirage_cli.base.yaml_lines import load_yaml_with_lines


def is_scene_spec(path: Path) -> bool:
    """``path`` is a YAML scene spec (a mapping with a ``camera:`` and an ``image:`` or ``prompt:``), not
    a camera file: what ``mirage trajectory`` reads as the camera a render of it would follow. A file that
    cannot be read is left to the camera-file reader, which says what is wrong with it."""
    if Path(path).suffix.lower() not in (".yaml", ".yml") or not Path(path).is_file():
        return False
    try:
        data, _ = load_yaml_with_lines(read_text(path, MAX_SPEC_BYTES), str(path))
    except InputError:
        return False
    return isinstance(data, dict) and "camera" in data and ("image" in data or "prompt" in data)
