"""LoRA stacks (``mirage_cli.backbone.lora_stack``) on the tiny real Wan2.2 transformer: tiny LoRA files in
each format people share (diffusers/PEFT, kohya/ComfyUI, original Wan / lightx2v with full deltas, the official
Mirage export), fused weights compared with an independent W + sum s_i * B_i A_i * alpha / rank and with
diffusers' own ``load_lora_adapter`` + ``fuse_lora`` path (the oracle); bad files refused with one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from mirage_cli.backbone.configs import tiny_transformer_config
from mirage_cli.backbone.lora_stack import LoraFile, check_lora_stack, fuse_lora_stack, lora_format
from mirage_cli.base.errors import InputError

CFG = tiny_transformer_config()
DIM = CFG["num_attention_heads"] * CFG["attention_head_dim"]  # 24
FFN = CFG["ffn_dim"]  # 32
# (original Wan module, kohya module, diffusers module, in, out)
MODULES = (
    ("self_attn.q", "self_attn_q", "attn1.to_q", DIM, DIM),
    ("self_attn.o", "self_attn_o", "attn1.to_out.0", DIM, DIM),
    ("cross_attn.k", "cross_attn_k", "attn2.to_k", DIM, DIM),
    ("ffn.0", "ffn_0", "ffn.net.0.proj", DIM, FFN),
    ("ffn.2", "ffn_2", "ffn.net.2", FFN, DIM),
)
# every module diffusers' kohya (musubi) converter requires in each block
FULL = tuple((f"{a}_attn.{o}", f"{a}_attn_{o}", f"attn{n}.{c}", DIM, DIM) for a, n in (("self", 1), ("cross", 2))
             for o, c in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))) + MODULES[3:]


def transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel.from_config(CFG).float().eval()


def pairs(seed: int, rank: int = 4, modules=MODULES) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """(block, diffusers module) -> (A [r, in], B [out, r]), random."""
    g = torch.Generator().manual_seed(seed)
    return {(b, d): (torch.randn(rank, i, generator=g) * 0.1, torch.randn(o, rank, generator=g) * 0.1)
            for b in range(CFG["num_layers"]) for _, _, d, i, o in modules}


def wan_name(d: str) -> str:
    return next(w for w, _, dd, _, _ in FULL if dd == d)


def kohya_name(d: str) -> str:
    return next(k for _, k, dd, _, _ in FULL if dd == d)


def write_diffusers(path, p):
    save_file({f"transformer.blocks.{b}.{d}.lora_{x}.weight": t.contiguous() for (b, d), (a, bb) in p.items()
               for x, t in (("A", a), ("B", bb))}, str(path))


def write_kohya(path, p, alpha):
    tensors = {}
    for (b, d), (a, bb) in p.items():
        stem = f"lora_unet_blocks_{b}_{kohya_name(d)}"
        tensors |= {f"{stem}.lora_down.weight": a, f"{stem}.lora_up.weight": bb, f"{stem}.alpha": torch.tensor(float(alpha))}
    save_file(tensors, str(path))


def write_wan(path, p, alpha=None, prefix="diffusion_model.", extra=None):
    tensors = {}
    for (b, d), (a, bb) in p.items():
        stem = f"{prefix}blocks.{b}.{wan_name(d)}"
        tensors |= {f"{stem}.lora_A.weight": a, f"{stem}.lora_B.weight": bb}
        if alpha is not None:
            tensors[f"{stem}.alpha"] = torch.tensor(float(alpha))
    save_file({**tensors, **(extra or {})}, str(path))


def expected(model, stack):
    """Independent reference: W + sum_i s_i * (B_i @ A_i) * ratio_i, in float32."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p, scale, ratio in stack:
        for (b, d), (a, bb) in p.items():
            params[f"blocks.{b}.{d}.weight"] += scale * ratio * (bb @ a)
    return params


def assert_params(model, reference, atol=1e-6):
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), reference[name], atol=atol, rtol=1e-5, msg=name)


def test_formats_are_recognised():
    assert lora_format(["lora_unet_blocks_0_ffn_0.lora_down.weight"]) == "kohya"
    assert lora_format(["transformer.blocks.0.attn1.to_q.lora_A.weight"]) == "diffusers"
    assert lora_format(["diffusion_model.blocks.0.self_attn.q.lora_down.weight"]) == "wan"
    assert lora_format(["pipe.dit.blocks.0.self_attn.q.lora_A.weight"]) == "wan"


