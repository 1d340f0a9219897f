"""Render and bench share one declaration of every backbone flag, with the options dataclass's defaults."""

from __future__ import annotations

import dataclasses

import typer.main

from mirage_cli.base.options import BackboneOptions, MemoryMode, PinMode
from mirage_cli.cli.main import app


def _options(command_name: str) -> dict:
    command = typer.main.get_command(app).commands[command_name]
    return {opt: param for param in command.params for opt in param.opts if opt.startswith("--")}


def test_every_backbone_option_is_a_flag_of_render_and_bench_declared_alike():
    render, bench = _options("render"), _options("bench")
    for f in dataclasses.fields(BackboneOptions):
        flag = "--" + f.name.replace("_", "-")
        assert flag in render and flag in bench, flag
        a, b = render[flag], bench[flag]
        assert a.help == b.help and a.is_flag == b.is_flag, flag
        assert a.type_descriptor.annotation == b.type_descriptor.annotation, flag
        assert str(a.default) == str(b.default) == str(f.default), flag


def test_memory_and_pin_flags_are_the_shared_enums():
    render = _options("render")
    assert render["--memory"].type_descriptor.annotation is MemoryMode
    assert render["--pin"].type_descriptor.annotation is PinMode
