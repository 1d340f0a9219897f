"""Trained memory-conditioning weights (mirage_cli.backbone.vace / lora) on tiny real diffusers models.

The checkpoints are written here with the official code's parameter names and shapes (its
``VaceWanModel``: DiffSynth DiT blocks plus ``before_proj`` in block 0 and ``after_proj`` in every
block; its LoRA export: ``pipe.dit.blocks.N.<module>.lora_A/B.weight``). No trained weights exist
here; nothing is mocked.
"""

from __future__ import annotations

import copy
import math
import struct

import pytest
import torch
from safetensors.torch import save_file

from mirage_cli.backbone.configs import tiny_transformer_config
from mirage_cli.backbone.lora import apply_lora
from mirage_cli.backbone.vace import VACE_IN_CHANNELS, attach_vace
from mirage_cli.base.errors import InputError

CFG = {**tiny_transformer_config(), "num_layers": 4}
DIM = CFG["num_attention_heads"] * CFG["attention_head_dim"]
FFN = CFG["ffn_dim"]


def official_vace_names(blocks: int, dim: int = DIM, ffn: int = FFN) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the official VaceWanModel with ``blocks`` blocks (default: tiny sizes)."""
    names = {"vace_patch_embedding.weight": (dim, VACE_IN_CHANNELS, 1, 2, 2), "vace_patch_embedding.bias": (dim,)}
    for n in range(blocks):
        p = f"vace_blocks.{n}."
        linears = [f"{a}.{m}" for a in ("self_attn", "cross_attn") for m in "qkvo"] + ["after_proj"] + (["before_proj"] if n == 0 else [])
        for name in linears:
            names[p + name + ".weight"], names[p + name + ".bias"] = (dim, dim), (dim,)
        for a in ("self_attn", "cross_attn"):
            names[f"{p}{a}.norm_q.weight"] = names[f"{p}{a}.norm_k.weight"] = (dim,)
        names[p + "norm3.weight"] = names[p + "norm3.bias"] = (dim,)
        names[p + "ffn.0.weight"], names[p + "ffn.0.bias"] = (ffn, dim), (ffn,)
        names[p + "ffn.2.weight"], names[p + "ffn.2.bias"] = (dim, ffn), (dim,)
        names[p + "modulation"] = (1, 6, dim)
    return names


def write_vace(path, blocks=2, zero_after=True, drop=(), extra=None, reshape=None):
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for name, shape in official_vace_names(blocks).items():
        if name in drop:
            continue
        if reshape and name == reshape[0]:
            shape = reshape[1]
        value = 0.1 * torch.randn(shape, generator=gen)
        tensors[name] = torch.zeros(shape) if zero_after and ".after_proj." in name else value
    tensors.update(extra or {})
    save_file(tensors, str(path))
    return tensors


@pytest.fixture
def base():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(**CFG).eval()


def inputs(seed=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 48, 3, 8, 8, generator=gen)
    t = torch.tensor([500.0])  # diffusers' WanVACETransformer3DModel takes one timestep per sample
    text = torch.randn(1, 16, CFG["text_dim"], generator=gen)
    control = torch.randn(1, VACE_IN_CHANNELS, 3, 8, 8, generator=gen)
    return x, t, text, control


@torch.no_grad()
def run(model, control=None):
    x, t, text, ctrl = inputs()
    kwargs = {} if control is None else {"control_hidden_states": ctrl if control is True else control}
    return model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False, **kwargs)[0]


def test_an_official_vace_checkpoint_loads_completely(tmp_path, base):
    written = write_vace(tmp_path / "vace.safetensors", zero_after=False)
    model = attach_vace(base, tmp_path / "vace.safetensors")
    assert model.config.vace_layers == [0, 2]  # 2 blocks over 4 layers: every 2nd, as 15 over Wan2.2's 30
    state = model.state_dict()
    assert torch.equal(state["vace_blocks.0.proj_in.weight"], written["vace_blocks.0.before_proj.weight"])
    assert torch.equal(state["vace_blocks.1.norm2.bias"], written["vace_blocks.1.norm3.bias"])
    assert torch.equal(state["vace_blocks.1.scale_shift_table"], written["vace_blocks.1.modulation"])
    assert torch.equal(state["vace_blocks.0.ffn.net.2.weight"], written["vace_blocks.0.ffn.2.weight"])
    assert state["blocks.3.attn1.to_q.weight"].data_ptr() == base.state_dict()["blocks.3.attn1.to_q.weight"].data_ptr()  # shared


def test_vace_layouts_of_the_known_checkpoints():
    from mirage_cli.backbone.vace import vace_layers

    assert vace_layers(30, 15) == list(range(0, 30, 2))  # the official Mirage code
    assert vace_layers(30, 8) == [0, 4, 8, 12, 16, 20, 24, 28]  # Spatia's released model
    assert vace_layers(40, 8) == list(range(0, 40, 5))  # Wan 14B VACE
    for layers, blocks in ((30, 31), (30, 0), (30, 11)):
        with pytest.raises(ValueError):
            vace_layers(layers, blocks)


def test_zero_after_proj_reproduces_the_base_exactly_and_trained_hints_change_it(tmp_path, base):
    write_vace(tmp_path / "zero.safetensors", zero_after=True)
    zero = attach_vace(base, tmp_path / "zero.safetensors")
    assert torch.equal(run(zero, control=True), run(base))
    write_vace(tmp_path / "trained.safetensors", zero_after=False)
    trained = attach_vace(base, tmp_path / "trained.safetensors")
    assert (run(trained, control=True) - run(base)).abs().max() > 1e-4


@pytest.mark.parametrize("damage, names", [
    ({"drop": ("vace_blocks.1.ffn.2.bias",)}, ["missing key", "vace_blocks.1.ffn.net.2.bias"]),
    ({"extra": {"vace_blocks.0.self_attn.k_img.weight": torch.zeros(2, 2)}}, ["unknown key", "vace_blocks.0.self_attn.k_img.weight"]),
    ({"extra": {"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}}, ["unknown key", "blocks.0.self_attn.q.weight"]),
    ({"reshape": ("vace_blocks.0.after_proj.weight", (DIM, DIM + 1))}, ["wrong shape", "vace_blocks.0.proj_out.weight"]),
    ({"reshape": ("vace_patch_embedding.weight", (DIM, 64, 1, 2, 2))}, ["wrong shape", "vace_patch_embedding.weight"]),
], ids=["missing", "unknown-in-block", "not-vace", "shape", "context-channels"])
def test_bad_vace_files_name_the_file_and_the_key(tmp_path, base, damage, names):
    path = tmp_path / "vace.safetensors"
    write_vace(path, **damage)
    with pytest.raises(InputError) as info:
        attach_vace(base, path)
    message = "\n".join(str(p) for p in info.value.problems)
    assert str(path) in message and all(name in message for name in names), message


def test_pickles_truncated_and_missing_files_are_refused(tmp_path, base):
    pickle = tmp_path / "vace.pt"
    torch.save({"vace": {"x": torch.zeros(1)}}, pickle)
    renamed = tmp_path / "disguised.safetensors"
    renamed.write_bytes(pickle.read_bytes())
    good = tmp_path / "good.safetensors"
    write_vace(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path, words in ((pickle, "pickled"), (renamed, "pickled"), (truncated, "truncated"),
                        (tmp_path / "absent.safetensors", "file not found")):
        with pytest.raises(InputError) as info:
            attach_vace(base, path)
        assert str(path) in str(info.value.problems[0]) and words in str(info.value.problems[0])


def official_lora(rank=4, zero=False, seed=3, modules=("self_attn.q", "cross_attn.v", "ffn.0", "ffn.2"), blocks=CFG["num_layers"]):
    """The official export's LoRA keys (``pipe.dit.`` prefix) for the first ``blocks`` blocks of the tiny DiT."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {"ffn.0": (DIM, FFN), "ffn.2": (FFN, DIM)}
    out = {}
    for block in range(blocks):
        for module in modules:
            d_in, d_out = sizes.get(module, (DIM, DIM))
            key = f"pipe.dit.blocks.{block}.{module}"
            out[key + ".lora_A.weight"] = 0.1 * torch.randn(rank, d_in, generator=gen)
            out[key + ".lora_B.weight"] = torch.zeros(d_out, rank) if zero else 0.1 * torch.randn(d_out, rank, generator=gen)
    return out


