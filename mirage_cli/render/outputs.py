"""What a render leaves in its run directory besides checkpoints: per chunk, its segment(s), PNG frames
and final latents; at the end, the whole video joined from the segments by packet copy.

A chunk after the first repeats the previous chunk's last frame as its frame 0; it is written
without it, so the segments tile the video exactly and joining them needs no re-encode
(``mirage_cli.base.video``). Every file is written atomically; a chunk rendered again after a kill
rewrites its files with the same bytes.

Latents files (``RUN/latents/chunk_0000.safetensors``) hold ``latents``: float32 [C, T, h, w], the
chunk's final normalized latents (docs/CONVENTIONS.md), frame 0 being the conditioning frame
(the start image's latent for chunk 0, else the previous chunk's last latent), with the chunk's
index and pixel frame range in the metadata; ``mirage_cli.backbone.Backbone.decode`` turns them back
into frames.

**Verified, and rebuilt when damaged.** Every file written gets a record ``{"sha256", "size"}``
under its path relative to the run directory; the render keeps the records in its checkpoints
(``mirage_cli.rundir.meta``). Before a resumed render goes on, and before a finished one is called
finished, the files are checked against them (files of older runs without records are probed:
frame count and first frame). A damaged segment is rebuilt from the saved latents (its chunk's,
and the frames before it that its decode context needs): same latents, same decode, same bytes;
a damaged final video is joined again from the segments. What cannot be rebuilt (a segment whose
latents are gone too) is refused, naming both files.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mirage_cli.backbone.decoding import DECODE_CONTEXT, decode_with_context, next_decode_context
from mirage_cli.base.atomic import atomic_write_bytes
from mirage_cli.base.errors import InputError, Problem, RenderError
from mirage_cli.base.files import file_record
from mirage_cli.base.options import VideoOptions
from mirage_cli.base.video import concat_segments, to_uint8_frames, video_problem, write_lossless, write_mp4, write_png_frames
from mirage_cli.profiling.profiler import MP4_WRITE, OUTPUTS_WRITE
from mirage_cli.rundir.layout import RunDir
from mirage_cli.rundir.meta import record_problem
from mirage_cli.spec.plan import Chunk, Plan

LATENTS_FORMAT = "mirage-latents/1"


def new_frames(chunk: Chunk) -> slice:
    """The frames of a chunk's decoded video that are new: all for chunk 0, all but frame 0 after."""
    return slice(0, None) if chunk.index == 0 else slice(1, None)


def first_new_frame(chunk: Chunk) -> int:
    """Video frame index of the chunk's first new frame."""
    return chunk.start if chunk.index == 0 else chunk.start + 1


def segment_frames(chunk: Chunk) -> int:
    """Frames in the chunk's segment (all but the shared first frame after chunk 0)."""
    return chunk.num_frames if chunk.index == 0 else chunk.num_frames - 1


def read_latents(path: Path) -> torch.Tensor:
    """The ``latents`` tensor [C, T, h, w] of a latents file (raises ValueError or OSError)."""
    from safetensors.torch import load

    tensors = load(path.read_bytes())
    latents = tensors.get("latents")
    if latents is None or latents.ndim != 4:
        raise ValueError("it holds no [C, T, h, w] 'latents' tensor")
    return latents


@dataclass
class OutputDamage:
    """Damaged or missing files of finished chunks: ``{chunk index: "<path> <problem>"}`` each."""

    segments: dict[int, str] = field(default_factory=dict)
    latents: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkFiles:
    """A chunk's outputs on the host, owned (no memory shared with the render), ready to write.

    ``latents``: float32 [C, T, h, w] on the CPU; ``frames``: the chunk's new frames, uint8
    [F', H, W, 3] (``new_frames``).
    """

    chunk: Chunk
    latents: torch.Tensor
    frames: np.ndarray


