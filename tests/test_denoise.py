"""The chunk denoising loop (mirage_cli/denoise/loop.py) on the tiny preset: what the transformer receives,
pin_until, guidance, determinism, and bit-exact mid-chunk resume through a safetensors file.

Real tiny components throughout (float32 on the CPU so equalities are exact); nothing is mocked.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from mirage_cli.backbone import load_backbone
from mirage_cli.base.options import BackboneOptions
from mirage_cli.denoise.loop import (
    DenoiseState,
    denoise_chunk,
    forward_noised,
    per_token_timestep,
    token_mask_to_cells,
    token_pin_mask,
)

C, T, H, W = 48, 3, 4, 6  # latent grid: 3 latent frames of 4x6 cells = 2x3 tokens per frame


def make_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, C, T, H, W, generator=g)
    cond_frame0 = torch.randn(C, H, W, generator=g)
    pinned_latents = torch.randn(T, C, H, W, generator=g)
    pin_mask = torch.zeros(T, H, W, dtype=torch.bool)
    pin_mask[1, 0:2, 0:4] = True  # frame 1: tokens (0,0) and (0,1) fully covered
    pin_mask[1, 2, 4] = True  # frame 1: one cell of token (1,2) only -> not a clean token
    pin_mask[2, 2:4, 2:6] = True  # frame 2: tokens (1,1) and (1,2)
    pin_mask[0] = True  # frame 0 is ignored (always the condition)
    return noise, cond_frame0, pinned_latents, pin_mask


def run(backbone, prompts, *, mode="clean", pin_until=1.0, guidance=1.0, steps=4, pin_mask=None, generator_seed=7, **kw):
    noise, cond_frame0, pinned, mask = make_inputs()
    cond, uncond = prompts
    return denoise_chunk(
        backbone,
        noise=noise,
        cond_frame0=cond_frame0,
        pinned_latents=pinned,
        pin_mask=mask if pin_mask is None else pin_mask,
        pin_mode=mode,
        pin_until=pin_until,
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        guidance=guidance,
        steps=steps,
        shift=5.0,
        generator=kw.pop("generator", None) or torch.Generator().manual_seed(generator_seed),
        **kw,
    )


class Recorder:
    """A forward pre-hook on the transformer that keeps what every call received."""

    def __init__(self, transformer):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.handle = transformer.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append(
            (kwargs["hidden_states"].clone(), kwargs["timestep"].clone(), kwargs["encoder_hidden_states"].clone())
        )

    def close(self):
        self.handle.remove()


def expected_token_grid():
    """Clean-mode pinned tokens of make_inputs' mask, by hand: [T, 2, 3] bool."""
    tokens = torch.zeros(T, 2, 3, dtype=torch.bool)
    tokens[1, 0, 0] = tokens[1, 0, 1] = True
    tokens[2, 1, 1] = tokens[2, 1, 2] = True
    return tokens


def test_token_pin_mask_hand_case():
    _, _, _, mask = make_inputs()
    tokens = token_pin_mask(mask)
    expected = expected_token_grid()
    expected[0] = True  # token_pin_mask itself does not special-case frame 0
    assert torch.equal(tokens, expected)
    cells = token_mask_to_cells(tokens)
    assert cells.shape == (T, H, W)
    assert torch.equal(token_pin_mask(cells), tokens)


def test_per_token_timestep_layout():
    zero = torch.zeros(2, 2, 3, dtype=torch.bool)
    zero[0] = True
    zero[1, 1, 2] = True
    ts = per_token_timestep(torch.tensor(700), zero, batch=2)
    assert ts.shape == (2, 12) and ts.dtype == torch.float32
    assert torch.equal(ts[0], torch.tensor([0.0] * 6 + [700.0] * 5 + [0.0]))
    assert torch.equal(ts[0], ts[1])


def scheduler_reference(backbone, steps):
    scheduler = backbone.make_scheduler(5.0)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.clone(), scheduler.sigmas.clone()