def test_a_zero_lora_changes_nothing_and_merged_equals_unmerged(tmp_path):
    from diffusers import WanTransformer3DModel

    def fresh():
        torch.manual_seed(0)
        return WanTransformer3DModel(**CFG).eval()

    reference = run(fresh())
    save_file(official_lora(zero=True), str(tmp_path / "zero.safetensors"))
    for merge in (True, False):
        model = fresh()
        apply_lora(model, tmp_path / "zero.safetensors", merge=merge)
        assert torch.equal(run(model), reference)
    save_file(official_lora(), str(tmp_path / "lora.safetensors"))
    merged, adapter = fresh(), fresh()
    apply_lora(merged, tmp_path / "lora.safetensors", scale=0.7, merge=True)
    apply_lora(adapter, tmp_path / "lora.safetensors", scale=0.7, merge=False)
    assert (run(merged) - reference).abs().max() > 1e-4
    torch.testing.assert_close(run(merged), run(adapter), rtol=1e-5, atol=1e-5)
    assert not any("lora" in name for name, _ in merged.named_parameters())  # fused: no adapter left


def test_bad_lora_files_name_the_key(tmp_path, base):
    cases = {
        "unknown": ({**official_lora(), "pipe.dit.head.head.lora_A.weight": torch.zeros(4, DIM)}, "head.head.lora_A"),
        "half": ({k: v for k, v in official_lora().items() if "blocks.1.ffn.0.lora_B" not in k}, "blocks.1.ffn.net.0.proj.lora_B"),
        "shape": ({**official_lora(), "pipe.dit.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, DIM + 3)},
                  "blocks.0.self_attn.q.lora_A"),
    }
    for name, (tensors, key) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(InputError) as info:
            apply_lora(base, path)
        message = "\n".join(str(p) for p in info.value.problems)
        assert str(path) in message and key in message, (name, message)


def test_vace_forward_is_the_base_forward_and_diffusers_vace_forward(tmp_path, base):
    """Our forward (per-token timesteps, references outside the branch) equals diffusers' base forward
    with zero hints (per-token timesteps too), and diffusers' VACE forward where that one applies
    (one timestep per sample, no references)."""
    from mirage_cli.backbone.lean_forward import use_lean_forward
    from mirage_cli.backbone.vace_forward import vace_forward

    x, t, text, control = inputs()
    per_token = torch.full((1, 3 * 4 * 4), 500.0)
    per_token[:, :16] = 0.0  # frame 0 clean, as Wan2.2-TI2V runs
    write_vace(tmp_path / "zero.safetensors", zero_after=True)
    zero = attach_vace(base, tmp_path / "zero.safetensors")
    with torch.no_grad():
        expected = base(hidden_states=x, timestep=per_token, encoder_hidden_states=text, return_dict=False)[0]
        assert torch.equal(vace_forward(zero, x, per_token, text, control), expected)
        assert torch.equal(vace_forward(use_lean_forward(copy.deepcopy(base)), x, per_token, text), expected)
    write_vace(tmp_path / "trained.safetensors", zero_after=False)
    trained = attach_vace(base, tmp_path / "trained.safetensors")
    with torch.no_grad():
        ours = vace_forward(trained, x, t, text, control)
        theirs = trained(hidden_states=x, timestep=t, encoder_hidden_states=text, control_hidden_states=control, return_dict=False)[0]
        assert torch.equal(ours, theirs)
        # references: the first latent frame is a reference; the context covers the two frames after it
        with_ref = vace_forward(trained, x, per_token, text, control[:, :, 1:], ref_frames=1)
        assert with_ref.shape == x.shape and not torch.equal(with_ref, expected)


def test_references_take_the_official_rotary_positions(base):
    """The official DiT (LatentSpatialMemory, wan_video_new.py) gives reference tokens temporal
    positions -n..-1 (``ref_freqs[0][-n:]``), height rows h..2h-1 (``ref_freqs[1][h : 2 * h]``) and
    width rows 0..w-1; the frames after them keep the plain rotary from 0. Rows 0..h-1 for the
    references (this project's convention before) fail the height check."""
    from mirage_cli.backbone.vace_forward import reference_rotary

    n, x = 2, torch.zeros(1, 48, 5, 8, 8)
    rope = base.rope
    hh = ww = 8 // rope.patch_size[1]
    cos, sin = reference_rotary(rope, x, n)
    assert cos.shape == rope(x)[0].shape
    torch.testing.assert_close(cos[:, n * hh * ww :], rope(x[:, :, n:])[0])  # the frames: plain, from 0
    torch.testing.assert_close(sin[:, n * hh * ww :], rope(x[:, :, n:])[1])
    dims = [rope.t_dim, rope.h_dim, rope.w_dim]
    ref_cos = cos[0, : n * hh * ww, 0].view(n, hh, ww, -1).split(dims, dim=-1)  # (t, h, w) parts
    ref_sin = sin[0, : n * hh * ww, 0].view(n, hh, ww, -1).split(dims, dim=-1)
    table_cos, table_sin = rope.freqs_cos.split(dims, dim=1), rope.freqs_sin.split(dims, dim=1)
    for j in range(n):  # temporal position -(n - j): cos of row n - j, sine negated
        assert torch.equal(ref_cos[0][j, 0, 0], table_cos[0][n - j]) and torch.equal(ref_sin[0][j, 0, 0], -table_sin[0][n - j])
    for y in range(hh):  # height position hh + y
        assert torch.equal(ref_cos[1][0, y, 0], table_cos[1][hh + y]) and torch.equal(ref_sin[1][0, y, 0], table_sin[1][hh + y])
        assert not torch.equal(ref_cos[1][0, y, 0], table_cos[1][y])
    for w in range(ww):  # width position w
        assert torch.equal(ref_cos[2][0, 0, w], table_cos[2][w]) and torch.equal(ref_sin[2][0, 0, w], table_sin[2][w])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_weights_that_are_not_finite_or_absurdly_large_are_refused_naming_the_tensor(tmp_path, base, value):
    from safetensors.torch import load_file

    vace = tmp_path / "vace.safetensors"
    write_vace(vace, blocks=2, zero_after=False)
    tensors = load_file(str(vace))
    tensors["vace_blocks.1.cross_attn.k.weight"][3, 5] = value
    save_file(tensors, str(vace))
    with pytest.raises(InputError) as info:
        attach_vace(base, vace, field="conditioning.vace")
    (problem,) = info.value.problems
    assert problem.file == str(vace) and problem.field == "conditioning.vace"
    assert "vace_blocks.1.cross_attn.k.weight" in problem.message

    lora = official_lora(blocks=1)
    lora["pipe.dit.blocks.0.ffn.0.lora_B.weight"][0, 0] = value
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    with pytest.raises(InputError) as info:
        apply_lora(copy.deepcopy(base), path, field="conditioning.lora")
    assert "pipe.dit.blocks.0.ffn.0.lora_B.weight" in str(info.value.problems[0]) and str(path) in str(info.value.problems[0])


def test_the_guarded_reader_reads_what_safetensors_writes_block_by_block(tmp_path, monkeypatch):
    """``open_safetensors`` reads every dtype as safetensors' own loader does, and checks values across
    the blocks it reads them in (a NaN in the last block of a tensor is found, nothing is kept)."""
    from safetensors.torch import load_file

    from mirage_cli.base import safetensors_file
    from mirage_cli.base.safetensors_file import open_safetensors

    monkeypatch.setattr(safetensors_file, "BLOCK_BYTES", 64)  # many blocks per tensor
    gen = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(7, 9, generator=gen), "bf16": torch.randn(33, generator=gen).bfloat16(),
               "f16": torch.randn(3, 2, 2, generator=gen).half(), "i64": torch.arange(5), "flag": torch.tensor([True, False]),
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path), metadata={"format": "test"})
    file = open_safetensors(path, field="x")
    assert file.metadata == {"format": "test"} and set(file.tensors) == set(tensors)
    expected = load_file(str(path))
    for name, value in file.read_all(max_magnitude=10.0).items():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    assert file.value_problem(10.0) is None
    tensors["f32"][6, 8] = float("nan")  # the last value: in the last block
    save_file(tensors, str(path))
    file = open_safetensors(path, field="x")
    assert file.value_problem() == ("tensor f32: 1 of 63 values are NaN or infinite; the file is damaged or was saved "
                                    "from a diverged training run")
    with pytest.raises(InputError) as info:
        file.read("f32")
    assert str(info.value) == f"{path}: x: {file.value_problem()}"


