"""The scene spec's reference: one Markdown table of every field (type, default, meaning), made from
the same declarations the checks follow (``SPEC_FIELDS``, ``MEMORY_FIELDS``, ``CONDITIONING_FIELDS``,
``STEP_CACHE_FIELDS``), so the docs cannot drift from the code: ``docs/spec.md`` holds it, and a test
compares. Regenerate with ``python -m mirage_cli.spec.reference``.
"""

from __future__ import annotations

from mirage_cli.spec.conditioning import CONDITIONING_FIELDS
from mirage_cli.spec.fields import MEMORY_FIELDS, SPEC_FIELDS, FieldSpec
from mirage_cli.spec.step_cache import STEP_CACHE_FIELDS

SECTIONS = {"memory": MEMORY_FIELDS, "conditioning": CONDITIONING_FIELDS, "step_cache": STEP_CACHE_FIELDS}
"""The sections whose fields are listed under their own name (``memory.mode``)."""

TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false", list: "list", dict: "mapping",
              type(None): "null"}


def type_text(spec: FieldSpec) -> str:
    """"integer or null" from the accepted Python types (an int where a number is accepted is left out)."""
    types = [t for t in spec.types if not (t is int and float in spec.types)]
    return " or ".join(dict.fromkeys(TYPE_NAMES.get(t, t.__name__) for t in types))


def default_text(spec: FieldSpec) -> str:
    if spec.required:
        return "required"
    if spec.default is None:
        return "null"
    if isinstance(spec.default, bool):
        return str(spec.default).lower()
    return f"`{spec.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_table() -> str:
    """The Markdown table: one row per field, the sections' fields right after their section's row."""
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, spec in SPEC_FIELDS.items():
        rows.append(f"| `{name}` | {type_text(spec)} | {_cell(default_text(spec))} | {_cell(spec.doc)} |")
        for sub, sub_spec in SECTIONS.get(name, {}).items():
            rows.append(f"| `{name}.{sub}` | {type_text(sub_spec)} | {_cell(default_text(sub_spec))} | {_cell(sub_spec.doc)} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference_table(), end="")