def test_stack_of_every_format_matches_the_independent_sum(tmp_path):
    p1, p2, p3, p4 = pairs(1), pairs(2, rank=8), pairs(3), pairs(4, rank=2)
    write_diffusers(tmp_path / "peft.safetensors", p1)
    write_kohya(tmp_path / "kohya.safetensors", p2, alpha=4)  # alpha / rank = 0.5
    write_wan(tmp_path / "lightx2v.safetensors", p3, alpha=8)  # 2.0
    write_wan(tmp_path / "mirage.safetensors", p4, prefix="pipe.dit.")  # the official export: no alpha, ratio 1
    model = transformer()
    reference = expected(model, [(p1, 1.0, 1.0), (p2, 0.5, 0.5), (p3, -0.25, 2.0), (p4, 0.7, 1.0)])
    stack = [LoraFile(tmp_path / "peft.safetensors", 1.0), LoraFile(tmp_path / "kohya.safetensors", 0.5),
             LoraFile(tmp_path / "lightx2v.safetensors", -0.25), LoraFile(tmp_path / "mirage.safetensors", 0.7)]
    counts = fuse_lora_stack(model, stack)
    assert counts["blocks.0.attn1.to_q.weight"] == 4
    assert_params(model, reference)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_full_deltas_and_bias_deltas(tmp_path):
    g = torch.Generator().manual_seed(5)
    diff = torch.randn(DIM, DIM, generator=g) * 0.01
    diff_b = torch.randn(DIM, generator=g) * 0.01
    norm = torch.randn(DIM, generator=g) * 0.01
    p = pairs(6)
    write_wan(tmp_path / "distill.safetensors", p, alpha=4, extra={
        "diffusion_model.blocks.1.self_attn.k.diff": diff, "diffusion_model.blocks.1.self_attn.k.diff_b": diff_b,
        "diffusion_model.blocks.0.self_attn.norm_q.diff": norm})
    model = transformer()
    reference = expected(model, [(p, 2.0, 1.0)])
    reference["blocks.1.attn1.to_k.weight"] += 2.0 * diff
    reference["blocks.1.attn1.to_k.bias"] += 2.0 * diff_b
    reference["blocks.0.attn1.norm_q.weight"] += 2.0 * norm
    fuse_lora_stack(model, [LoraFile(tmp_path / "distill.safetensors", 2.0)])
    assert_params(model, reference)


def test_matches_diffusers_own_lora_fusing(tmp_path):
    """The oracle: diffusers' converter + PEFT adapters + fuse_lora on the same tiny transformer."""
    from diffusers import WanPipeline

    p1, p2 = pairs(7, modules=FULL), pairs(8, rank=8)
    write_kohya(tmp_path / "style.safetensors", p1, alpha=2)
    write_wan(tmp_path / "speed.safetensors", p2, alpha=16)
    ours, theirs = transformer(), transformer()
    fuse_lora_stack(ours, [LoraFile(tmp_path / "style.safetensors", 0.8), LoraFile(tmp_path / "speed.safetensors", 0.5)])
    for name in ("style", "speed"):
        state = WanPipeline.lora_state_dict(str(tmp_path / f"{name}.safetensors"))
        theirs.load_lora_adapter(state, adapter_name=name, prefix="transformer")
    theirs.set_adapters(["style", "speed"], weights=[0.8, 0.5])
    theirs.fuse_lora(lora_scale=1.0, adapter_names=["style", "speed"])
    theirs.unload_lora()
    assert_params(ours, dict(theirs.named_parameters()), atol=1e-5)


def test_bfloat16_fuse_is_deterministic(tmp_path):
    write_wan(tmp_path / "a.safetensors", pairs(9), alpha=4)
    write_diffusers(tmp_path / "b.safetensors", pairs(10))
    stack = [LoraFile(tmp_path / "a.safetensors", 1.0), LoraFile(tmp_path / "b.safetensors", 0.5)]
    base = transformer().to(torch.bfloat16)
    one, two = copy.deepcopy(base), copy.deepcopy(base)
    fuse_lora_stack(one, stack)
    fuse_lora_stack(two, stack)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    assert not torch.equal(one.state_dict()["blocks.0.attn1.to_q.weight"], base.state_dict()["blocks.0.attn1.to_q.weight"])


