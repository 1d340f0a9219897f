"""Broken and hostile inputs for mirage: a catalogue of named cases and a seeded fuzz generator.

Used by ``tests/test_hostile_inputs.py`` (in-process, every case through ``validate`` and through
``render`` up to where weights would load) and by ``benchmarks/hostile_inputs.py`` (every case as a
user would run it, in a child process, with its time and peak memory).

A case writes its files into an empty folder and returns the scene spec to run. Every case starts
from the small example scene (``render_helpers.write_small_scene``: 224x128, 17 frames) with its
start image and depth copied beside the spec, then breaks one thing. ``expect`` is a piece of text
the error must contain (the field, and what is wrong), or None for inputs that must be accepted.

A new input format gets the same treatment by adding a writer to ``CAMERA_WRITERS`` (a valid file
the fuzzer then mutates) and its named cases to ``NAMED_CASES``.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "room"
SIZE = (224, 128)
FRAMES = 17
FPS = 8


@dataclass(frozen=True)
class Case:
    """One input: ``build(folder) -> spec path``; ``expect``: text the error must contain (None: valid)."""

    name: str
    build: Callable[[Path], Path]
    expect: str | None


# --- the base scene -------------------------------------------------------------------------------


def base_spec() -> dict:
    """The small scene's spec, its files named relative to the spec's folder."""
    return {
        "prompt": "A quiet room",
        "image": "start.png",
        "depth": "depth.npy",
        "camera": {"keyframes": [{"frame": 0, "position": [0.0, 0.0, 0.0], "yaw": 0},
                                 {"frame": 8, "position": [0.3, 0.0, 0.4], "yaw": 30},
                                 {"frame": 16, "position": [0.0, 0.0, 0.0], "yaw": 0}]},
        "intrinsics": {"fov": 60},
        "frames": FRAMES,
        "fps": FPS,
        "resolution": f"{SIZE[0]}x{SIZE[1]}",
        "chunk_frames": 9,
        "steps": 2,
        "memory": {"mode": "latent"},
        "depth_model": "none",
    }


def copy_assets(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "start.png", folder / "start.png")
    shutil.copy(EXAMPLE / "depth.npy", folder / "depth.npy")


def write_spec(folder: Path, spec: dict | str) -> Path:
    """``spec`` (a mapping, or YAML text as is) as ``folder/scene.yaml``, the assets beside it."""
    copy_assets(folder)
    path = folder / "scene.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def with_changes(**changes) -> Callable[[Path], Path]:
    """A case builder: the base spec with top-level fields replaced (a value of ``DELETE`` removes one)."""

    def build(folder: Path) -> Path:
        spec = base_spec()
        for key, value in changes.items():
            if value is DELETE:
                spec.pop(key, None)
            else:
                spec[key] = value
        return write_spec(folder, spec)

    return build


DELETE = object()


def with_text(text: str) -> Callable[[Path], Path]:
    """A case builder: the spec file holds exactly ``text``."""
    return lambda folder: write_spec(folder, text)


def with_spec_file(make: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A case builder: the assets, and ``folder/scene.yaml`` made by ``make(path)`` (a FIFO, a folder, bytes)."""

    def build(folder: Path) -> Path:
        copy_assets(folder)
        make(folder / "scene.yaml")
        return folder / "scene.yaml"

    return build


def with_camera_file(name: str, text: str) -> Callable[[Path], Path]:
    """A case builder: ``folder/name`` holds ``text`` and the spec's camera is ``{trajectory: name}``."""

    def build(folder: Path) -> Path:
        spec_path = with_changes(camera={"trajectory": name})(folder)
        (folder / name).write_text(text)
        return spec_path

    return build


def base_yaml() -> str:
    return yaml.safe_dump(base_spec(), sort_keys=False)


