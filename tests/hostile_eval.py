"""Hostile command-line cases: the eval surface (tests/hostile_commands.py).

Every case writes small real files: videos encoded by PyAV (a "bomb" is one encoded frame muxed
hundreds of times, so it costs nothing to build and gigabytes to decode), camera files written by
the camera writers, ``.npy`` depth, PNG reference frames, torch weight files, run directories'
``run.json``. No case needs a render.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from hostile_commands import CommandCase
from hostile_inputs import make_fifo, npy_bytes, png_claiming, write_npz
from PIL import Image

from mirage_cli.base.video import write_lossless, write_mp4
from mirage_cli.camera.trajectory import Trajectory
from mirage_cli.camera.writers import write_canonical_json
from mirage_cli.evaluation.lpips import BACKBONE_FILE, CHANNELS, LINEAR_FILE, AlexNetTaps

W, H, N, FPS = 64, 48, 5, 8.0
"""The valid input of every case: N frames of W x H at FPS."""


# --- valid inputs --------------------------------------------------------------------------------


def frames(n: int = N, seed: int = 0) -> np.ndarray:
    """uint8 [n, H, W, 3]: a texture sliding sideways (something for the optical flow to follow)."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (H // 4, W // 4 + n, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    return np.stack([base[:, 4 * i : 4 * i + W] for i in range(n)])


def write_camera(path: Path, n: int = N, fps: float = FPS) -> Path:
    """A canonical camera JSON of ``n`` cameras stepping sideways, with intrinsics at W x H."""
    cams = np.repeat(np.eye(4)[None], n, axis=0)
    cams[:, 0, 3] = np.linspace(0.0, 0.2, n)
    K = np.repeat(np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]])[None], n, axis=0)
    write_canonical_json(path, Trajectory(cams, K, W, H, fps))
    return path


def write_video(path: Path, n: int = N) -> Path:
    """An H.264 MP4 (it states its frame count) or, for ``.mkv``, a lossless FFV1 Matroska (it does not)."""
    (write_lossless if path.suffix == ".mkv" else write_mp4)(path, frames(n), FPS)
    return path


def repeated_video(path: Path, width: int, height: int, count: int) -> Path:
    """An MP4 of ``count`` frames of ``width`` x ``height``: one encoded black frame muxed ``count`` times."""
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": "keyint=1"}
        black = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        data = bytes([*stream.encode(black), *stream.encode()][0])
        for i in range(count):
            packet = av.Packet(data)
            packet.stream, packet.time_base, packet.pts, packet.dts, packet.is_keyframe = stream, Fraction(1, int(FPS)), i, i, True
            out.mux(packet)
    return path


def video_args(folder: Path, *extra) -> list[str]:
    """``eval video.mp4 --camera camera.json EXTRA`` with both files written."""
    write_video(folder / "video.mp4")
    write_camera(folder / "camera.json")
    return ["eval", str(folder / "video.mp4"), "--camera", str(folder / "camera.json"), *map(str, extra)]


def write_run(folder: Path, config: dict | str | Callable[[Path], None] | None = None, n: int = N) -> Path:
    """A run directory as a render leaves it (video.mp4, camera.json, run.json), its run.json's config
    replaced by ``config`` (a dict, raw text, or a function making the path)."""
    run = folder / "run"
    run.mkdir()
    write_video(run / "video.mp4", n)
    write_camera(run / "camera.json", n)
    content = {"mirage_cli": "0", "fingerprint": "0" * 64, "config": {"frames": n, "chunk_frames": n}}
    if isinstance(config, dict):
        content["config"] = config
    if callable(config):
        config(run / "run.json")
    else:
        (run / "run.json").write_text(config if isinstance(config, str) else json.dumps(content))
    return run


def reference_folder(folder: Path, n: int = N, size: tuple[int, int] = (W, H)) -> Path:
    """A folder of ``n`` PNG frames named 00.png, 01.png, ... of ``size``."""
    ref = folder / "gt"
    ref.mkdir()
    for i, f in enumerate(frames(n)):
        Image.fromarray(f).resize(size).save(ref / f"{i:02d}.png")
    return ref


