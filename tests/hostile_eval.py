"""Hostile command-line cases: the eval surface (tests/hostile_commands.py)."""

from __future__ import annotations

from hostile_commands import CommandCase

NAMED_CASES: list[CommandCase] = []
