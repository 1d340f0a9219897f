"""User JSON parsed in bounded time and memory (mirage_cli.base.json_text), and the safetensors reader
that builds on it (mirage_cli.base.safetensors_file): real files written by safetensors itself."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mirage_cli.base.json_text import JsonTextError, load_json, nesting
from mirage_cli.base.safetensors_file import open_safetensors


@pytest.mark.parametrize("text, message", [
    ('{"a": 1, "b": 2, "a": 3}', "duplicate key 'a'"),
    ('[1' + "0" * 5000 + "]", "holds an integer of 5,001 digits (at most 30)"),
    ("[" * 65 + "]" * 65, "JSON nested deeper than 64 levels"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested deeper than 64 levels"),
    ('{"' + '\\"' * 200_000, "JSON does not parse"),
    ("{ not json", "JSON does not parse"),
])
def test_refused_json_names_the_problem(text, message):
    with pytest.raises(JsonTextError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_json(text)


def test_accepted_json_is_the_value_json_gives():
    text = '{"a": [1, 2.5, {"b": null}], "c": "x", "d": -12345678901234567890}'
    assert load_json(text) == {"a": [1, 2.5, {"b": None}], "c": "x", "d": -12345678901234567890}
    assert nesting(load_json("[" * 64 + "]" * 64)) == 64


def test_a_header_length_that_starts_like_a_pickle_is_still_safetensors(tmp_path):
    """safetensors pads its header to 8 bytes; a header of 640 bytes starts the file with 0x80 0x02,
    the bytes of a pickle stream. Such a file is read, not refused as a pickle."""
    for pad in range(600):
        path = tmp_path / "w.safetensors"
        save_file({"w": torch.ones(2, 3)}, str(path), metadata={"note": "x" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no padding gave a 640-byte header")
    weights = open_safetensors(path, field="conditioning.lora")
    assert torch.equal(weights.read("w"), torch.ones(2, 3))