@pytest.mark.parametrize("tensors, message", [
    ({"diffusion_model.blocks.5.self_attn.q.lora_A.weight": torch.zeros(4, DIM),
      "diffusion_model.blocks.5.self_attn.q.lora_B.weight": torch.zeros(DIM, 4)}, "the model has no blocks.5.attn1.to_q"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, DIM + 1),
      "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(DIM, 4)}, "wrong shape: diffusion_model.blocks.0.self_attn.q"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, DIM)}, "missing key: the lora_B of blocks.0.attn1.to_q"),
    ({"diffusion_model.patch_embedding.lora_A.weight": torch.zeros(4, DIM)}, "unknown key: diffusion_model.patch_embedding"),
    ({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(4, DIM),
      "lora_unet_blocks_0_self_attn_q.lora_up.weight": torch.zeros(DIM, 4),
      "lora_unet_blocks_0_self_attn_q.dora_scale": torch.zeros(1, DIM)}, "unknown key: lora_unet_blocks_0_self_attn_q.dora_scale"),
    ({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(3, DIM),
      "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(DIM, 4)}, "wrong rank: blocks.0.attn1.to_q (A rank 3, B rank 4)"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.full((4, DIM), 1e30),
      "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(DIM, 4)}, "holds the value 1e+30"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.full((4, DIM), float("nan")),
      "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(DIM, 4)}, "values are NaN or infinite"),
])
def test_bad_files_are_refused_naming_file_and_key(tmp_path, tensors, message):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    model = transformer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(InputError) as error:
        check_lora_stack(model, [LoraFile(path, 1.0)], values=True)
    line = str(error.value.problems[0])
    assert str(path) in line and "loras[0]" in line and message in line and "\n" not in line
    with pytest.raises(InputError):
        fuse_lora_stack(model, [LoraFile(path, 1.0)])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing fused


# --- through the CLI, on the tiny preset (the same tiny transformer config) -----------------------------------


def test_a_render_with_a_two_lora_stack_is_recorded_and_deterministic(tmp_path):
    from render_helpers import SMALL, cli, file_hash, write_small_scene

    write_wan(tmp_path / "speed.safetensors", pairs(11), alpha=4)
    write_kohya(tmp_path / "style.safetensors", pairs(12), alpha=2)
    scene = write_small_scene(tmp_path / "scene", loras=[{"path": str(tmp_path / "speed.safetensors"), "scale": 1.0},
                                                         str(tmp_path / "style.safetensors")])
    runs = []
    for name in ("one", "two"):
        result = cli("render", scene, "--out", tmp_path / name, *SMALL)
        assert result.exit_code == 0, result.stderr
        runs.append(tmp_path / name)
    assert file_hash(runs[0] / "video.mp4") == file_hash(runs[1] / "video.mp4")
    recorded = json.loads((runs[0] / "report.json").read_text())["config"]["loras"]
    assert recorded == [{"sha256": file_hash(tmp_path / "speed.safetensors"), "scale": 1.0},
                        {"sha256": file_hash(tmp_path / "style.safetensors"), "scale": 1.0}]
    shown = cli("inspect", runs[0]).stdout
    assert f"lora stack        {tmp_path / 'speed.safetensors'} x1.0 sha256 {recorded[0]['sha256'][:12]}" in shown
    plain = cli("render", scene, "--out", tmp_path / "plain", *SMALL, "--lora", f"{tmp_path / 'speed.safetensors'}:0")
    assert plain.exit_code == 0, plain.stderr  # the flag replaces the spec's stack; scale 0 changes nothing
    assert cli("render", write_small_scene(tmp_path / "bare"), "--out", tmp_path / "bare-run", *SMALL).exit_code == 0
    assert file_hash(tmp_path / "plain" / "video.mp4") == file_hash(tmp_path / "bare-run" / "video.mp4")
    assert file_hash(tmp_path / "plain" / "video.mp4") != file_hash(runs[0] / "video.mp4")
    changed = cli("render", scene, "--out", runs[0], *SMALL, "--lora", f"{tmp_path / 'speed.safetensors'}:0.5")
    assert changed.exit_code == 2 and "loras" in changed.stderr  # a changed stack is a changed run


def test_bad_stacks_exit_2_with_one_line(tmp_path):
    from render_helpers import SMALL, cli, write_small_scene

    save_file({"diffusion_model.blocks.9.self_attn.q.lora_A.weight": torch.zeros(4, DIM),
               "diffusion_model.blocks.9.self_attn.q.lora_B.weight": torch.zeros(DIM, 4)}, str(tmp_path / "big.safetensors"))
    write_diffusers(tmp_path / "good.safetensors", pairs(13))
    scene = write_small_scene(tmp_path / "scene")
    for command in ("render", "validate"):
        extra = ["--out", str(tmp_path / "run"), *SMALL] if command == "render" else ["--preset", "tiny"]
        result = cli(command, scene, *extra, "--lora", str(tmp_path / "good.safetensors"), "--lora", f"{tmp_path / 'big.safetensors'}:0.5")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.stderr
        assert (f"{tmp_path / 'big.safetensors'}: loras[1]: unknown keys: diffusion_model.blocks.9.self_attn.q.lora_A.weight "
                "(the model has no blocks.9.attn1.to_q)") in lines[0]
        assert not (tmp_path / "run").exists()
    for flag, message in ((f"{tmp_path / 'good.safetensors'}:abc", "expected FILE or FILE:SCALE"),
                          (f"{tmp_path / 'good.safetensors'}:50", "loras[0].scale: must be a number between -10 and 10"),
                          (str(tmp_path / "missing.safetensors"), "loras[0]:")):
        result = cli("validate", scene, "--preset", "tiny", "--lora", flag)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
