"""What a render tells its user when it stops or fails: which chunks are done, what a stop waits
for and about how long, why a chunk's latents went non-finite, why a mid-chunk checkpoint cannot
continue on this device."""

from __future__ import annotations

import torch

from mirage_cli.base.errors import InputError
from mirage_cli.denoise.loop import NonFiniteLatents
from mirage_cli.profiling.profiler import WRITE_WAIT, Profiler
from mirage_cli.render.events import STAGE_WORDS
from mirage_cli.rundir.checkpoint import Checkpoint

AFTER_DENOISING = ("decode", "depth_estimation", "memory_insert")
"""The stages of a chunk after its denoising, in order: a stop waits for the rest of them."""


def chunks_done(done: int, total: int) -> str:
    """"chunks 1-3 of 5 are done" (``done`` chunks finished of ``total``)."""
    if done == 0:
        return f"no chunk of {total} is done yet"
    return f"chunk 1 of {total} is done" if done == 1 else f"chunks 1-{done} of {total} are done"


def stopping_message(chunk: int, total: int, profiler: Profiler) -> str:
    """What a stop during chunk ``chunk`` (0-based, of ``total``) waits for: the current denoising step
    (then a mid-chunk checkpoint), or the rest of the chunk after its denoising (decoding, depth,
    memory; then its files and checkpoint), with the seconds those took in the chunks before."""
    stage = profiler.current_stage
    if stage == WRITE_WAIT:
        return f"stopping: chunk {chunk + 1}/{total} is rendered and waits for the files of the chunk before; both are saved first"
    if stage not in AFTER_DENOISING:  # conditioning, denoising (a stop before the first step: one step)
        return f"stopping: chunk {chunk + 1}/{total} ends after its current denoising step, which is saved"
    typical = [profiler.typical_seconds(name) for name in AFTER_DENOISING[AFTER_DENOISING.index(stage):]]
    how_long = (f"about {sum(typical):.0f} s, as in the chunks before" if None not in typical
                else "no estimate yet: the first chunk of this process")
    return (f"stopping: chunk {chunk + 1}/{total} is {STAGE_WORDS[stage]}; its denoising is done, so it is finished and "
            f"saved first ({how_long}), then the render stops")


def non_finite_message(chunk_index: int, total: int, error: NonFiniteLatents, *, mid_chunk: bool) -> str:
    """What to tell the user when a chunk's latents stopped being finite: where, the likely causes,
    and that the run resumes from its last checkpoint (the chunk is rendered again from its start,
    or from the mid-chunk checkpoint it resumed from)."""
    start = f"chunk {chunk_index + 1}'s mid-chunk checkpoint" if mid_chunk else f"the start of chunk {chunk_index + 1}"
    return (
        f"chunk {chunk_index + 1}/{total}, step {error.step + 1}/{error.steps}: the latents are not finite (NaN or inf), "
        "so the render stopped; likely causes: trained weights (conditioning.vace / conditioning.lora) or a model "
        "whose values overflow, --dtype float16 on a model trained in bfloat16, a step cache skipping too many steps "
        f"(--cache); nothing of this chunk was kept, and the same command resumes from {start} once the cause is fixed"
    )


def check_mid_chunk_device(ckpt: Checkpoint | None, device: torch.device) -> None:
    """Refuse (InputError) to resume a mid-chunk checkpoint on another kind of device than the one that
    saved it: it continues bit-exactly only there (the state of its noise generator is the device's own)."""
    if ckpt is None or "denoise" not in ckpt.tensors:
        return
    saved = ckpt.tensors["denoise"]["generator_state"]
    saved_type = "cpu" if saved.numel() == torch.Generator().get_state().numel() else "cuda"
    if saved_type != device.type:
        step = ckpt.meta["mid_chunk_step"]
        raise InputError(
            f"{ckpt.name} was saved on {saved_type} at step {step} of chunk {ckpt.meta['chunk'] + 1}, and its noise "
            f"generator continues only on {saved_type}: resume with --device {saved_type}, or remove {ckpt.path} "
            f"to render that chunk again from its start on {device.type}",
            file=str(ckpt.path),
        )