class RenderOutputs:
    """The files of one render's run directory that are not checkpoints (module docstring).

    Args:
        run_dir: the run directory.
        plan: the render's plan (fps, chunks).
        video: ``VideoOptions`` (encoder settings, lossless copy, PNG frames).
        profiler: times ``mp4_write`` and ``outputs_write`` (None: untimed).
    """

    def __init__(self, run_dir: RunDir, plan: Plan, video: VideoOptions, profiler=None):
        self.run_dir = run_dir
        self.plan = plan
        self.video = video
        self.prof = profiler

    def _stage(self, name: str):
        return self.prof.stage(name) if self.prof is not None else nullcontext()

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, as recorded (``segments/chunk_0000.mp4``)."""
        return Path(path).relative_to(self.run_dir.path).as_posix()

    def chunk_videos(self, chunk: Chunk) -> list[Path]:
        """The segment files of a chunk: its MP4, and its MKV with ``--lossless``."""
        return [self.run_dir.segment(chunk.index, lossless=lossless) for lossless in self._kinds()]

    def _kinds(self) -> list[bool]:
        return [False, True] if self.video.lossless else [False]

    @staticmethod
    def host_copy(chunk: Chunk, latents: torch.Tensor, pixels: torch.Tensor) -> ChunkFiles:
        """What chunk ``chunk``'s files are made of, copied to the host: latents [1, C, T, h, w], decoded
        pixels [3, F, H, W] in [-1, 1], both on the render's device. The copy shares no memory with
        the arguments, so any thread may write it while the render goes on."""
        frames = to_uint8_frames(pixels)[new_frames(chunk)]  # [F', H, W, 3], a new array
        host = latents[0].detach().to("cpu", torch.float32, copy=True).contiguous()  # [C, T, h, w]
        return ChunkFiles(chunk, host, frames)

    def write_files(self, files: ChunkFiles, stage=None) -> dict[str, dict]:
        """Write a chunk's files (latents, segment(s), PNG frames with ``--frames``), each atomically.

        ``stage(name)``: a context manager timing each write (default: this outputs' profiler; the
        background writer passes its own clock, the profiler being the render thread's).
        Returns the records (``file_record``) of the files in the run directory, by relative path.

        Raises:
            RenderError: the disk refuses a file (full, read-only), naming it.
        """
        stage = stage or self._stage
        chunk, frames = files.chunk, files.frames
        self._write_latents(chunk, files.latents, stage)
        records = self._write_segments(chunk, frames, stage)
        path = self.run_dir.latents(chunk.index)
        records[self.relative(path)] = file_record(path)
        if self.video.frames_dir is not None:
            with stage(OUTPUTS_WRITE):
                self._write(self.video.frames_dir, lambda: write_png_frames(self.video.frames_dir, frames, first_new_frame(chunk)))
        return records

    def _write_segments(self, chunk: Chunk, frames, stage=None) -> dict[str, dict]:
        """The chunk's segment(s) from its new uint8 frames [F', H, W, 3]; returns their records."""
        stage = stage or self._stage
        records = {}
        for path in self.chunk_videos(chunk):
            if path.suffix == ".mkv":
                with stage(OUTPUTS_WRITE):
                    self._write(path, lambda p=path: write_lossless(p, frames, self.plan.fps))
            else:
                with stage(MP4_WRITE):
                    self._write(path, lambda p=path: write_mp4(p, frames, self.plan.fps, self.video.crf, self.video.encoder_preset))
            records[self.relative(path)] = file_record(path)
        return records

    def _write_latents(self, chunk: Chunk, latents: torch.Tensor, stage) -> None:
        """Write the latents file of ``chunk`` from its float32 CPU latents [C, T, h, w]."""
        from safetensors.torch import save

        metadata = {"format": LATENTS_FORMAT, "chunk": str(chunk.index), "start_frame": str(chunk.start), "end_frame": str(chunk.end)}
        data = save({"latents": latents}, metadata=metadata)  # [C, T, h, w]
        path = self.run_dir.latents(chunk.index)
        with stage(OUTPUTS_WRITE):
            self._write(path, lambda: atomic_write_bytes(path, data))

    @staticmethod
    def _write(path, write) -> None:
        """Run ``write``; a full or read-only disk becomes a RenderError naming ``path``."""
        try:
            write()
        except OSError as e:
            raise RenderError(f"cannot write {path}: {e.strerror or e}; the last checkpoint is intact") from None

    # --- verify and rebuild ----------------------------------------------------------------------

    def _problem(self, path: Path, records: dict, probe) -> str | None:
        record = records.get(self.relative(path))
        return record_problem(path, record) if record is not None else probe(path)

    def check_chunks(self, records: dict, chunks_done: int) -> OutputDamage:
        """Check the segments and latents of chunks ``0 .. chunks_done - 1`` against ``records``."""
        damage = OutputDamage()
        for chunk in self.plan.chunks[:chunks_done]:
            for path in self.chunk_videos(chunk):
                problem = self._problem(path, records, lambda p, c=chunk: video_problem(p, segment_frames(c)))
                if problem and chunk.index not in damage.segments:
                    damage.segments[chunk.index] = f"{self.relative(path)} {problem}"
            path = self.run_dir.latents(chunk.index)
            problem = self._problem(path, records, _latents_probe)
            if problem:
                damage.latents[chunk.index] = f"{self.relative(path)} {problem}"
        return damage

    def repair_plan(self, damage: OutputDamage) -> tuple[list[int], list[str]]:
        """(chunks whose segments can be rebuilt, warnings). Raises ``InputError`` (exit 2) naming the
        files when a damaged segment cannot be rebuilt because the latents it needs are damaged too."""
        rebuild, warnings, lost = [], [], []
        context_known = True  # chunk 0 decodes without context
        for chunk in self.plan.chunks:
            index = chunk.index
            if index in damage.segments:
                if index not in damage.latents and context_known:
                    rebuild.append(index)
                    warnings.append(f"{damage.segments[index]}; rebuilding it from {self.relative(self.run_dir.latents(index))}")
                else:
                    needed = damage.latents.get(index) or "the latents of the chunk before it are damaged too"
                    lost.append(Problem(file=str(self.run_dir.segment(index)), field=None,
                                        message=f"{damage.segments[index]}, and it cannot be rebuilt: {needed}; "
                                        "rerun with --restart to render it again"))
            elif index in damage.latents:
                warnings.append(f"{damage.latents[index]}; the video is unaffected, but that chunk can no longer be re-decoded")
            own = chunk.num_latent_frames - 1 >= DECODE_CONTEXT
            context_known = index not in damage.latents and (own or context_known)
        if lost:
            raise InputError(lost)
        return rebuild, warnings

    def rebuild_segments(self, indices: list[int], backbone, should_stop=lambda: False) -> dict[str, dict]:
        """Decode the saved latents of chunks ``indices`` again and rewrite their segments; returns
        the new records. ``should_stop()`` is asked before each segment (a stop leaves the rest)."""
        records, context, todo = {}, None, set(indices)
        for chunk in self.plan.chunks[: max(indices, default=-1) + 1]:
            try:
                latents = read_latents(self.run_dir.latents(chunk.index))  # [C, T, h, w]
            except Exception:  # damaged: repair_plan rebuilds nothing whose decode context needed it
                latents = None
            if chunk.index in todo:
                if should_stop():
                    break
                with torch.no_grad():
                    pixels = decode_with_context(backbone, latents.unsqueeze(0).to(backbone.device), context)
                records.update(self._write_segments(chunk, to_uint8_frames(pixels)[new_frames(chunk)]))
            context = next_decode_context(latents, context) if latents is not None else None
        return records

    def final_problems(self, records: dict) -> list[str]:
        """What is wrong with ``video.mp4`` (and ``video.mkv``), as ``"<name> <problem>"`` lines."""
        problems = []
        for lossless in self._kinds():
            path = self.run_dir.video_lossless if lossless else self.run_dir.video
            problem = self._problem(path, records, lambda p: video_problem(p, self.plan.frames))
            if problem:
                problems.append(f"{self.relative(path)} {problem}")
        return problems

    def assemble(self) -> tuple[int, dict[str, dict]]:
        """Join the segments into ``video.mp4`` (and ``video.mkv``) by packet copy and verify them
        (frame count, first frame); returns the frame count and the videos' records.

        Raises:
            RenderError: a segment is missing, the disk refuses the file, or the result does not verify.
        """
        run = self.run_dir
        records = {}
        for lossless in self._kinds():
            segments = [run.segment(c.index, lossless=lossless) for c in self.plan.chunks]
            missing = [str(s) for s in segments if not s.exists()]
            if missing:
                raise RenderError(f"segments missing from {run.segments_dir}: {', '.join(missing)}; rerun with --restart")
            dest = run.video_lossless if lossless else run.video
            with self._stage(MP4_WRITE):
                try:
                    concat_segments(segments, dest)
                except OSError as e:
                    raise RenderError(f"cannot write {dest}: {e.strerror or e}") from None
            problem = video_problem(dest, self.plan.frames)
            if problem:
                raise RenderError(f"{dest} {problem} after joining the segments")
            records[self.relative(dest)] = file_record(dest)
        return self.plan.frames, records


def _latents_probe(path: Path) -> str | None:
    try:
        read_latents(path)
    except FileNotFoundError:
        return "is missing"
    except Exception as e:  # safetensors raises its own error types on bad headers
        return f"cannot be read ({e})"
    return None