def test_clean_mode_transformer_inputs(backbone, prompts):
    steps = 4
    _, cond_frame0, pinned, mask = make_inputs()
    timesteps, _ = scheduler_reference(backbone, steps)
    rec = Recorder(backbone.transformer)
    try:
        result = run(backbone, prompts, mode="clean", pin_until=1.0, guidance=1.0, steps=steps)
    finally:
        rec.close()
    assert result.completed and len(rec.calls) == steps
    memory_tokens = expected_token_grid()
    zero_tokens = memory_tokens.clone()
    zero_tokens[0] = True  # frame 0 always t=0
    cells = token_mask_to_cells(memory_tokens)  # [T, h, w] cells of fully covered tokens
    memory = pinned.permute(1, 0, 2, 3)  # [C, T, h, w]
    for i, (hidden, timestep, text) in enumerate(rec.calls):
        assert timestep.shape == (1, T * 2 * 3)
        grid = timestep.view(T, 2, 3)
        assert torch.equal(grid[zero_tokens], torch.zeros(int(zero_tokens.sum())))
        assert torch.equal(grid[~zero_tokens], torch.full((int((~zero_tokens).sum()),), float(timesteps[i])))
        # Frame 0 carries the condition, pinned tokens carry the warped memory, exactly.
        assert torch.equal(hidden[0, :, 0], cond_frame0)
        assert torch.equal(hidden[0][:, cells], memory[:, cells])
        # The lone covered cell of a partly covered token is not pinned.
        assert not torch.equal(hidden[0, :, 1, 2, 4], pinned[1, :, 2, 4])
        assert torch.equal(text, prompts[0])
    # Output: frame 0 and the pinned tokens are exactly their clean latents.
    out = result.latents[0]
    assert torch.equal(out[:, 0], cond_frame0)
    assert torch.equal(out[:, cells], memory[:, cells])


def test_noised_mode_transformer_inputs(backbone, prompts):
    steps = 4
    _, cond_frame0, pinned, mask = make_inputs()
    timesteps, sigmas = scheduler_reference(backbone, steps)
    generator = torch.Generator().manual_seed(11)
    replay = torch.Generator().manual_seed(11)  # same state: replays the loop's eps draws
    rec = Recorder(backbone.transformer)
    try:
        result = run(backbone, prompts, mode="noised", pin_until=1.0, guidance=1.0, steps=steps, generator=generator)
    finally:
        rec.close()
    assert result.completed and len(rec.calls) == steps
    memory_cells = mask.clone()
    memory_cells[0] = False  # cells, not tokens: the partly covered token's lone cell is pinned too
    frame0 = torch.zeros(T, 2, 3, dtype=torch.bool)
    frame0[0] = True
    memory = pinned.permute(1, 0, 2, 3)  # [C, T, h, w]
    for i, (hidden, timestep, _) in enumerate(rec.calls):
        grid = timestep.view(T, 2, 3)
        assert torch.equal(grid[frame0], torch.zeros(6))
        assert torch.equal(grid[~frame0], torch.full((12,), float(timesteps[i])))  # uniform, pinned included
        eps = torch.randn(1, C, T, H, W, generator=replay)[0]
        expected = forward_noised(memory, eps, sigmas[i])  # [C, T, h, w]
        assert torch.equal(hidden[0][:, memory_cells], expected[:, memory_cells])
        assert torch.equal(hidden[0, :, 0], cond_frame0)
        assert not torch.equal(hidden[0][:, memory_cells], memory[:, memory_cells])  # really noised
    assert torch.equal(result.latents[0, :, 0], cond_frame0)


