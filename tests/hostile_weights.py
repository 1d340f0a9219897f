"""Hostile command-line cases: the weights surface (tests/hostile_commands.py)."""

from __future__ import annotations

from hostile_commands import CommandCase

NAMED_CASES: list[CommandCase] = []