def lpips_folder(folder: Path, backbone=None, linear=None) -> Path:
    """A folder with random AlexNet and LPIPS weights under the real names (the real ones cannot be
    downloaded here); ``backbone``/``linear`` replace a file's content (a torch-saved object, or a
    function making the path)."""
    out = folder / "lpips"
    out.mkdir()
    torch.manual_seed(0)
    contents = {BACKBONE_FILE: backbone if backbone is not None else AlexNetTaps().state_dict(),
                LINEAR_FILE: linear if linear is not None else {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1)
                                                                 for k, c in enumerate(CHANNELS)}}
    for name, content in contents.items():
        if callable(content):
            content(out / name)
        else:
            torch.save(content, out / name)
    return out


def with_lpips(backbone=None, linear=None) -> Callable[[Path], list[str]]:
    """A case builder: a video, its camera, itself as the reference and ``--lpips`` with those weights."""
    return lambda folder: video_args(folder, "--reference", folder / "video.mp4", "--lpips", lpips_folder(folder, backbone, linear))


def linear_weights(change: Callable[[torch.Tensor], object]) -> dict:
    """LPIPS's linear weights with ``lin0`` replaced by ``change(lin0)``."""
    weights = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    weights["lin0.model.1.weight"] = change(weights["lin0.model.1.weight"])
    return weights


# --- depth -----------------------------------------------------------------------------------------


def depth_values(fill) -> np.ndarray:
    return np.full((N, H, W), fill, dtype=np.float32)


def with_depth(content: bytes | Callable[[Path], None], name: str = "depth.npy") -> Callable[[Path], list[str]]:
    """A case builder: a valid video and camera, and ``--depth`` holding ``content``."""

    def build(folder: Path) -> list[str]:
        path = folder / name
        content(path) if callable(content) else path.write_bytes(content)
        return video_args(folder, "--depth", path)

    return build


def npy_claiming(shape: tuple[int, ...], dtype: str = "<f4", body: int = 64) -> bytes:
    """A ``.npy`` whose header declares ``shape`` of ``dtype``, followed by ``body`` bytes."""
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue() + b"\0" * body


def object_npy(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


# --- reference ---------------------------------------------------------------------------------------


def with_reference(edit: Callable[[Path], None] | None = None, n: int = N, size=(W, H)) -> Callable[[Path], list[str]]:
    """A case builder: ``--reference`` a folder of PNG frames, then ``edit(folder)``."""

    def build(folder: Path) -> list[str]:
        ref = reference_folder(folder, n, size)
        if edit is not None:
            edit(ref)
        return video_args(folder, "--reference", ref)

    return build


def replace_first(content: bytes | Callable[[Path], None], name: str = "00.png") -> Callable[[Path], None]:
    """An edit of the reference folder: its first image replaced by ``content``."""

    def edit(ref: Path) -> None:
        (ref / name).unlink(missing_ok=True)
        content(ref / name) if callable(content) else (ref / name).write_bytes(content)

    return edit


def truncated_png(path: Path) -> None:
    Image.fromarray(frames(1)[0]).save(path)
    path.write_bytes(path.read_bytes()[:120])


# --- the video --------------------------------------------------------------------------------------


def with_target(make: Callable[[Path], Path], cameras: int = N) -> Callable[[Path], list[str]]:
    """A case builder: ``make(folder)`` is the video (or whatever stands for it), with a camera of ``cameras``."""
    return lambda folder: ["eval", str(make(folder)), "--camera", str(write_camera(folder / "camera.json", cameras))]


def broken_mp4(keep: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = write_video(folder / "video.mp4", 9)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path

    return make


def truncated_mkv(folder: Path) -> Path:
    """A Matroska video cut after its third frame's worth of bytes (its header intact)."""
    path = write_video(folder / "video.mkv")
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.7)])
    return path


def image_as_video(folder: Path) -> Path:
    """A PNG image given as the video (FFmpeg opens it as a one-frame video at 25 fps)."""
    Image.fromarray(frames(1)[0]).save(folder / "frame.png")
    return folder / "frame.png"


def garbage_file(name: str, size: int) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(random.Random(size).randbytes(size))
        return path

    return make


