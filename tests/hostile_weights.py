"""Hostile command-line cases: the weights surface (tests/hostile_commands.py).

Trained memory-conditioning weights named by a scene spec (``conditioning.vace``, ``conditioning.lora``,
or ``--vace``/``--lora``) and the VRAM planning path (``mirage validate --vram``, ``--vram-budget``).
Every case starts from the small example scene with ``conditioning.method: vace`` and a VACE branch and
LoRA written with the official code's names and shapes for the tiny preset (random values, as in
``tests/test_trained_weights.py``: no trained weights exist here), then breaks one file or one flag.
A render case is refused before anything renders; the fuzz cases run ``mirage validate`` (with or
without ``--vram``) on a mutated VACE or LoRA file.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import torch

# The CLI and the libraries a render reaches before it refuses bad weights are imported with this module, not
# in the first case, where the harness's tracemalloc would slow the imports about tenfold (past its time bound).
from diffusers import AutoencoderKLWan, WanPipeline, WanVACETransformer3DModel  # noqa: F401
from hostile_commands import CommandCase
from hostile_inputs import base_spec, make_fifo, write_spec
from safetensors.torch import save, save_file
from test_trained_weights import DIM, FFN, official_lora, official_vace_names
from transformers import UMT5EncoderModel  # noqa: F401

import mirage_cli.cli.main  # noqa: F401
import mirage_cli.render.session  # noqa: F401

TINY = ["--preset", "tiny"]
VACE_KEY = "vace_blocks.0.self_attn.q.weight"
LORA_KEY = "pipe.dit.blocks.1.ffn.0.lora_B.weight"


def vace_tensors(blocks: int = 1) -> dict[str, torch.Tensor]:
    """A VACE branch of ``blocks`` blocks for the tiny preset, official names, small random values."""
    gen = torch.Generator().manual_seed(1)
    return {name: 0.1 * torch.randn(shape, generator=gen) for name, shape in official_vace_names(blocks).items()}


def lora_tensors() -> dict[str, torch.Tensor]:
    """A rank-4 LoRA of the tiny preset's 2 DiT blocks, official names."""
    return official_lora(blocks=2)


def changed(tensors: dict[str, torch.Tensor], key: str, value) -> dict[str, torch.Tensor]:
    """``tensors`` with ``key`` replaced: a tensor as given, or a number written into one element."""
    out = dict(tensors)
    if isinstance(value, torch.Tensor):
        out[key] = value
    else:
        out[key] = tensors[key].clone()
        out[key].view(-1)[min(3, out[key].numel() - 1)] = value
    return out


def header_bytes(header: str | bytes, length: int | None = None, data: bytes = b"") -> bytes:
    """A safetensors-like file: the header length (``length``, else the header's own), the header, ``data``."""
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


Content = dict | bytes | Callable[[Path], None] | None
"""What a weights file holds: tensors (saved as safetensors), raw bytes, a maker (link, FIFO), or the default."""


def _write(path: Path, content: Content, default: dict) -> None:
    if content is None:
        content = default
    if isinstance(content, dict):
        save_file({k: v.contiguous() for k, v in content.items()}, str(path))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)


def scene(folder: Path, *, vace: Content = None, lora: Content = None, vace_name: str = "vace.safetensors",
          lora_name: str = "lora.safetensors", with_lora: bool = True) -> Path:
    """The small scene with trained conditioning; its VACE and LoRA files (``vace``/``lora``: what they
    hold, default valid) beside the spec."""
    spec = base_spec()
    spec["conditioning"] = {"method": "vace", "vace": vace_name, **({"lora": lora_name} if with_lora else {})}
    path = write_spec(folder, spec)
    _write(folder / vace_name, vace, vace_tensors())
    if with_lora:
        _write(folder / lora_name, lora, lora_tensors())
    return path


def validate(vram: bool = False, *extra: str, **files) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        return ["validate", str(scene(folder, **files)), *(["--vram"] if vram else []), *TINY, *extra]

    return build


