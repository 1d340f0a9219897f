"""Load YAML safely and remember the line of every field, so problems can name ``file:line``.

Field paths are written like ``keyframes[2].position``: mapping keys joined with dots, sequence
items as ``[i]``. A mapping value is reported at its key's line.

Safe against hostile documents, each refused with the line where it happens (``InputError``):
nesting deeper than ``limits.MAX_NESTING`` (checked on the parser's events, before any recursion),
anchors that refer to themselves, aliases that would expand past ``limits.MAX_YAML_NODES`` nodes
("billion laughs"), and duplicate keys in a mapping (YAML would silently keep the last).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from mirage_cli.base.errors import InputError, Problem
from mirage_cli.base.limits import MAX_NESTING, MAX_YAML_NODES


def _fail(file: str, node_or_mark, message: str) -> InputError:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    line = mark.line + 1 if mark is not None else None
    return InputError([Problem(file=file, field=None, line=line, message=message)])


def _check_nesting(text: str, file: str) -> None:
    """Nesting depth from the parser's events (the parser is iterative; the composer is not)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                raise _fail(file, event, f"nested deeper than {MAX_NESTING} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node, file: str) -> None:
    """No cycles (self-referential anchors), at most ``MAX_YAML_NODES`` nodes with aliases expanded,
    no duplicate keys. Iterative, so aliases cannot drive it into deep recursion."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in _children(node))
            if expanded[key] > MAX_YAML_NODES:
                raise _fail(file, node, f"aliases expand this document past {MAX_YAML_NODES:,} nodes")
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise _fail(file, node, "an anchor refers to itself (a recursive structure)")
        on_path.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, file)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _fail(file, child, "an anchor refers to itself (a recursive structure)")
            if id(child) not in expanded:
                stack.append((child, False))


def _check_duplicate_keys(node: yaml.MappingNode, file: str) -> None:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        name = str(key_node.value)
        if name in seen:
            raise _fail(file, key_node, f"duplicate key '{name}' (first at line {seen[name]}); YAML would keep only the last")
        seen[name] = key_node.start_mark.line + 1


def _walk(node: yaml.Node, path: str, lines: dict[str, int], seen: set[int]) -> None:
    """Record the line of every field; a node reached again through an alias is not walked twice."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, seen)


def load_yaml_with_lines(text: str, file: str) -> tuple[Any, Callable[[str], int | None]]:
    """Parse ``text`` (YAML) and return (data, line_of) where line_of(field) is its 1-based line.

    ``line_of`` falls back to the nearest enclosing field that has a line (``a.b[3].c`` -> ``a.b[3]``).

    Raises:
        InputError: the text is not valid YAML, or is hostile (module docstring); names ``file``
            and the line.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:  # a control character: PyYAML refuses the text before parsing it
        line = text.count("\n", 0, e.position) + 1
        raise InputError([Problem(file=file, field=None, line=line,
                                  message=f"YAML does not parse: character {e.character!r} is not allowed in YAML text")]) from None
    try:
        _check_nesting(text, file)
        node = loader.get_single_node()
        if node is not None:
            _check_graph(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _fail(file, mark, f"YAML does not parse: {reason}") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines, set())

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


def text_number_hint(value: Any) -> str:
    """For a string that reads as a number, why YAML gave text and how to write the number, else "".

    YAML 1.1 (PyYAML) reads ``1e3`` (no dot) and anything quoted as text; nothing is converted
    silently, so the problem says what to write instead.
    """
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if number != number or number in (float("inf"), float("-inf")):
        return ""
    written = repr(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    if "e" in written:
        mantissa, exponent = written.split("e")
        written = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{'' if exponent[0] in '+-' else '+'}{exponent}"
    return f" (YAML reads this as text: write {written} without quotes)"