@pytest.mark.parametrize("make, words", [
    (lambda: struct.pack("<Q", 2**62) + b"{}", "header claims 4,611,686,018,427,387,904 bytes"),
    (lambda: _header('{"a": ' + "[" * 200 + "]" * 200 + "}"), "its header: JSON nested deeper than 3 levels"),
    (lambda: _header('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 4), "truncated"),
    (lambda: _header('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}', b"\0" * 8), "exactly dtype, shape"),
    (lambda: b"\x80\x04\x95" + b"\0" * 20, "is a pickled torch file"),
], ids=["length-2^62", "nested", "truncated", "extra-entry-field", "pickle"])
def test_the_guarded_reader_refuses_a_damaged_header_in_one_problem(tmp_path, make, words):
    from mirage_cli.base.safetensors_file import open_safetensors

    path = tmp_path / "bad.safetensors"
    path.write_bytes(make())
    with pytest.raises(InputError) as info:
        open_safetensors(path, field="conditioning.vace")
    (problem,) = info.value.problems
    assert problem.file == str(path) and problem.field == "conditioning.vace" and words in problem.message, problem


def _header(text: str, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(text)) + text.encode() + data


def write_sparse_safetensors(path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> None:
    """A valid safetensors file of zeros with these tensor shapes, its data a hole in the file (no disk
    used): real-size headers for the checks that read headers only."""
    import json

    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)


@pytest.mark.parametrize("dtype, name", [(torch.int32, "I32"), (torch.bool, "BOOL")])
def test_integer_and_boolean_tensors_are_one_problem_naming_the_tensor_and_dtype(tmp_path, base, dtype, name):
    path = tmp_path / "vace.safetensors"
    tensors = write_vace(path, blocks=2)
    tensors["vace_blocks.1.ffn.0.weight"] = tensors["vace_blocks.1.ffn.0.weight"].to(dtype)
    save_file(tensors, str(path))
    with pytest.raises(InputError) as info:
        attach_vace(base, path, field="conditioning.vace")
    (problem,) = info.value.problems
    assert problem.message.startswith(f"tensor vace_blocks.1.ffn.0.weight ({name}): trained weights are stored as F16, BF16")


def test_a_lora_of_rank_0_or_of_two_ranks_is_refused_from_its_header(tmp_path, base):
    for name, tensors, words in (
        ("zero", {k: v[:0] if "lora_A" in k else v[:, :0] for k, v in official_lora(blocks=1).items()}, "rank 0: a LoRA needs rank 1"),
        ("two", {**official_lora(blocks=1), "pipe.dit.blocks.0.ffn.2.lora_B.weight": torch.zeros(DIM, 3)}, "(A rank 4, B rank 3)"),
    ):
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        model = copy.deepcopy(base)
        with pytest.raises(InputError) as info:
            apply_lora(model, path, field="conditioning.lora")
        (problem,) = info.value.problems
        assert "wrong rank" in problem.message and words in problem.message, problem
        assert not any("lora" in n for n, _ in model.named_parameters())  # refused before PEFT made a layer


def test_the_model_free_check_refuses_what_loading_refuses(tmp_path, base):
    """``check_trained_weights`` (``validate``, a render's first stage) on the transformer's config, on the
    meta device, gives the problem ``attach_vace`` / ``apply_lora`` give on the real model."""
    from types import SimpleNamespace

    from mirage_cli.backbone.trained import check_trained_weights
    from mirage_cli.backbone.vace import transformer_config

    config = transformer_config(base)
    good_vace, good_lora = tmp_path / "vace.safetensors", tmp_path / "lora.safetensors"
    write_vace(good_vace, blocks=2, zero_after=False)
    save_file(official_lora(), str(good_lora))
    check_trained_weights(SimpleNamespace(vace=good_vace, lora=good_lora), config, values=True)
    cases = {
        "vace": (write_vace, {"extra": {"vace_blocks.0.self_attn.k_img.weight": torch.zeros(2, 2)}}),
        "vace-shape": (write_vace, {"reshape": ("vace_blocks.0.after_proj.weight", (DIM, DIM + 1))}),
        "lora": (None, {**official_lora(), "pipe.dit.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, DIM + 3)}),
    }
    for name, (writer, change) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        if writer is None:
            save_file(change, str(path))
            trained = SimpleNamespace(vace=None, lora=path)
        else:
            writer(path, blocks=2, **change)
            trained = SimpleNamespace(vace=path, lora=None)
        with pytest.raises(InputError) as checked:
            check_trained_weights(trained, config, values=False)
        with pytest.raises(InputError) as loaded:
            if writer is None:
                apply_lora(copy.deepcopy(base), path, field="conditioning.lora")
            else:
                attach_vace(base, path, field="conditioning.vace")
        assert checked.value.problems == loaded.value.problems, name