@pytest.mark.parametrize("mode", ["clean", "noised"])
def test_pinning_stops_after_pin_until(backbone, prompts, mode):
    steps, pin_until = 4, 0.5  # steps 0 and 1 pinned, 2 and 3 released
    _, cond_frame0, pinned, _ = make_inputs()
    timesteps, _ = scheduler_reference(backbone, steps)
    rec = Recorder(backbone.transformer)
    try:
        result = run(backbone, prompts, mode=mode, pin_until=pin_until, steps=steps)
    finally:
        rec.close()
    cells = token_mask_to_cells(expected_token_grid())
    memory = pinned.permute(1, 0, 2, 3)
    for i, (hidden, timestep, _) in enumerate(rec.calls):
        grid = timestep.view(T, 2, 3)
        assert torch.equal(grid[0], torch.zeros(2, 3))
        assert torch.equal(hidden[0, :, 0], cond_frame0)
        if i >= 2:
            assert torch.equal(grid[1:], torch.full((T - 1, 2, 3), float(timesteps[i])))
            assert not torch.equal(hidden[0][:, cells], memory[:, cells])
        elif mode == "clean":
            assert torch.equal(hidden[0][:, cells], memory[:, cells])
    assert torch.equal(result.latents[0, :, 0], cond_frame0)
    assert not torch.equal(result.latents[0][:, cells], memory[:, cells])  # released: the model's result


def test_guidance_runs_negative_branch(backbone, prompts):
    rec = Recorder(backbone.transformer)
    try:
        guided = run(backbone, prompts, guidance=5.0, steps=3)
    finally:
        rec.close()
    assert len(rec.calls) == 6
    assert torch.equal(rec.calls[0][2], prompts[0]) and torch.equal(rec.calls[1][2], prompts[1])
    assert torch.equal(rec.calls[0][0], rec.calls[1][0]) and torch.equal(rec.calls[0][1], rec.calls[1][1])
    plain = run(backbone, prompts, guidance=1.0, steps=3)
    assert not torch.equal(guided.latents, plain.latents)


def test_same_seed_same_output_and_masks_matter(backbone, prompts):
    a = run(backbone, prompts, mode="noised", steps=3, guidance=2.0)
    b = run(backbone, prompts, mode="noised", steps=3, guidance=2.0)
    assert torch.equal(a.latents, b.latents)
    _, _, _, mask = make_inputs()
    other = mask.clone()
    other[2] = False
    c = run(backbone, prompts, mode="noised", steps=3, guidance=2.0, pin_mask=other)
    assert not torch.equal(a.latents, c.latents)
    d = run(backbone, prompts, mode="clean", steps=3, guidance=2.0, pin_mask=torch.zeros(T, H, W, dtype=torch.bool))
    e = run(backbone, prompts, mode="clean", steps=3, guidance=2.0)
    assert not torch.equal(d.latents, e.latents)


@pytest.mark.parametrize("mode", ["clean", "noised"])
def test_resume_mid_chunk_is_bit_exact(backbone, prompts, tmp_path, mode):
    steps = 6
    full = run(backbone, prompts, mode=mode, guidance=3.0, steps=steps, pin_until=0.8)

    seen = []

    def stop_after_three(i, state):
        seen.append(i)
        return i == 2

    part = run(backbone, prompts, mode=mode, guidance=3.0, steps=steps, pin_until=0.8, on_step=stop_after_three)
    assert not part.completed and seen == [0, 1, 2] and part.state.step == 3
    path = tmp_path / "state.safetensors"
    save_file({k: v.cpu() for k, v in part.state.to_tensors().items()}, str(path))

    fresh = load_backbone(options=BackboneOptions(preset="tiny", device="cpu", dtype="float32"))  # rebuilt from scratch
    cond, uncond = fresh.encode_prompt("a quiet room with a window", None)
    state = DenoiseState.from_tensors(load_file(str(path)))
    other_generator = torch.Generator().manual_seed(999)  # its state is replaced by the saved one
    resumed = run(
        fresh, (cond, uncond), mode=mode, guidance=3.0, steps=steps, pin_until=0.8, resume_state=state, generator=other_generator
    )
    assert resumed.completed
    assert torch.equal(resumed.latents, full.latents)


