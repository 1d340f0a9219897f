"""Hostile command-line cases: the settings surface (tests/hostile_commands.py)."""

from __future__ import annotations

from hostile_commands import CommandCase

NAMED_CASES: list[CommandCase] = []
