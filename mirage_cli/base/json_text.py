"""Parsing a user's JSON text in bounded time and memory, every failure one ``JsonTextError``.

``json.loads`` alone accepts what no file of ours holds and fails in ways a user cannot read: a key
given twice (which one counts differs between readers), an integer of thousands of digits (Python
refuses more than 4,300 with advice for programmers, and converting fewer is quadratic), nesting deep
enough to exhaust the interpreter's recursion. ``load_json`` refuses each with a sentence, in time
linear in the text: duplicates are found with one set per object, nesting is measured on the parsed
value without recursion (the C parser stops at the recursion limit first, ~1,000 levels).
"""

from __future__ import annotations

import json
from typing import Any

from mirage_cli.base.limits import MAX_NESTING

MAX_INT_DIGITS = 30
"""Digits of a JSON integer (a frame count, an id, a seed: none needs more)."""


class JsonTextError(ValueError):
    """Why a JSON text is refused: ``message`` (a sentence without the file name) and the 1-based
    ``line`` where known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message, self.line = message, line


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise JsonTextError(f"duplicate key {key[:100]!r}: JSON readers disagree on which one counts")
        out[key] = value
    return out


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonTextError(f"holds an integer of {digits:,} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def nesting(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_json(text: str, max_nesting: int = MAX_NESTING) -> Any:
    """The value of the JSON ``text``; ``JsonTextError`` for text that does not parse, a key given twice
    in one object, an integer beyond ``MAX_INT_DIGITS`` digits, or nesting deeper than ``max_nesting``."""
    too_deep = f"JSON nested deeper than {max_nesting} levels"
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_int=_integer)
    except JsonTextError:
        raise
    except json.JSONDecodeError as e:
        raise JsonTextError(f"JSON does not parse: {e.msg} (column {e.colno})", e.lineno) from None
    except RecursionError:
        raise JsonTextError(too_deep) from None
    except ValueError as e:  # what json.loads raises beyond its documented errors
        raise JsonTextError(f"JSON is not usable: {' '.join(str(e).split())[:200]}") from None
    if nesting(value) > max_nesting:
        raise JsonTextError(too_deep)
    return value
