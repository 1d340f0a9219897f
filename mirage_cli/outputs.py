"""What a render leaves in its run directory besides checkpoints: per chunk, its segment(s), PNG frames
and final latents; at the end, the whole video joined from the segments by packet copy.

A chunk after the first repeats the previous chunk's last frame as its frame 0; it is written
without it, so the segments tile the video exactly and joining them needs no re-encode
(``mirage_cli.video``). Every file is written atomically; a chunk rendered again after a kill
rewrites its files with the same bytes.

Latents files (``RUN/latents/chunk_0000.safetensors``) hold ``latents``: float32 [C, T, h, w], the
chunk's final normalized latents (docs/CONVENTIONS.md), frame 0 being the conditioning frame
(the start image's latent for chunk 0, else the previous chunk's last latent), with the chunk's
index and pixel frame range in the metadata; ``mirage_cli.backbone.Backbone.decode`` turns them back
into frames.
"""

from __future__ import annotations

import torch

from mirage_cli.atomic import atomic_write_bytes
from mirage_cli.errors import RenderError
from mirage_cli.options import VideoOptions
from mirage_cli.profiling import MP4_WRITE, OUTPUTS_WRITE
from mirage_cli.run_dir import RunDir
from mirage_cli.spec import Chunk, Plan
from mirage_cli.video import concat_segments, to_uint8_frames, write_lossless, write_mp4, write_png_frames

LATENTS_FORMAT = "mirage-latents/1"


def new_frames(chunk: Chunk) -> slice:
    """The frames of a chunk's decoded video that are new: all for chunk 0, all but frame 0 after."""
    return slice(0, None) if chunk.index == 0 else slice(1, None)


def first_new_frame(chunk: Chunk) -> int:
    """Video frame index of the chunk's first new frame."""
    return chunk.start if chunk.index == 0 else chunk.start + 1


class RenderOutputs:
    """The files of one render's run directory that are not checkpoints (module docstring).

    Args:
        run_dir: the run directory.
        plan: the render's plan (fps, chunks).
        video: ``VideoOptions`` (encoder settings, lossless copy, PNG frames).
        profiler: times ``mp4_write`` and ``outputs_write``.
    """

    def __init__(self, run_dir: RunDir, plan: Plan, video: VideoOptions, profiler):
        self.run_dir = run_dir
        self.plan = plan
        self.video = video
        self.prof = profiler

    def write_chunk(self, chunk: Chunk, latents: torch.Tensor, pixels: torch.Tensor) -> None:
        """Write chunk ``chunk``'s files: latents [1, C, T, h, w], decoded pixels [3, F, H, W] in [-1, 1]."""
        frames = to_uint8_frames(pixels)[new_frames(chunk)]  # [F', H, W, 3]
        segment = self.run_dir.segment(chunk.index)
        with self.prof.stage(MP4_WRITE):
            self._write(segment, lambda: write_mp4(segment, frames, self.plan.fps, self.video.crf, self.video.encoder_preset))
        with self.prof.stage(OUTPUTS_WRITE):
            self._write_latents(chunk, latents)
            if self.video.lossless:
                lossless = self.run_dir.segment(chunk.index, lossless=True)
                self._write(lossless, lambda: write_lossless(lossless, frames, self.plan.fps))
            if self.video.frames_dir is not None:
                self._write(self.video.frames_dir, lambda: write_png_frames(self.video.frames_dir, frames, first_new_frame(chunk)))

    def _write_latents(self, chunk: Chunk, latents: torch.Tensor) -> None:
        from safetensors.torch import save

        metadata = {"format": LATENTS_FORMAT, "chunk": str(chunk.index), "start_frame": str(chunk.start), "end_frame": str(chunk.end)}
        data = save({"latents": latents[0].detach().to("cpu", torch.float32).contiguous()}, metadata=metadata)  # [C, T, h, w]
        path = self.run_dir.latents(chunk.index)
        self._write(path, lambda: atomic_write_bytes(path, data))

    @staticmethod
    def _write(path, write) -> None:
        """Run ``write``; a full or read-only disk becomes a RenderError naming ``path``."""
        try:
            write()
        except OSError as e:
            raise RenderError(f"cannot write {path}: {e.strerror or e}; the last checkpoint is intact") from None

    def assemble(self) -> int:
        """Join the segments into ``video.mp4`` (and ``video.mkv``) by packet copy; returns the frame count.

        Raises:
            RenderError: a segment is missing, the disk refuses the file, or the frame count is wrong.
        """
        run = self.run_dir
        kinds = [False, True] if self.video.lossless else [False]
        frames = 0
        for lossless in kinds:
            segments = [run.segment(c.index, lossless=lossless) for c in self.plan.chunks]
            missing = [str(s) for s in segments if not s.exists()]
            if missing:
                raise RenderError(f"segments missing from {run.segments_dir}: {', '.join(missing)}; rerun with --restart")
            dest = run.video_lossless if lossless else run.video
            with self.prof.stage(MP4_WRITE):
                try:
                    frames = concat_segments(segments, dest)
                except OSError as e:
                    raise RenderError(f"cannot write {dest}: {e.strerror or e}") from None
            if frames != self.plan.frames:
                raise RenderError(f"{dest.name} has {frames} frames, expected {self.plan.frames}")
        return frames
