"""Load YAML and remember the line of every field, so problems can name ``file:line``.

Field paths are written like ``keyframes[2].position``: mapping keys joined with dots, sequence
items as ``[i]``. A mapping value is reported at its key's line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from mirage_cli.errors import InputError, Problem


def _walk(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines)


def load_yaml_with_lines(text: str, file: str) -> tuple[Any, Callable[[str], int | None]]:
    """Parse ``text`` (YAML) and return (data, line_of) where line_of(field) is its 1-based line.

    ``line_of`` falls back to the nearest enclosing field that has a line (``a.b[3].c`` -> ``a.b[3]``).

    Raises:
        InputError: the text is not valid YAML (names ``file`` and the line of the error).
    """
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError([Problem(file=file, field=None, line=line, message=f"YAML does not parse: {reason}")]) from None
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines)

    def line_of(field: str) -> int | None:
        f = field
        while f:
            if f in lines:
                return lines[f]
            cut = max(f.rfind("."), f.rfind("["))
            if cut <= 0:
                return lines.get(f)
            f = f[:cut]
        return None

    return data, line_of