def render(*extra: str, **files) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        return ["render", str(scene(folder, **files)), "--out", str(folder / "run"), *TINY, "--quiet", *extra]

    return build


def loop(path: Path) -> None:
    """``path`` a symbolic link to itself (resolving it never ends)."""
    os.symlink(path.name, path)


def pickled(path: Path) -> None:
    torch.save({"vace": {"x": torch.zeros(2)}}, path)


def nested_header(depth: int) -> bytes:
    return header_bytes('{"a":' + "[" * depth + "]" * depth + "}")


def one_tensor_header(entry: dict, data: bytes = b"\0" * 8, name: str = VACE_KEY) -> bytes:
    return header_bytes(json.dumps({name: entry}), data=data)


def truncated(tensors: dict) -> bytes:
    data = save(tensors)
    return data[: len(data) * 2 // 3]


V, L = "conditioning.vace", "conditioning.lora"
NAMED_CASES: list[CommandCase] = [
    # values no trained layer holds: refused naming the tensor, in render and validate alike
    CommandCase("weights-vace-nan-render", render(vace=changed(vace_tensors(), VACE_KEY, float("nan"))),
                f"{V}: tensor {VACE_KEY}: 1 of"),
    CommandCase("weights-vace-inf-validate", validate(vace=changed(vace_tensors(), VACE_KEY, float("-inf"))),
                f"{V}: tensor {VACE_KEY}: 1 of"),
    CommandCase("weights-vace-huge-validate-vram", validate(True, vace=changed(vace_tensors(), VACE_KEY, 1e30)),
                f"{V}: tensor {VACE_KEY}: holds the value 1e+30, beyond any trained weight"),
    CommandCase("weights-vace-bf16-huge-render", render(vace={k: v.bfloat16() for k, v in changed(vace_tensors(), VACE_KEY,
                                                                                                  -3e5).items()}),
                f"{V}: tensor {VACE_KEY}: holds the value"),
    CommandCase("weights-lora-nan-render", render(lora=changed(lora_tensors(), LORA_KEY, float("nan"))),
                f"{L}: tensor {LORA_KEY}: 1 of"),
    CommandCase("weights-lora-huge-validate", validate(lora=changed(lora_tensors(), LORA_KEY, 1e30)),
                f"{L}: tensor {LORA_KEY}: holds the value 1e+30"),
    # paths that are not a regular file
    CommandCase("weights-vace-symlink-loop-render", render(vace=loop), f"{V}: "),
    CommandCase("weights-vace-symlink-loop-validate", validate(vace=loop), "Too many levels of symbolic links"),
    CommandCase("weights-lora-symlink-loop-flag",
                lambda folder: render(lora=loop)(folder) + ["--memory-lora", str(folder / "lora.safetensors")],
                "Too many levels of symbolic links"),
    CommandCase("weights-vace-fifo", validate(vace=make_fifo), f"{V}: "),
    CommandCase("weights-vace-directory", validate(vace=lambda p: p.mkdir()), "is a directory, expected a regular file"),
    # LoRA ranks: refused from the header, before a run directory exists
    CommandCase("weights-lora-rank-0-render", render(lora={k: v[:0] if "lora_A" in k else v[:, :0] for k, v in lora_tensors().items()}),
                "rank 0: a LoRA needs rank 1 or more"),
    CommandCase("weights-lora-rank-0-validate", validate(lora={k: v[:0] if "lora_A" in k else v[:, :0] for k, v in lora_tensors().items()}),
                f"{L}: wrong rank"),
    CommandCase("weights-lora-ranks-disagree", render(lora=changed(lora_tensors(), LORA_KEY, torch.zeros(FFN, 3))),
                "A rank 4, B rank 3"),
    # headers the VRAM path read through an unguarded safe_open
    CommandCase("weights-vram-header-2-62", validate(True, vace=header_bytes("{}", length=2**62)),
                f"{V}: not a safetensors file, or a damaged one: its header claims 4,611,686,018,427,387,904 bytes"),
    CommandCase("weights-vram-header-nested", validate(True, vace=nested_header(5000)), "its header: JSON nested deeper than 3 levels"),
    CommandCase("weights-vram-header-nested-render", render(vace=nested_header(100_000)), "its header: JSON nested deeper than 3 levels"),
    CommandCase("weights-vram-header-beyond-file", validate(True, vace=header_bytes("{}", length=10_000)),
                "its header claims 10,000 bytes of the 2 that follow"),
    # dtypes: one line naming the tensor and its dtype
    CommandCase("weights-vace-int32", render(vace=changed(vace_tensors(), VACE_KEY, vace_tensors()[VACE_KEY].to(torch.int32))),
                f"{V}: tensor {VACE_KEY} (I32): trained weights are stored as F16, BF16, F32, F64"),
    CommandCase("weights-vace-bool", validate(True, vace=changed(vace_tensors(), VACE_KEY, vace_tensors()[VACE_KEY] > 0)),
                f"tensor {VACE_KEY} (BOOL)"),
    CommandCase("weights-lora-fp8", validate(lora=changed(lora_tensors(), LORA_KEY, lora_tensors()[LORA_KEY].to(torch.float8_e4m3fn))),
                f"{L}: tensor {LORA_KEY} (F8_E4M3)"),
    # keys and shapes: validate (with or without --vram) refuses what render refuses
    CommandCase("weights-vace-unknown-key-vram", validate(True, vace={**vace_tensors(), "vace_blocks.0.self_attn.k_img.weight":
                                                                     torch.zeros(DIM, DIM)}),
                f"{V}: unknown key: vace_blocks.0.self_attn.k_img.weight"),
    CommandCase("weights-vace-unknown-key-validate", validate(vace={**vace_tensors(), "head.weight": torch.zeros(2)}),
                f"{V}: unknown key: head.weight"),
    CommandCase("weights-vace-unknown-key-render", render(vace={**vace_tensors(), "head.weight": torch.zeros(2)}),
                f"{V}: unknown key: head.weight"),
    CommandCase("weights-vace-missing-key", validate(vace={k: v for k, v in vace_tensors().items() if "ffn.2.bias" not in k}),
                f"{V}: missing key: vace_blocks.0.ffn.net.2.bias"),
    CommandCase("weights-vace-wrong-shape", validate(vace=changed(vace_tensors(), "vace_blocks.0.after_proj.weight",
                                                                 torch.zeros(DIM, DIM + 1))),
                f"{V}: wrong shape: vace_blocks.0.proj_out.weight (file [{DIM}, {DIM + 1}], model [{DIM}, {DIM}])"),
    CommandCase("weights-vace-too-many-blocks", validate(True, vace=vace_tensors(blocks=3)),
                f"{V}: 3 VACE blocks do not fit a transformer of 2 layers"),
    CommandCase("weights-vace-no-blocks", render(vace={k: v for k, v in vace_tensors().items() if k.startswith("vace_patch")}),
                f"{V}: 0 VACE blocks do not fit"),
    CommandCase("weights-vace-twice", validate(vace={**vace_tensors(), f"module.{VACE_KEY}": torch.zeros(DIM, DIM)}),
                f"unknown key: {VACE_KEY} (a second vace_blocks.0.attn1.to_q.weight)"),
    CommandCase("weights-lora-wrong-shape", validate(True, lora=changed(lora_tensors(), "pipe.dit.blocks.0.self_attn.q.lora_A.weight",
                                                                        torch.zeros(4, DIM + 3))),
                f"{L}: wrong shape: pipe.dit.blocks.0.self_attn.q.lora_A.weight ([4, {DIM + 3}] for a {DIM} -> {DIM} layer)"),
    CommandCase("weights-lora-half-pair", render(lora={k: v for k, v in lora_tensors().items() if k != LORA_KEY}),
                f"{L}: missing key: blocks.1.ffn.net.0.proj.lora_B.weight"),
    CommandCase("weights-lora-block-beyond-model", validate(lora={**lora_tensors(), "pipe.dit.blocks.7.self_attn.q.lora_A.weight":
                                                                  torch.zeros(4, DIM)}),
                f"{L}: unknown key: pipe.dit.blocks.7.self_attn.q.lora_A.weight"),
    CommandCase("weights-lora-no-matrices", validate(lora={"text.weight": torch.zeros(2)}), f"{L}: unknown key: text.weight"),
    CommandCase("weights-lora-empty-header", validate(lora=header_bytes("{}")), f"{L}: holds no tensors"),
    # not safetensors, or damaged ones
    CommandCase("weights-vace-text-file", validate(vace=b"these are not weights\n" * 4), f"{V}: not a safetensors file"),
    CommandCase("weights-vace-empty-file", render(vace=b""), f"{V}: is 0 bytes long: not a safetensors file"),
    CommandCase("weights-vace-truncated", validate(True, vace=truncated(vace_tensors())), "truncated"),
    CommandCase("weights-lora-truncated-render", render(lora=truncated(lora_tensors())), f"{L}: "),
    CommandCase("weights-vace-extra-bytes", validate(vace=save(vace_tensors()) + b"\0" * 16), "extra bytes at the end"),
    CommandCase("weights-vace-header-not-json", validate(vace=header_bytes("{not json}", data=b"")), "its header: JSON does not parse"),
    CommandCase("weights-vace-header-not-utf8", validate(vace=header_bytes(b'{"\xff": 1}')), "its header is not UTF-8 text"),
    CommandCase("weights-vace-header-duplicate", validate(vace=header_bytes(
        '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
        data=b"\0" * 8)), "its header: duplicate key 'a'"),
    CommandCase("weights-vace-unknown-dtype", validate(vace=one_tensor_header({"dtype": "F99", "shape": [2], "data_offsets": [0, 8]})),
                f"tensor {VACE_KEY}: unknown dtype 'F99'"),
    CommandCase("weights-vace-negative-shape", validate(True, vace=one_tensor_header({"dtype": "F32", "shape": [-2],
                                                                                      "data_offsets": [0, 8]})),
                "is not a list of at most 8 non-negative integers"),
    CommandCase("weights-vace-offsets-disagree", validate(vace=one_tensor_header({"dtype": "F32", "shape": [4, 4],
                                                                                  "data_offsets": [0, 8]})),
                "shape [4, 4] of F32 needs 64 bytes, its data_offsets hold 8"),
    CommandCase("weights-vace-overlapping", validate(vace=header_bytes(json.dumps(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}),
        data=b"\0" * 8)), "overlaps the tensor before it"),
    CommandCase("weights-vace-huge-shape", validate(vace=one_tensor_header({"dtype": "F32", "shape": [2**40, 2**40],
                                                                           "data_offsets": [0, 8]})), "its data_offsets hold 8"),
    # pickles are refused, never unpickled
    CommandCase("weights-vace-pickle-pt", validate(vace=pickled, vace_name="vace.pt"),
                f"{V}: expected a .safetensors file (pickled weights are refused)"),
    CommandCase("weights-vace-pickle-disguised", render(vace=pickled), f"{V}: is a pickled torch file"),
    CommandCase("weights-lora-pickle-flag", lambda folder: render()(folder) + ["--memory-lora", str(_pickle_file(folder))],
                f"{L}: expected a .safetensors file (pickled weights are refused)"),
    # --vram-budget: parsed and range-checked wherever it is accepted; in validate it implies --vram
    CommandCase("weights-vram-budget-abc-validate", validate(False, "--vram-budget", "abc", with_lora=False),
                "--vram-budget: must be auto, none or a number of GiB"),
    CommandCase("weights-vram-budget-1e308-validate", validate(True, "--vram-budget", "1e308", with_lora=False),
                "--vram-budget: must be auto, none or a number of GiB above 0 and at most 1,048,576"),
    CommandCase("weights-vram-budget-1e308-render", render("--vram-budget", "1e308"), "--vram-budget: "),
    CommandCase("weights-vram-budget-negative", validate(False, "--vram-budget", "-4", with_lora=False), "got '-4'"),
    CommandCase("weights-vram-budget-nan", render("--vram-budget", "nan"), "got 'nan'"),
    CommandCase("weights-vram-budget-inf", validate(False, "--vram-budget", "inf", with_lora=False), "got 'inf'"),
    CommandCase("weights-vram-budget-zero", validate(False, "--vram-budget", "0g", with_lora=False), "got '0g'"),
    CommandCase("weights-vram-budget-empty", render("--vram-budget", ""), "--vram-budget: "),
    CommandCase("weights-vram-budget-too-small", validate(False, "--vram-budget", "0.01", with_lora=False),
                "--vram-budget: the render does not fit the VRAM budget of 0.0 GiB"),
    CommandCase("weights-vram-budget-calibrate",
                lambda folder: ["calibrate-cache", str(scene(folder)), "--out", str(folder / "c.json"), *TINY, "--vram-budget", "x"],
                "--vram-budget: must be auto, none"),
]