# --- files beside the spec ------------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def with_file(name: str, content: bytes | Callable[[Path], None], **changes) -> Callable[[Path], Path]:
    """A case builder: ``folder/name`` holds ``content`` (bytes, or a function making the path) and
    the spec's fields are replaced by ``changes``."""

    def build(folder: Path) -> Path:
        spec_path = with_changes(**changes)(folder)
        target = folder / name
        if target.exists():
            target.unlink()
        if callable(content):
            content(target)
        else:
            target.write_bytes(content)
        return spec_path

    return build


def image_bytes(fmt: str, size=(448, 256), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, format=fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose header states ``width`` x ``height`` (with a few bytes of pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def depth_like_image(value: float | None = None, shape=(256, 448), transform=None) -> bytes:
    depth = np.load(EXAMPLE / "depth.npy")
    if value is not None:
        depth = np.full(shape, value, dtype=np.float32)
    if transform is not None:
        depth = transform(depth)
    return npy_bytes(depth)


def write_npz(path: Path) -> None:
    """An .npz archive holding a depth map, at ``path`` whatever its suffix."""
    with open(path, "wb") as f:
        np.savez(f, depth=np.ones((256, 448), np.float32))


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_dir(path: Path) -> None:
    path.mkdir()


def symlink_to(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


# --- camera files ---------------------------------------------------------------------------------


def small_trajectory():
    """The base scene's camera path as a Trajectory (what the writers below write)."""
    from mirage_cli.base.errors import ProblemList
    from mirage_cli.camera.keyframes import parse_keyframes
    from mirage_cli.camera.source import build_trajectory

    keys = parse_keyframes(base_spec()["camera"]["keyframes"], ProblemList("scene.yaml"), name="keyframes")
    return build_trajectory(keys, frames=FRAMES, fps=FPS, width=SIZE[0], height=SIZE[1])


CAMERA_WRITERS = {
    # writer format -> (file name, the spec's camera key)
    "json": ("path.json", "json"),
    "realestate10k": ("cameras.txt", "realestate10k"),
    "yaml": ("path.yaml", "trajectory"),
    "nerfstudio-transforms": ("transforms.json", "nerfstudio"),
    "nerfstudio-camera-path": ("camera_path.json", "nerfstudio"),
    "colmap-text": ("model", "colmap"),
    "colmap-binary": ("model", "colmap"),
}
"""Every camera format mirage reads, as written by ``mirage_cli.camera.writers``."""


def write_camera(folder: Path, fmt: str) -> tuple[Path, dict]:
    """A valid camera file of ``fmt`` in ``folder`` and the spec whose camera reads it."""
    from mirage_cli.camera.writers import write_trajectory

    name, key = CAMERA_WRITERS[fmt]
    copy_assets(folder)
    path = folder / name
    write_trajectory(path, small_trajectory(), fmt)
    spec = base_spec()
    spec["camera"] = {key: name}
    spec.pop("intrinsics")
    return path, spec


def with_camera(fmt: str, edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A case builder: a camera file of ``fmt``, changed by ``edit(path)``."""

    def build(folder: Path) -> Path:
        path, spec = write_camera(folder, fmt)
        edit(path)
        return write_spec(folder, spec)

    return build


def replace_text(old: str, new: str, count: int = -1, file: str | None = None) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        target = path / file if file else path
        text = target.read_text()
        assert old in text, f"{old!r} not in {target}"
        target.write_text(text.replace(old, new, count))

    return edit


def edit_json(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return edit


def re10k_timestamps(stamps: Callable[[int], float]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        lines = path.read_text().splitlines()
        out = [lines[0]] + [" ".join([str(stamps(i))] + line.split()[1:]) for i, line in enumerate(lines[1:])]
        path.write_text("\n".join(out) + "\n")

    return edit


def colmap_camera_line(line: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        (path / "cameras.txt").write_text(f"# one camera\n{line}\n")

    return edit


def truncate(file: str | None, keep: int) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        target = path / file if file else path
        target.write_bytes(target.read_bytes()[:keep])

    return edit


def nested(depth: int, flow: bool) -> str:
    if flow:
        return "prompt: " + "[" * depth + "x" + "]" * depth + "\n"
    return "prompt:\n" + "".join("  " * i + "- \n" if i < depth - 1 else "  " * i + "- x\n" for i in range(depth))


def billion_laughs(levels: int = 9, key: str = "prompt") -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append(f"{key}: *a{levels}")
    return "\n".join(lines) + "\n"


# --- the named cases ------------------------------------------------------------------------------

NAMED_CASES: list[Case] = [
    # resource exhaustion: each refused by a named limit before anything is allocated
    Case("frames 4e11", with_changes(frames=400_000_000_001), "frames: must be between 1 and 345,601"),
    Case("frames 1000001", with_changes(frames=1_000_001), "frames: must be between 1 and 345,601"),
    Case("resolution 100000x100000", with_changes(resolution="100000x100000"), "resolution:"),
    Case("resolution 8192x8192", with_changes(resolution="8192x8192"), "resolution:"),
    Case("fps 1e300", with_changes(fps=1e300), "fps: must be between 1 and 240"),
    Case("fps 1e-300", with_changes(fps=1e-300), "fps: must be between 1 and 240"),
    Case("steps 1e9", with_changes(steps=10**9), "steps:"),
    Case("chunk_frames 100001", with_changes(chunk_frames=100_001), "chunk_frames:"),
    Case("prompt of 2 MB", with_changes(prompt="x" * 2_000_000), "more than the limit of 1,048,576"),
    Case("prompt of 30,000 characters", with_changes(prompt="x" * 30_000), "prompt:"),
    Case("preset with 5 million keyframes", with_changes(camera={"preset": "orbit", "keyframe_count": 5_000_000}),
         "camera.keyframe_count: expected an integer between 2 and 100,000"),
    Case("trajectory YAML of 200,000 keyframes", with_camera_file("big.yaml", "keyframes:\n" + "".join(
        f"  - {{frame: {i}, position: [0, 0, {i * 1e-3:.3f}]}}\n" for i in range(200_000))), "big.yaml"),
    Case("trajectory YAML alias bomb", with_camera_file("bomb.yaml", billion_laughs(key="keyframes")),
         "aliases expand this document past"),
    Case("spec alias bomb", with_text(billion_laughs()), "aliases expand this document past"),
    Case("prompt alias bomb", with_text(base_yaml().replace("prompt: A quiet room\n", "") + billion_laughs()),
         "aliases expand this document past"),
    Case("spec is /dev/zero", lambda d: Path("/dev/zero"), "is a device, expected a regular file"),
    Case("spec is a FIFO", with_spec_file(os.mkfifo), "is a named pipe (FIFO), expected a regular file"),
    Case("spec is a directory", with_spec_file(make_dir), "is a directory"),
    Case("spec of 5 MB", with_text(base_yaml() + "#" * 5_000_000 + "\n"), "more than the limit of"),
    Case("spec not UTF-8", with_spec_file(lambda p: p.write_bytes(b"prompt: \xff\xfe\n")), "not UTF-8 text"),
    # recursion
    Case("nested flow YAML", with_text(nested(10_000, flow=True)), "nested deeper than 64 levels"),
    Case("nested block YAML", with_text(nested(300, flow=False)), "nested deeper than 64 levels"),
    Case("self-referential anchor", with_text(base_yaml().replace("prompt: A quiet room", "prompt: &p [*p]")),
         "an anchor refers to itself"),
    Case("nested nerfstudio JSON", with_camera("nerfstudio-transforms", lambda p: p.write_text("[" * 100_000 + "]" * 100_000)),
         "JSON nested deeper than 64 levels"),
    Case("nested canonical JSON", with_camera("json", lambda p: p.write_text('{"a": ' * 5_000 + "1" + "}" * 5_000)),
         "JSON nested deeper than 64 levels"),
    # division by zero and degenerate intrinsics
    Case("COLMAP camera width 0", with_camera("colmap-text", colmap_camera_line("1 PINHOLE 0 128 100 100 112 64")),
         "width and height must be whole numbers of pixels"),
    Case("COLMAP camera height 0", with_camera("colmap-text", colmap_camera_line("1 PINHOLE 224 0 100 100 112 64")),
         "width and height must be whole numbers of pixels"),
    Case("COLMAP focal 0", with_camera("colmap-text", colmap_camera_line("1 PINHOLE 224 128 0 0 112 64")), "focal"),
    Case("COLMAP malformed line", with_camera("colmap-text", colmap_camera_line("1 PINHOLE 224 128 100")),
         "cameras.txt:2: camera model PINHOLE takes 4 parameters, got 1"),
    Case("COLMAP truncated cameras.bin", with_camera("colmap-binary", truncate("cameras.bin", 10)), "model"),
    Case("COLMAP empty images.bin", with_camera("colmap-binary", truncate("images.bin", 0)), "model"),
    Case("nerfstudio camera_angle_x 0",
         with_camera("nerfstudio-transforms", edit_json(lambda d: (d.pop("fl_x", None), d.pop("fl_y", None),
                                                                   d.update(camera_angle_x=0)))),
         "camera_angle_x"),
    Case("nerfstudio camera_angle_x pi",
         with_camera("nerfstudio-transforms", edit_json(lambda d: (d.pop("fl_x", None), d.pop("fl_y", None),
                                                                   d.update(camera_angle_x=math.pi)))),
         "camera_angle_x"),
    Case("nerfstudio fov 0", with_camera("nerfstudio-camera-path", edit_json(
        lambda d: [c.update(fov=0) for c in d["camera_path"]])), "fov"),
    Case("nerfstudio width 0", with_camera("nerfstudio-transforms", edit_json(lambda d: d.update(w=0))), "transforms.json"),
    Case("canonical JSON NaN pose", with_camera("json", edit_json(lambda d: d["frames"][3]["world_from_cam"][0].__setitem__(3, math.nan))),
         "frames[3].world_from_cam"),
    Case("canonical JSON non-orthonormal rotation", with_camera("json", edit_json(
        lambda d: d["frames"][2]["world_from_cam"][0].__setitem__(0, 3.0))), "frames[2].world_from_cam"),
    Case("canonical JSON K with zero focal", with_camera("json", edit_json(lambda d: d["frames"][1]["K"][0].__setitem__(0, 0.0))),
         "frames[1].K"),
    Case("keyframe rotation not a rotation", with_changes(camera={"keyframes": [
        {"frame": 0, "world_from_cam": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
        {"frame": 16, "position": [0, 0, 1]}]}), "camera.keyframes[0]"),
    Case("empty depth array", with_file("depth.npy", npy_bytes(np.zeros((0, 0), np.float32))), "depth: expected a non-empty 2-D"),
    Case("depth .npz", with_file("depth.npz", write_npz, depth="depth.npz"),
         "depth: unsupported file type '.npz'"),
    Case("depth .npz named .npy", with_file("depth.npy", write_npz), "is an .npz archive"),
    Case("depth header claims 10^10 pixels",
         with_file("depth.npy", npy_bytes(np.ones((4, 5), np.float32)).replace(b"(4, 5)", b"(100000, 100000)")),
         "beyond the limit of 100,000,000 pixels"),
    Case("depth truncated", with_file("depth.npy", npy_bytes(np.ones((256, 448), np.float32))[:5000]), "truncated"),
    Case("depth object array", with_file("depth.npy", npy_bytes(np.array([[None, 1]], dtype=object))), "depth"),
    Case("depth 3-D", with_file("depth.npy", npy_bytes(np.ones((256, 448, 3), np.float32))), "got shape [256, 448, 3]"),
    Case("depth integer", with_file("depth.npy", npy_bytes(np.ones((256, 448), np.int32))), "expected float z-depth"),
    # the accepted-but-wrong: now each refused
    Case("keyframe at 1e308", with_changes(camera={"keyframes": [
        {"frame": 0, "position": [0.0, 0.0, 0.0]}, {"frame": 16, "position": [1e308, 1e308, 1e308]}]}),
        "camera.keyframes[1].position: coordinates must be at most 1e+06"),
    Case("depth all NaN", with_file("depth.npy", depth_like_image(float("nan"))), "depth: has usable depth"),
    Case("depth all zero", with_file("depth.npy", depth_like_image(0.0)), "depth: has usable depth"),
    Case("depth negative", with_file("depth.npy", depth_like_image(-2.0)), "depth: has usable depth"),
    Case("depth inf", with_file("depth.npy", depth_like_image(float("inf"))), "depth: has usable depth"),
    Case("depth 1e38", with_file("depth.npy", depth_like_image(1e38)), "depth: has usable depth"),
    Case("depth 1e-30", with_file("depth.npy", depth_like_image(1e-30)), "depth: has usable depth"),
    Case("depth 10x10", with_file("depth.npy", depth_like_image(2.0, shape=(10, 10))), "depth: is 10x10 but the start image is 448x256"),
    Case("depth transposed", with_file("depth.npy", depth_like_image(transform=lambda d: d.T.copy())),
         "depth: is 256x448 but the start image is 448x256"),
    Case("mask wrong shape", with_file("mask.png", image_bytes("PNG", (10, 10), "L"), mask="mask.png"),
         "mask: is 10x10 but the start image is 448x256"),
    Case("resolution fractional", with_changes(resolution=[448.7, 256.2]), "resolution: expected WIDTHxHEIGHT"),
    Case("resolution strings", with_changes(resolution=["448", "256"]), "resolution: expected WIDTHxHEIGHT"),
    Case("resolution not multiple of 32", with_changes(resolution="230x128"), "resolution:"),
    Case("fps string", with_changes(fps="8"), "fps: expected integer or number, got str '8'"),
    Case("frames string", with_changes(frames="33"), "frames: expected integer, got str '33'"),
    Case("duplicate YAML keys", with_text(base_yaml() + "frames: 33\n"), "duplicate key 'frames'"),
    Case("RealEstate10K equal timestamps", with_camera("realestate10k", re10k_timestamps(lambda i: 1000)),
         "timestamps must increase"),
    Case("RealEstate10K decreasing timestamps", with_camera("realestate10k", re10k_timestamps(lambda i: 10**6 - i * 125_000)),
         "timestamps must increase"),
    Case("RealEstate10K NaN", with_camera("realestate10k", lambda p: p.write_text(
        p.read_text().replace(p.read_text().splitlines()[2].split()[7], "nan", 1))), "cameras.txt:3"),
    # validate must say what render would say
    Case("no depth and depth_model none", with_changes(depth=DELETE), "depth: no depth for the start image"),
    Case("unknown depth model", with_changes(depth=DELETE, depth_model="no-such/depth-model"),  # the render refuses it
         "warning: depth_model no-such/depth-model is not on this machine"),
    Case("truncated JPEG", with_file("start.jpg", image_bytes("JPEG")[:600], image="start.jpg"), "image: cannot read image"),
    Case("truncated BMP", with_file("start.bmp", image_bytes("BMP")[:5000], image="start.bmp"), "image: cannot read image"),
    Case("PNG with corrupt data", with_file("start.png", (lambda b: b[:200] + bytes(x ^ 0x5A for x in b[200:400]) + b[400:])(
        (EXAMPLE / "start.png").read_bytes())), "image: cannot read image"),
    Case("PNG claiming 10^10 pixels", with_file("start.png", png_claiming(100_000, 100_000)),
         "image: 10,000,000,000 pixels: beyond the limit of 100,000,000 pixels"),
    Case("PNG claiming 1.5 x 10^8 pixels", with_file("start.png", png_claiming(15_000, 10_000)),
         "image: 15000x10000 pixels: beyond the limit of 100,000,000 pixels"),
    Case("PNG with a damaged header", with_file("start.png", image_bytes("PNG")[:30] + b"\0" * 10 + image_bytes("PNG")[40:]),
         "image: not an image this tool reads"),
    Case("image is a FIFO", with_file("start.png", make_fifo), "is a named pipe (FIFO)"),
    Case("image is /dev/zero", with_file("start.png", symlink_to("/dev/zero")), "is a device"),
    Case("image is a directory", with_file("start.png", make_dir), "is a directory"),
    Case("depth is a FIFO", with_file("depth.npy", make_fifo), "is a named pipe (FIFO)"),
    Case("camera file is a FIFO", with_camera("realestate10k", lambda p: (p.unlink(), os.mkfifo(p))), "is a named pipe"),
    Case("camera file is /dev/zero", with_camera("json", lambda p: (p.unlink(), os.symlink("/dev/zero", p))), "is a device"),
    Case("image empty file", with_file("start.png", b""), "image: is an empty file (0 bytes)"),
    Case("image 1x1", with_file("start.png", image_bytes("PNG", (1, 1))), "depth: is 448x256 but the start image is 1x1"),
    # a branch's source (from:): refused by its syntax in both commands
    Case("from a number", with_changes(**{"from": 123}), "from: expected string or null, got int 123"),
    Case("from chunk 0", with_changes(**{"from": "runs/parent@0"}), "from: expected RUN or RUN@CHUNK with CHUNK a number"),
    Case("from a mapping", with_changes(**{"from": {"run": "x", "chunk": 1}}), "from: expected string or null, got dict"),
    # accepted: odd but valid
    Case("valid: the base scene", with_changes(), None),
    Case("valid: grayscale 16-bit image", with_file("start.png", image_bytes("PNG", (448, 256), "I;16")), None),
    Case("valid: fps 23.976", with_changes(fps=23.976), None),
]


# --- the fuzz generator ---------------------------------------------------------------------------

HOSTILE_VALUES = [
    None, True, False, "", "abc", "8", "1e3", "nan", -1, 0, 1, 2, 3, 0.5, -0.0, 1e308, -1e308, math.nan, math.inf,
    -math.inf, 10**12, 2**63, [], {}, [1, 2], [1, 2, 3, 4], {"a": 1}, "x" * 300, [0] * 1000, [[[[[1]]]]], "~/nope",
    "/dev/zero", "start.png", "depth.npy", "1280x704", "0x0", "-32x32", "32x-32", "99999x99999",
]
"""Values the fuzzer puts where the spec expects something else."""

HOSTILE_TOKENS = ["nan", "inf", "-inf", "0", "-1", "1e308", "-1e308", "1e-320", "", "abc", "0x10", "1_000", "9" * 400,
                  "[", "{", "]", "}", ",", ":", '"', "null", "true", "2147483648", "-0", "1e", ".", "\x00", "\t"]
"""Tokens the fuzzer puts in place of a number in a camera file."""

SPEC_PATHS = [
    ("prompt",), ("negative_prompt",), ("image",), ("depth",), ("depth_scale",), ("mask",), ("camera",),
    ("camera", "keyframes"), ("camera", "keyframes", 0), ("camera", "keyframes", 1, "frame"),
    ("camera", "keyframes", 1, "position"), ("camera", "keyframes", 1, "position", 2), ("camera", "keyframes", 2, "yaw"),
    ("camera", "keyframes", 0, "pitch"), ("camera", "keyframes", 1, "fov"), ("camera", "keyframes", 1, "look_at"),
    ("camera", "interpolation"), ("camera", "timing"), ("camera", "preset"), ("intrinsics",), ("intrinsics", "fov"),
    ("intrinsics", "fx"), ("frames",), ("fps",), ("resolution",), ("chunk_frames",), ("steps",), ("guidance",),
    ("shift",), ("seed",), ("model",), ("memory",), ("memory", "mode"), ("memory", "pin"), ("memory", "pin_until"),
    ("memory", "voxel_size"), ("memory", "capacity"), ("memory", "dynamic_threshold"), ("memory", "occlusion_filter"),
    ("depth_model",), ("output",), ("unknown_field",),
]
"""Places in the base spec the fuzzer changes (a path of keys and list indices)."""


def _set_path(spec: dict, path: tuple, value) -> None:
    node = spec
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value


def fuzz_spec_values(rng: random.Random) -> tuple[str, Callable[[Path], Path]]:
    """One to three places of the base spec get hostile values (or lose their key)."""
    spec = base_spec()
    changes = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(SPEC_PATHS)
        value = rng.choice(HOSTILE_VALUES + [DELETE])
        if value is DELETE and len(path) == 1:
            spec.pop(path[0], None)
        elif value is not DELETE:
            _set_path(spec, path, value)
        changes.append(f"{'.'.join(map(str, path))}={'<delete>' if value is DELETE else repr(value)[:20]}")
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    return "spec values " + ", ".join(changes), with_text(text)


def _mutate_lines(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        kind = rng.choice(["delete", "duplicate", "swap", "insert", "truncate", "indent"])
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "insert":
            pos = rng.randrange(len(lines[i]) + 1)
            token = rng.choice(HOSTILE_TOKENS + ["&a ", "*a", "!!python/object:os.system ", "- ", ": "])
            lines[i] = lines[i][:pos] + token + lines[i][pos:]
        elif kind == "truncate":
            lines = lines[:i] + [lines[i][: rng.randrange(len(lines[i]) + 1)]]
        else:
            lines[i] = " " * rng.randint(1, 5) + lines[i]
    return "".join(lines)


def fuzz_spec_text(rng: random.Random) -> tuple[str, Callable[[Path], Path]]:
    """The base spec's YAML text with lines deleted, duplicated, swapped, cut or given stray tokens."""
    return "spec text", with_text(_mutate_lines(base_yaml(), rng))


def _mutate_numbers(text: str, rng: random.Random) -> str:
    import re

    spans = [m.span() for m in re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]
    for _ in range(rng.randint(1, 4)):
        if not spans:
            break
        start, end = spans.pop(rng.randrange(len(spans)))
        token = rng.choice(HOSTILE_TOKENS)
        text = text[:start] + token + text[end:]
        spans = [(s + len(token) - (end - start), e + len(token) - (end - start)) if s > start else (s, e) for s, e in spans]
    return text


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "zero_word", "append"])
    if not data or kind == "append":
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    else:
        at = rng.randrange(len(out))
        out[at:at + 8] = rng.choice([b"\0" * 8, b"\xff" * 8, (2**62).to_bytes(8, "little")])[: len(out) - at]
    return bytes(out)


def fuzz_camera(rng: random.Random) -> tuple[str, Callable[[Path], Path]]:
    """A valid camera file of a random format with numbers replaced, lines changed or bytes broken."""
    fmt = rng.choice(sorted(CAMERA_WRITERS))
    how = rng.choice(["numbers", "lines", "bytes"])
    seed = rng.randrange(2**32)

    def edit(path: Path) -> None:
        r = random.Random(seed)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        target = r.choice([f for f in files if f.stem in ("cameras", "images")] or files)
        data = target.read_bytes()
        if how == "bytes" or fmt == "colmap-binary":
            target.write_bytes(_mutate_bytes(data, r))
        elif how == "numbers":
            target.write_text(_mutate_numbers(data.decode(), r))
        else:
            target.write_text(_mutate_lines(data.decode(), r))

    return f"camera {fmt} {how}", with_camera(fmt, edit)


def fuzz_image(rng: random.Random) -> tuple[str, Callable[[Path], Path]]:
    """A start image (or mask) of a random size and mode, maybe broken, maybe in another container."""
    size = rng.choice([(448, 256), (256, 448), (1, 1), (rng.randint(1, 600), rng.randint(1, 600))])
    mode = rng.choice(["RGB", "L", "RGBA", "P", "I;16", "1", "CMYK", "F", "LA"])
    fmt = rng.choice(["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"])
    field = rng.choice(["image", "mask"])
    broken = rng.random() < 0.5
    seed = rng.randrange(2**32)

    def content() -> bytes:
        im = Image.new(mode, size)
        out = io.BytesIO()
        try:
            im.save(out, format=fmt)
        except (OSError, ValueError, KeyError):  # this container cannot hold this mode: use PNG of RGB
            out = io.BytesIO()
            im.convert("RGB").save(out, format="PNG")
        data = out.getvalue()
        return _mutate_bytes(data, random.Random(seed)) if broken else data

    name = "start.png" if field == "image" else "mask.png"
    changes = {} if field == "image" else {"mask": "mask.png"}
    return (f"{field} {fmt} {mode} {size[0]}x{size[1]}{' broken' if broken else ''}",
            lambda folder: with_file(name, content(), **changes)(folder))


def fuzz_depth(rng: random.Random) -> tuple[str, Callable[[Path], Path]]:
    """A depth map of a random shape, dtype and content, as .npy or 16-bit PNG, maybe broken."""
    shape = rng.choice([(256, 448), (256, 448), (448, 256), (10, 10), (0, 5), (256, 448, 1), (256,), ()])
    dtype = rng.choice(["f4", "f8", "f2", ">f4", "i4", "u1", "?", "c8", "u2"])
    fill = rng.choice(["example", "nan", "inf", "negative", "zero", "huge", "tiny", "mixed", "random"])
    as_png = rng.random() < 0.2
    broken = rng.random() < 0.3
    seed = rng.randrange(2**32)

    def content() -> bytes:
        r = np.random.default_rng(seed)
        base = np.load(EXAMPLE / "depth.npy")
        values = {"example": base, "nan": np.nan, "inf": np.inf, "negative": -base, "zero": 0.0, "huge": 1e30,
                  "tiny": 1e-30, "random": r.uniform(-5, 5, (256, 448))}.get(fill)
        if fill == "mixed":
            values = np.where(r.random((256, 448)) < 0.995, np.nan, base)
        arr = np.broadcast_to(np.asarray(values, dtype=np.float64), (256, 448)).copy()
        arr = np.resize(arr, shape) if shape != (256, 448) else arr
        with np.errstate(all="ignore"):
            if as_png and arr.ndim >= 2 and arr.size:
                plane = arr.reshape(arr.shape[:2])
                out = io.BytesIO()
                Image.fromarray(np.clip(np.nan_to_num(plane) * 1000, 0, 65535).astype(np.uint16)).save(out, format="PNG")
                data = out.getvalue()
            else:
                data = npy_bytes(arr.astype(dtype))
        return _mutate_bytes(data, random.Random(seed)) if broken else data

    name = "depth.png" if as_png else "depth.npy"
    return (f"depth {'png' if as_png else dtype} {list(shape)} {fill}{' broken' if broken else ''}",
            lambda folder: with_file(name, content(), depth=name)(folder))


FUZZERS = [fuzz_spec_values, fuzz_spec_text, fuzz_camera, fuzz_image, fuzz_depth]


def fuzz_cases(count: int, seed: int = 0) -> list[Case]:
    """``count`` seeded cases, the fuzzers taken in turn; case ``i`` depends only on (seed, i)."""
    cases = []
    for i in range(count):
        rng = random.Random(f"{seed}-{i}")
        name, build = FUZZERS[i % len(FUZZERS)](rng)
        cases.append(Case(f"fuzz {i}: {name}", build, None))
    return cases