def test_state_round_trip_with_none_entries(backbone, prompts):
    captured = {}

    def grab(i, state):
        captured[i] = state.to_tensors()
        return True

    result = run(backbone, prompts, steps=4, on_step=grab)
    tensors = captured[0]
    assert bool(tensors["scheduler.model_outputs.present"][0]) is False  # order-2 history not yet full
    state = DenoiseState.from_tensors(tensors)
    assert state.scheduler.model_outputs[0] is None and state.scheduler.model_outputs[1] is not None
    assert state.step == 1 and state.scheduler.step_index == 1
    assert torch.equal(state.latents, result.latents)
    with pytest.raises(ValueError, match="missing entry"):
        DenoiseState.from_tensors({k: v for k, v in tensors.items() if k != "latents"})


def test_start_step_runs_only_the_remaining_steps(backbone, prompts):
    rec = Recorder(backbone.transformer)
    try:
        result = run(backbone, prompts, steps=4, start_step=3, guidance=2.0)
    finally:
        rec.close()
    timesteps, _ = scheduler_reference(backbone, 4)
    assert result.completed and len(rec.calls) == 2  # one step, cond + uncond
    assert float(rec.calls[0][1].view(T, 2, 3)[1, 1, 0]) == float(timesteps[3])


def test_resume_with_other_schedule_is_refused(backbone, prompts):
    part = run(backbone, prompts, steps=4, on_step=lambda i, s: True)
    with pytest.raises(ValueError, match="resume_state"):
        run(backbone, prompts, steps=5, resume_state=part.state)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(noise=torch.zeros(1, C, T, H, W + 1)), "noise"),
        (dict(cond_frame0=torch.zeros(C, H + 2, W)), "cond_frame0"),
        (dict(pinned_latents=torch.zeros(C, T, H, W)), "pinned_latents"),
        (dict(pin_mask=torch.zeros(T, H, W)), "pin_mask"),
        (dict(pin_mode="hard"), "pin_mode"),
        (dict(pin_until=1.5), "pin_until"),
    ],
)
def test_bad_inputs_name_the_argument(backbone, prompts, change, name):
    noise, cond_frame0, pinned, mask = make_inputs()
    args = dict(noise=noise, cond_frame0=cond_frame0, pinned_latents=pinned, pin_mask=mask, pin_mode="clean", pin_until=1.0)
    args.update(change)
    with pytest.raises(ValueError, match=name):
        denoise_chunk(
            backbone,
            **args,
            prompt_embeds=prompts[0],
            negative_prompt_embeds=prompts[1],
            guidance=5.0,
            steps=2,
            shift=5.0,
            generator=torch.Generator(),
        )


def test_without_memory_matches_diffusers_ti2v_pipeline(backbone, prompts):
    """No memory pinned: our loop must equal diffusers' WanImageToVideoPipeline (expand_timesteps=True).

    The reference is diffusers' own Wan2.2-TI2V loop run on the same tiny components, same initial
    noise, same prompt embeddings and the same start-image latent.
    """
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    steps, guidance = 4, 4.0
    noise, _, pinned, _ = make_inputs()
    g = torch.Generator().manual_seed(5)
    image = Image.fromarray((torch.rand(64, 96, 3, generator=g) * 255).to(torch.uint8).numpy())
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=backbone.vae,
        scheduler=backbone.make_scheduler(5.0),
        transformer=backbone.transformer,
        expand_timesteps=True,
    )
    pipe.set_progress_bar_config(disable=True)
    cond, uncond = prompts
    reference = pipe(
        image=image,
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        height=64,
        width=96,
        num_frames=9,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=noise.clone(),
        output_type="latent",
    ).frames  # [1, C, T, h, w] normalized latents

    pixels = pipe.video_processor.preprocess(image, height=64, width=96).unsqueeze(2)  # [1, 3, 1, H, W]
    cond_frame0 = backbone.encode_video(pixels)[0, :, 0]  # [C, h, w]
    ours = denoise_chunk(
        backbone,
        noise=noise,
        cond_frame0=cond_frame0,
        pinned_latents=pinned,
        pin_mask=torch.zeros(T, H, W, dtype=torch.bool),
        pin_mode="clean",
        pin_until=1.0,
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        guidance=guidance,
        steps=steps,
        shift=5.0,
        generator=torch.Generator(),
    )
    assert torch.equal(ours.latents, reference)
