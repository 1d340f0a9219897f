"""Render and bench share one declaration of every backbone flag, with the options dataclass's defaults."""

from __future__ import annotations

import dataclasses

import typer
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


def test_a_flag_group_reaches_the_command_as_one_value():
    from typer.testing import CliRunner

    from mirage_cli.cli.flags import BACKBONE, MODEL_FLAGS, STEP_CACHE_FLAGS

    received = {}
    probe = typer.Typer()

    @probe.command()
    @MODEL_FLAGS(without=("compile_",))
    @STEP_CACHE_FLAGS
    def show(name: str = typer.Argument(...), backbone: BackboneOptions = BACKBONE, step_cache: dict | None = None) -> None:
        received.update(name=name, backbone=backbone, step_cache=step_cache)

    result = CliRunner().invoke(probe, ["x", "--device", "cpu", "--offload", "model", "--fp8", "--cache", "mag",
                                        "--cache-threshold", "0.1"])
    assert result.exit_code == 0, result.output
    assert received["name"] == "x"
    assert received["backbone"] == dataclasses.replace(BACKBONE, device="cpu", offload="model", fp8=True)
    assert received["step_cache"] == {"step_cache.method": "mag", "step_cache.threshold": 0.1, "step_cache.interval": None,
                                      "step_cache.calibration": None}
    assert CliRunner().invoke(probe, ["x", "--compile"]).exit_code == 2  # left out of this command: not a flag


def test_validate_offers_the_model_flags_that_change_its_vram_prediction_only():
    validate = _options("validate")
    assert {"--preset", "--dtype", "--offload", "--vae-tiling", "--fp8", "--vram-budget"} <= set(validate)
    assert not {"--device", "--attention-backend", "--compile"} & set(validate)


def test_version_is_the_packages():
    from pathlib import Path

    import tomllib
    from render_helpers import cli

    shown = cli("--version")
    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert shown.exit_code == 0 and shown.stdout == f"mirage {declared}\n"