def _pickle_file(folder: Path) -> Path:
    path = folder / "lora.bin"
    pickled(path)
    return path


# --- fuzz -----------------------------------------------------------------------------------------


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` (a safetensors file) with its header length, header or tensor bytes broken."""
    (length,) = struct.unpack("<Q", data[:8])
    kind = rng.choice(["length", "header", "data", "truncate", "append"])
    out = bytearray(data)
    if kind == "length":
        out[:8] = struct.pack("<Q", rng.choice([0, 1, length - 1, length + 1, len(data), 2**63 - 1, rng.randrange(2**64)]))
    elif kind == "header":
        for _ in range(rng.randint(1, 6)):
            out[8 + rng.randrange(length)] = rng.choice(b'{}[]",:0123456789-e. \xffFIU')
    elif kind == "data" and len(out) > 8 + length:
        for _ in range(rng.randint(1, 16)):
            at = rng.randrange(8 + length, len(out))
            out[at] = rng.choice([0x7F, 0xFF, 0x80, rng.randrange(256)])  # NaN / inf exponents, sign flips, noise
    elif kind == "truncate":
        del out[rng.randrange(len(out)):]
    else:
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(out)


def _replace_values(tensors: dict, rng: random.Random) -> dict:
    """``tensors`` with one tensor's values or dtype replaced by something hostile."""
    key = rng.choice(sorted(tensors))
    value = tensors[key].clone()
    change = rng.choice(["nan", "inf", "huge", "negative", "int", "half", "bf16", "reshape", "empty", "rename"])
    if change in ("nan", "inf", "huge", "negative"):
        flat = value.view(-1)
        flat[rng.randrange(flat.numel())] = {"nan": float("nan"), "inf": float("inf"), "huge": 10.0 ** rng.randint(4, 38),
                                             "negative": -(10.0 ** rng.randint(0, 38))}[change]
    elif change == "int":
        value = value.to(rng.choice([torch.int8, torch.int32, torch.int64, torch.bool, torch.uint8]))
    elif change in ("half", "bf16"):
        value = value.to(torch.float16 if change == "half" else torch.bfloat16)
    elif change == "reshape":
        value = value.reshape(-1)
    elif change == "empty":
        value = value.reshape(-1)[:0]
    else:
        out = dict(tensors)
        out[key.replace(rng.choice(["0", "q", "weight", "."]), rng.choice(["1", "k", "bias", "_"]), 1)] = out.pop(key)
        return out
    return {**tensors, key: value.contiguous()}


def fuzz_cases(n: int, seed: int) -> list[CommandCase]:
    """``n`` seeded cases: a valid VACE or LoRA file whose bytes or values are mutated, checked by
    ``mirage validate`` (with ``--vram`` every third case)."""
    rng = random.Random(f"weights-{seed}")
    cases = []
    for i in range(n):
        which = rng.choice(["vace", "lora"])
        tensors = vace_tensors() if which == "vace" else lora_tensors()
        if rng.random() < 0.5:
            content: Content = _mutate(save(tensors), rng)
        else:
            content = _replace_values(tensors, rng)
        cases.append(CommandCase(f"fuzz-weights-{i}", validate(i % 3 == 0, **{which: content}), None))
    return cases