def fifo(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        make_fifo(folder / name)
        return folder / name

    return make


def with_camera_file(write: Callable[[Path], None], name: str = "cam.json") -> Callable[[Path], list[str]]:
    """A case builder: a valid video and ``--camera`` made by ``write(path)``."""

    def build(folder: Path) -> list[str]:
        write_video(folder / "video.mp4")
        write(folder / name)
        return ["eval", str(folder / "video.mp4"), "--camera", str(folder / name)]

    return build


# --- run directories ---------------------------------------------------------------------------------


def with_run(config=None, n: int = N, edit: Callable[[Path], None] | None = None) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        run = write_run(folder, config, n)
        if edit is not None:
            edit(run)
        return ["eval", str(run)]

    return build


def replace_with_fifo(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        (run / name).unlink()
        make_fifo(run / name)

    return edit


# --- --html --------------------------------------------------------------------------------------------


def empty_folder(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


def with_html(place: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda folder: video_args(folder, "--html", place(folder))


def html_dir(folder: Path) -> Path:
    (folder / "page").mkdir()
    return folder / "page"


def html_under_file(folder: Path) -> Path:
    (folder / "notes.txt").write_text("a file")
    return folder / "notes.txt" / "page.html"


NAMED_CASES: list[CommandCase] = [
    # --depth
    CommandCase("eval-depth-fifo", with_depth(make_fifo), "--depth: is a named pipe (FIFO), expected a regular file"),
    CommandCase("eval-depth-npz", with_depth(write_npz, "depth.npz"), "--depth: is an .npz archive, not a .npy array"),
    CommandCase("eval-depth-trillion-values", with_depth(npy_claiming((10_000, 10_000, 10_000))),
                "--depth: declares shape [10000, 10000, 10000] (1,000,000,000,000 values), more than eval holds"),
    CommandCase("eval-depth-huge-2d-header", with_depth(npy_claiming((10**6, 10**6))), "--depth: has shape [1000000, 1000000]"),
    CommandCase("eval-depth-all-nan", with_depth(npy_bytes(depth_values(np.nan))), "--depth: has usable depth (finite, between "
                "1e-06 and 1e+06 in the camera path's units) at 0.0% of its values; at least 1% is needed"),
    CommandCase("eval-depth-all-negative", with_depth(npy_bytes(depth_values(-2.0))), "--depth: has usable depth"),
    CommandCase("eval-depth-all-zero", with_depth(npy_bytes(depth_values(0.0))), "at 0.0% of its values"),
    CommandCase("eval-depth-all-inf", with_depth(npy_bytes(depth_values(np.inf))), "at 0.0% of its values"),
    CommandCase("eval-depth-all-huge", with_depth(npy_bytes(depth_values(1e30))), "at 0.0% of its values"),
    CommandCase("eval-depth-wrong-size", with_depth(npy_bytes(np.ones((N, H // 2, W), np.float32))),
                f"--depth: has shape [{N}, {H // 2}, {W}]; the video needs [{N}, {H}, {W}] (one map per frame"),
    CommandCase("eval-depth-wrong-count", with_depth(npy_bytes(np.ones((N + 1, H, W), np.float32))),
                f"--depth: has shape [{N + 1}, {H}, {W}]; the video needs [{N}, {H}, {W}]"),
    CommandCase("eval-depth-one-map", with_depth(npy_bytes(np.ones((H, W), np.float32))), f"--depth: has shape [{H}, {W}]"),
    CommandCase("eval-depth-integers", with_depth(npy_bytes(np.ones((N, H, W), np.int32))), "--depth: holds int32 values"),
    CommandCase("eval-depth-complex", with_depth(npy_bytes(np.ones((N, H, W), np.complex64))), "--depth: holds complex64 values"),
    CommandCase("eval-depth-truncated", with_depth(npy_bytes(np.ones((N, H, W), np.float32))[:2000]),
                "--depth: holds 1,872 bytes of array data"),
    CommandCase("eval-depth-pickle", with_depth(object_npy), "--depth: holds Python objects"),
    CommandCase("eval-depth-garbage", with_depth(b"not an array at all" * 10), "--depth: not a .npy array"),
    CommandCase("eval-depth-empty", with_depth(b""), "--depth: not a .npy array"),
    CommandCase("eval-depth-directory", with_depth(lambda p: p.mkdir()), "--depth: is a directory, expected a regular file"),
    CommandCase("eval-depth-missing", lambda folder: video_args(folder, "--depth", folder / "nowhere.npy"), "--depth: file not found"),
    CommandCase("eval-depth-and-model", lambda folder: video_args(folder, "--depth", folder / "d.npy", "--depth-model", "m"),
                "--depth-model: give the depth either as a file (--depth) or from a model (--depth-model), not both"),
    CommandCase("eval-depth-model-not-a-model", lambda folder: video_args(folder, "--depth-model", folder),
                " is not a transformers depth model directory: config.json is missing"),
    CommandCase("eval-depth-model-fifo", lambda folder: video_args(folder, "--depth-model", fifo("model")(folder)),
                "model is not a transformers depth model directory: config.json is missing"),
    # --reference
    CommandCase("eval-reference-fifo-png", with_reference(replace_first(make_fifo, "a.png"), n=N - 1),
                "a.png: --reference: is a named pipe (FIFO), expected a regular file"),
    CommandCase("eval-reference-bomb-png", with_reference(replace_first(png_claiming(15_000, 15_000))),
                "00.png: --reference: states 225,000,000 pixels, far beyond a frame"),
    CommandCase("eval-reference-large-png", with_reference(replace_first(png_claiming(8000, 8000))),
                "00.png: --reference: is 8000x8000; the video's frames are 64x48"),
    CommandCase("eval-reference-too-few", with_reference(n=N - 1), f"--reference: holds {N - 1} images; the video has {N} frames"),
    CommandCase("eval-reference-too-many", with_reference(n=N + 3), f"--reference: holds {N + 3} images; the video has {N} frames"),
    CommandCase("eval-reference-other-size", with_reference(size=(W * 2, H)),
                f"--reference: is {2 * W}x{H}; the video's frames are {W}x{H}"),
    CommandCase("eval-reference-garbage-png", with_reference(replace_first(b"\x89PNG garbage" * 20)),
                "00.png: --reference: not an image this tool reads"),
    CommandCase("eval-reference-truncated-png", with_reference(replace_first(truncated_png)), "00.png: --reference: cannot decode image"),
    CommandCase("eval-reference-directory-png", with_reference(replace_first(lambda p: p.mkdir())), "00.png: --reference: is a directory"),
    CommandCase("eval-reference-tiff-as-png", with_reference(replace_first(lambda p: Image.new("RGB", (W, H)).save(p, format="TIFF"))),
                "00.png: --reference: not an image this tool reads"),
    CommandCase("eval-reference-empty-folder", with_reference(lambda ref: [p.unlink() for p in ref.iterdir()]),
                "--reference: holds no images"),
    CommandCase("eval-reference-missing", lambda folder: video_args(folder, "--reference", folder / "gt.mp4"),
                "--reference: file not found"),
    CommandCase("eval-reference-fifo", lambda folder: video_args(folder, "--reference", fifo("gt.mp4")(folder)),
                "--reference: is a named pipe (FIFO)"),
    CommandCase("eval-reference-short-video", lambda folder: video_args(folder, "--reference", write_video(folder / "gt.mp4", 3)),
                f"--reference: holds 3 frames of {W}x{H}; the video has {N} frames of {W}x{H}"),
    CommandCase("eval-reference-long-mkv", lambda folder: video_args(folder, "--reference", write_video(folder / "gt.mkv", N + 4)),
                f"--reference: holds more than {N} frames; the video has {N}"),
    CommandCase("eval-reference-bomb-video",
                lambda folder: video_args(folder, "--reference", repeated_video(folder / "gt.mp4", 2048, 2048, 500)),
                "--reference: holds 500 frames of 2048x2048; the video has 5 frames of 64x48"),
    # --lpips
    CommandCase("eval-lpips-backbone-list", with_lpips(backbone=[1.0, 2.0, 3.0]),
                f"{BACKBONE_FILE}: --lpips: holds a list, not a mapping of tensor names to tensors"),
    CommandCase("eval-lpips-weights-lists", with_lpips(linear=linear_weights(lambda w: w.flatten().tolist())),
                f"{LINEAR_FILE}: --lpips: lin0.model.1.weight is a list, expected a floating-point tensor"),
    CommandCase("eval-lpips-nan", with_lpips(linear=linear_weights(lambda w: torch.full_like(w, float("nan")))),
                f"{LINEAR_FILE}: --lpips: lin0.model.1.weight holds NaN or infinite values"),
    CommandCase("eval-lpips-inf-backbone",
                with_lpips(backbone={**AlexNetTaps().state_dict(), "features.0.bias": torch.full((64,), float("inf"))}),
                f"{BACKBONE_FILE}: --lpips: features.0.bias holds NaN or infinite values"),
    CommandCase("eval-lpips-huge", with_lpips(linear=linear_weights(lambda w: w * 1e30)), "lin0.model.1.weight holds values beyond"),
    CommandCase("eval-lpips-integers", with_lpips(linear=linear_weights(lambda w: torch.ones(w.shape, dtype=torch.int64))),
                "lin0.model.1.weight is a torch.int64 tensor, expected a floating-point tensor"),
    CommandCase("eval-lpips-missing-key", with_lpips(linear={"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}),
                f"{LINEAR_FILE}: --lpips: has no tensor 'lin1.model.1.weight'"),
    CommandCase("eval-lpips-wrong-shape", with_lpips(linear=linear_weights(lambda w: torch.rand(1, 10, 1, 1))),
                "--lpips: not AlexNet and LPIPS-alex weights"),
    CommandCase("eval-lpips-fifo", with_lpips(linear=make_fifo), f"{LINEAR_FILE}: --lpips: is a named pipe (FIFO)"),
    CommandCase("eval-lpips-directory", with_lpips(backbone=lambda p: p.mkdir()), f"{BACKBONE_FILE}: --lpips: is a directory"),
    CommandCase("eval-lpips-garbage", with_lpips(linear=lambda p: p.write_bytes(b"PK\x03\x04 not a zip" * 30)),
                f"{LINEAR_FILE}: --lpips: not a readable weights file"),
    CommandCase("eval-lpips-missing-file",
                lambda folder: video_args(folder, "--reference", folder / "video.mp4", "--lpips", empty_folder(folder)),
                f"--lpips: holds no {BACKBONE_FILE}"),
    CommandCase("eval-lpips-not-folder",
                lambda folder: video_args(folder, "--reference", folder / "video.mp4", "--lpips", folder / "video.mp4"),
                "--lpips: is not a folder"),
    CommandCase("eval-lpips-without-reference", lambda folder: video_args(folder, "--lpips", lpips_folder(folder)),
                "--lpips: LPIPS compares against reference frames: give --reference too"),
    # the video
    CommandCase("eval-video-decodes-to-6gb", with_target(lambda folder: repeated_video(folder / "bomb.mp4", 2048, 2048, 500), cameras=17),
                "bomb.mp4: TARGET: 500 frames of 2048x2048 are 2,097,152,000 pixels, more than eval holds at once"),
    CommandCase("eval-video-tiny-frames", with_target(lambda folder: repeated_video(folder / "tiny.mp4", 2, 2, 10_000)),
                "tiny.mp4: TARGET: has frames of 2x2 pixels; eval's optical flow needs at least 32 pixels a side"),
    CommandCase("eval-video-flow-crash-height", with_target(lambda folder: repeated_video(folder / "low.mp4", 100, 14, 5)),
                "low.mp4: TARGET: has frames of 100x14 pixels"),
    CommandCase("eval-video-frame-too-large", with_target(lambda folder: repeated_video(folder / "big.mp4", 4096, 4096, 2)),
                "big.mp4: TARGET: has frames of 4096x4096 pixels, beyond the limit"),
    CommandCase("eval-video-longer-than-camera", with_target(lambda folder: write_video(folder / "video.mp4", 9)),
                f"camera.json: --camera: has {N} cameras for a video of 9 frames"),
    CommandCase("eval-mkv-longer-than-camera", with_target(lambda folder: write_video(folder / "video.mkv", 9)),
                f"camera.json: --camera: has {N} cameras for a video of more than {N} frames"),
    CommandCase("eval-mkv-shorter-than-camera", with_target(lambda folder: write_video(folder / "video.mkv", 3)),
                f"camera.json: --camera: has {N} cameras for a video of 3 frames"),
    CommandCase("eval-video-one-frame", with_target(lambda folder: write_video(folder / "video.mp4", 1)),
                "video.mp4: TARGET: holds 1 frame(s); evaluation compares frames, it needs at least 2"),
    CommandCase("eval-video-truncated", with_target(broken_mp4(0.5)), "video.mp4: TARGET: cannot be read as a video"),
    CommandCase("eval-video-header-only", with_target(broken_mp4(0.1)), "video.mp4: TARGET: cannot be read as a video"),
    CommandCase("eval-mkv-truncated", with_target(truncated_mkv), f"camera.json: --camera: has {N} cameras for a video of 3 frames"),
    CommandCase("eval-target-image", with_target(image_as_video), "camera.json: --camera: is at 8 fps, the video at 25 fps"),
    CommandCase("eval-video-garbage", with_target(garbage_file("video.mp4", 42_000)), "video.mp4: TARGET: cannot be read as a video"),
    CommandCase("eval-video-empty", with_target(garbage_file("video.mp4", 0)), "video.mp4: TARGET: cannot be read as a video"),
    CommandCase("eval-video-fifo", with_target(fifo("video.mp4")), "video.mp4: TARGET: is a named pipe (FIFO), expected a regular file"),
    CommandCase("eval-video-missing", with_target(lambda folder: folder / "nothing.mp4"), "nothing.mp4: TARGET: file not found"),
    CommandCase("eval-video-device", lambda folder: ["eval", "/dev/zero", "--camera", str(write_camera(folder / "c.json"))],
                "/dev/zero: TARGET: is a device, expected a regular file"),
    CommandCase("eval-target-plain-folder", with_target(lambda folder: (folder / "stuff").mkdir() or folder / "stuff"),
                "stuff: TARGET: is a folder but not a run directory"),
    CommandCase("eval-video-without-camera", lambda folder: ["eval", str(write_video(folder / "video.mp4"))],
                "video.mp4: TARGET: is a video: pass its camera path with --camera"),
    # --camera
    CommandCase("eval-camera-missing", with_camera_file(lambda p: None), "cam.json: --camera: file not found"),
    CommandCase("eval-camera-fifo", with_camera_file(make_fifo), "cam.json: --camera: is a named pipe (FIFO)"),
    CommandCase("eval-camera-garbage", with_camera_file(lambda p: p.write_text("{ not json")), "cam.json:1: --camera: JSON does not parse"),
    CommandCase("eval-camera-unknown-kind", with_camera_file(lambda p: p.write_text("x"), "cam.xyz"),
                "cam.xyz: --camera: unknown camera file type"),
    CommandCase("eval-camera-other-fps", with_camera_file(lambda p: write_camera(p, fps=24.0)),
                "cam.json: --camera: is at 24 fps, the video at 8 fps"),
    CommandCase("eval-camera-one-camera", with_camera_file(lambda p: write_camera(p, n=1)),
                "cam.json: --camera: has 1 cameras; eval measures videos of 2 to"),
    CommandCase("eval-camera-nested-json", with_camera_file(lambda p: p.write_text("[" * 100_000 + "]" * 100_000)),
                "cam.json: --camera: JSON nested deeper than 64 levels"),
    CommandCase("eval-camera-directory", with_camera_file(lambda p: p.mkdir(), "cams"), "cams: --camera: not a COLMAP sparse model"),
    # run directories and their run.json
    CommandCase("eval-run-chunk-frames-1", with_run({"frames": N, "chunk_frames": 1}),
                "run.json: config.chunk_frames: must be 4k+1 between 5 and 241, got 1"),
    CommandCase("eval-run-frames-1e12", with_run({"frames": 1e12, "chunk_frames": 5}),
                "run.json: config.frames: must be a whole number of frames, got 1000000000000.0"),
    CommandCase("eval-run-frames-10-12", with_run({"frames": 10**12 + 1, "chunk_frames": 5}),
                "run.json: config.frames: must be between 1 and"),
    CommandCase("eval-run-frames-not-4k1", with_run({"frames": 6, "chunk_frames": 5}), "run.json: config.frames: must be 4k+1"),
    CommandCase("eval-run-frames-string", with_run({"frames": "5", "chunk_frames": 5}), "run.json: config.frames: must be a whole number"),
    CommandCase("eval-run-frames-bool", with_run({"frames": True, "chunk_frames": 5}), "run.json: config.frames: must be a whole number"),
    CommandCase("eval-run-frames-negative", with_run({"frames": -3, "chunk_frames": 5}), "run.json: config.frames: must be between 1 and"),
    CommandCase("eval-run-chunk-missing", with_run({"frames": N}),
                "run.json: config.chunk_frames: must be a whole number of frames, got null"),
    CommandCase("eval-run-chunk-longer", with_run({"frames": N, "chunk_frames": 9}), "run.json: config.chunk_frames: 9 exceeds frames (5)"),
    CommandCase("eval-run-first-chunk-1", with_run({"frames": 9, "chunk_frames": 5, "first_chunk_frames": 1}, n=9),
                "run.json: config.first_chunk_frames: must be 4k+1 between 5 and frames (9), got 1"),
    CommandCase("eval-run-first-chunk-float", with_run({"frames": 9, "chunk_frames": 5, "first_chunk_frames": 5.5}, n=9),
                "run.json: config.first_chunk_frames: must be a whole number"),
    CommandCase("eval-run-frames-differ", with_run({"frames": 9, "chunk_frames": 5}),
                "run.json: config.frames: says 9 frames; the run's camera path has 5 cameras"),
    CommandCase("eval-run-json-garbage", with_run("{ not json"), "run.json:1: JSON does not parse"),
    CommandCase("eval-run-json-nested", with_run("[" * 100_000 + "]" * 100_000), "run.json: JSON nested deeper than 64 levels"),
    CommandCase("eval-run-json-list", with_run("[1, 2]"), "run.json: config: is missing"),
    CommandCase("eval-run-json-fifo", with_run(make_fifo), "run.json: is a named pipe (FIFO)"),
    CommandCase("eval-run-json-missing", with_run(edit=lambda run: (run / "run.json").unlink()), "run.json: file not found"),
    CommandCase("eval-run-video-fifo", with_run(edit=replace_with_fifo("video.mp4")), "video.mp4: TARGET: is a named pipe (FIFO)"),
    CommandCase("eval-run-no-video", with_run(edit=lambda run: (run / "video.mp4").unlink()), "run: TARGET: holds no video.mp4 yet"),
    CommandCase("eval-run-camera-fifo", with_run(edit=replace_with_fifo("camera.json")), "camera.json: TARGET: is a named pipe (FIFO)"),
    # --html
    CommandCase("eval-html-directory", with_html(html_dir), "page is a directory, expected a file name"),
    CommandCase("eval-html-under-file", with_html(html_under_file), "notes.txt is not a directory"),
    CommandCase("eval-html-under-device", with_html(lambda folder: Path("/dev/null/page.html")),
                "--html: cannot create /dev/null/page.html: /dev/null is not a directory"),
    CommandCase("eval-html-is-the-video", with_html(lambda folder: folder / "video.mp4"),
                "video.mp4 is an input of this command; the page would overwrite it"),
]


# --- fuzzing ----------------------------------------------------------------------------------------


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """``data`` truncated, with bits flipped, a word overwritten or bytes appended."""
    kind = rng.choice(["truncate", "flip", "word", "append"])
    if not data or kind == "append":
        return data + rng.randbytes(rng.randint(1, 64))
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    else:
        at = rng.randrange(len(out))
        out[at : at + 8] = rng.choice([b"\0" * 8, b"\xff" * 8, (2**62).to_bytes(8, "little")])[: len(out) - at]
    return bytes(out)


HOSTILE_VALUES = [float("nan"), float("inf"), -1.0, 0.0, 1e30, -1e30, 1e-30, 2**62, "x", None, [], {}, True]


def _fuzz_depth(rng: random.Random) -> tuple[str, Callable[[Path], list[str]]]:
    """A depth file of the right or a wrong shape and dtype, filled with good or hostile values, maybe broken."""
    shape = rng.choice([(N, H, W), (N, H, W), (N, W, H), (N - 1, H, W), (H, W), (N, H, W, 1), (0, H, W)])
    dtype = rng.choice(["f4", "f8", "f2", ">f4", "i4", "u1"])
    fill = rng.choice(["good", "nan", "negative", "zero", "huge", "sparse"])
    broken = rng.random() < 0.4
    seed = rng.randrange(2**32)

    def content(path: Path) -> None:
        r = np.random.default_rng(seed)
        good = r.uniform(0.5, 5.0, shape)
        values = {"good": good, "nan": np.nan, "negative": -good, "zero": 0.0, "huge": 1e30}.get(fill)
        if fill == "sparse":
            values = np.where(r.random(shape) < 0.995, np.nan, good)
        with np.errstate(all="ignore"):
            data = npy_bytes(np.broadcast_to(np.asarray(values, np.float64), shape).astype(dtype))
        path.write_bytes(_mutate_bytes(data, random.Random(seed)) if broken else data)

    return f"depth {dtype} {list(shape)} {fill}{' broken' if broken else ''}", with_depth(content)


def _fuzz_video(rng: random.Random) -> tuple[str, Callable[[Path], list[str]]]:
    """The measured video (MP4 or MKV) with its bytes mutated."""
    suffix = rng.choice([".mp4", ".mkv"])
    seed = rng.randrange(2**32)

    def make(folder: Path) -> Path:
        path = write_video(folder / f"video{suffix}")
        path.write_bytes(_mutate_bytes(path.read_bytes(), random.Random(seed)))
        return path

    return f"video {suffix} mutated", with_target(make)


def _fuzz_reference(rng: random.Random) -> tuple[str, Callable[[Path], list[str]]]:
    """A reference folder with one image's bytes mutated."""
    index, seed = rng.randrange(N), rng.randrange(2**32)

    def edit(ref: Path) -> None:
        path = ref / f"{index:02d}.png"
        path.write_bytes(_mutate_bytes(path.read_bytes(), random.Random(seed)))

    return f"reference image {index} mutated", with_reference(edit)


def _fuzz_run_json(rng: random.Random) -> tuple[str, Callable[[Path], list[str]]]:
    """A run directory whose run.json has a value replaced by a hostile one."""
    key = rng.choice(["frames", "chunk_frames", "first_chunk_frames"])
    value = rng.choice(HOSTILE_VALUES + [1, 2, 5, 9, 4 * 10**6 + 1])
    config = {"frames": N, "chunk_frames": N, key: value}
    return f"run.json {key}={value!r}", with_run(json.loads(json.dumps(config)))


def _fuzz_camera(rng: random.Random) -> tuple[str, Callable[[Path], list[str]]]:
    """The camera JSON with one number replaced by a hostile value, or its bytes mutated."""
    seed = rng.randrange(2**32)
    how = rng.choice(["value", "bytes"])

    def write(path: Path) -> None:
        write_camera(path)
        r = random.Random(seed)
        text = path.read_text()
        if how == "bytes":
            path.write_bytes(_mutate_bytes(text.encode(), r))
            return
        number = r.choice(list(re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)))
        path.write_text(text[: number.start()] + json.dumps(r.choice(HOSTILE_VALUES)) + text[number.end() :])

    return f"camera {how}", with_camera_file(write)


FUZZERS = [_fuzz_depth, _fuzz_video, _fuzz_reference, _fuzz_run_json, _fuzz_camera]


def fuzz_cases(n: int, seed: int) -> list[CommandCase]:
    """``n`` seeded cases, the fuzzers taken in turn; case ``i`` depends only on (seed, i)."""
    cases = []
    for i in range(n):
        rng = random.Random(f"eval-{seed}-{i}")
        what, build = FUZZERS[i % len(FUZZERS)](rng)
        cases.append(CommandCase(f"fuzz-eval-{i}-{re.sub(r'[^A-Za-z0-9.=+]+', '-', what).strip('-')}", build, None))
    return cases
