"""Side by side with the peers' own code: the official Mirage pipeline (microsoft/LatentSpatialMemory)
run beside ours on tiny random weights, stage by stage, and the largest absolute difference printed.

    .venv/bin/python benchmarks/peer_parity.py --mirage-repo ../LatentSpatialMemory [--spatia-repo ../Spatia] [--json]

The repositories are checkouts of the public code, used as they are: the harness puts their source
on ``sys.path``, builds their modules with their own classes (``WanModel``, ``VaceWanModel``,
``LatentPointCloud``, ``FlowUniPCMultistepScheduler``) and calls their functions
(``model_fn_wan_video``, ``select_reference_latents``, ``build_vace_context_96``,
``MiragePipeline.generate_single_iteration``). Nothing of theirs is copied into this project.

Weights: our tiny ``WanTransformer3DModel`` (random, ``torch.manual_seed(0)``) is saved as a diffusers
model and loaded back through diffusers; its state dict goes into their ``WanModel`` through their own
``WanModelStateDictConverter.from_diffusers``. Their ``VaceWanModel`` (random) is saved with its own
parameter names and loaded on our side by ``attach_vace``, the loader a render uses.

Boundaries fed the same tensors on both sides (the component behind them is not built here):
- the VAE: the all-white score video's latent (their ``pipe.vae.encode``) is one random tensor given
  to both (``ScoreLatents`` encodes it with our VAE in a render);
- the text encoder: the prompt embedding is one random tensor;
- the depth model (MapAnything) behind the memory: both get the same points and features.
Their pipeline module imports DiffSynth-Studio's pipeline infrastructure and a few I/O libraries at
the top; where those are not installed, empty stand-in modules take their place (none of their code
runs in the functions compared, and the table says which were stood in).

Stages (issue 26): a. one DiT + VACE forward with reference, target and preceding frames and
per-token timesteps; b. the VACE context of a chunk; c. reference selection; d. the memory's
projection into a target camera; e. the whole denoising of one chunk (scheduler included) and the
next chunk's sequence. f. Spatia (``conditioning.method: spatia``): one DiT + VACE forward with its
layout and a later round's sequence (their ``model_fn_wan_video``), the control and score videos
(their ``WanVideoUnit_ControlNetAsVACEEmbedder``), the history and reference assembly (their
``WanVideoUnit_HistVideoEmbedder``, ``WanVideoUnit_RefImageEmbedderFused``), reference selection (their
``select_reference_frames``), the scheduler at its 40 steps; the LoRA schedule is read, not run.
Boundaries for Spatia: the VAE is our tiny one behind their ``vae.encode`` on both sides; the point
renderer (PyTorch3D) is not built, both sides get the same render; the point cloud file (MapAnything's)
is handed to their script in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from mirage_cli.backbone.configs import tiny_transformer_config, wan22_scheduler_config
from mirage_cli.backbone.vace import VACE_IN_CHANNELS, attach_vace
from mirage_cli.backbone.vace_forward import vace_forward
from mirage_cli.conditioning.vace import (
    MAX_REFERENCES,
    REFERENCE_IOU_THRESHOLD,
    REFERENCE_VOXEL,
    denoise_vace_chunk,
    preceding_span,
    select_references,
    sequence_timestep,
    vace_context,
    visible_voxels,
)
from mirage_cli.denoise.loop import WAN_SIGMAS, set_sigmas
from mirage_cli.memory.point_cache import PointCache, gather_rows
from mirage_cli.spec.plan import plan_chunks

LAYERS = 4
"""Tiny DiT depth: VACE blocks on layers 0 and 2 (Mirage's every 2nd layer), or 0 (Spatia's every 4th)."""
C, H_LAT, W_LAT = 48, 4, 6
"""Latent channels and grid of the tiny chunk (pixel size 64 x 96 at the VAE's 16x)."""
STRIDE = 16
REFS, TARGET, PRECEDING = 2, 3, 2
TEXT_TOKENS = 7
STEPS, SHIFT = 20, 5.0
"""The official inference's steps and shift (``MirageConfig``)."""

INFRASTRUCTURE = ("diffsynth", "torchvision", "pandas", "imageio", "imageio_ffmpeg", "modelscope", "ftfy", "cv2", "decord")
"""Modules the official pipeline imports at the top for loading, training data and video I/O."""


@dataclass
class Row:
    stage: str
    diff: float | None
    note: str

    def cells(self) -> str:
        shown = "skipped" if self.diff is None else ("0 (bit-equal)" if self.diff == 0 else f"{self.diff:.2e}")
        return f"| {self.stage} | {shown} | {self.note} |"


# --- the peers' code, imported as it is ---------------------------------------------------------------


class _Anything:
    """What an attribute of a stood-in module is: callable, subclassable, never used by the compared code."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name):
        return _Anything()

    def __mro_entries__(self, bases):
        return (_AnyBase,)


class _AnyBase:
    """What a class of a stood-in module is as a base class: it takes any arguments (Spatia's pipeline
    units pass theirs to DiffSynth's ``PipelineUnit``) and does nothing."""

    def __init__(self, *args, **kwargs):
        pass


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for the top-level packages ``roots`` (and everything under them)."""

    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StandInModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def import_official(repo: Path) -> tuple[types.SimpleNamespace, list[str]]:
    """The official modules from a checkout of microsoft/LatentSpatialMemory; the stood-in packages."""
    src = repo / "src"
    if not (src / "mirage" / "inference" / "mirage_pipeline.py").is_file():
        raise SystemExit(f"--mirage-repo: {repo} is not a checkout of microsoft/LatentSpatialMemory (no src/mirage/inference)")
    # our side's libraries first: they look for optional packages, which must not find the stand-ins
    from diffusers import UniPCMultistepScheduler, WanTransformer3DModel  # noqa: F401

    missing = [name for name in INFRASTRUCTURE if importlib.util.find_spec(name) is None]
    stand_ins = _StandIns(missing)
    sys.meta_path.insert(0, stand_ins)
    sys.path.insert(0, str(src))
    modules = {}
    try:
        for name in ("mirage.inference.mirage_pipeline", "mirage.spatia.wan_video_dit", "mirage.spatia.wan_video_vace",
                     "mirage.spatia.flow_match", "mirage.latent_point_cloud"):
            modules[name.rsplit(".", 1)[1]] = importlib.import_module(name)
    finally:
        sys.meta_path.remove(stand_ins)
    return types.SimpleNamespace(**modules), missing


# --- tiny models -----------------------------------------------------------------------------------


def tiny_config() -> dict:
    return {**tiny_transformer_config(), "num_layers": LAYERS}


def our_transformer(folder: Path):
    """Our tiny DiT, random after ``torch.manual_seed(0)``, saved and loaded back as a diffusers model."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    WanTransformer3DModel(**tiny_config()).save_pretrained(folder / "transformer")
    return WanTransformer3DModel.from_pretrained(folder / "transformer").eval()


def their_models(official, transformer, vace_layers: tuple[int, ...]):
    """Their ``WanModel`` holding our transformer's weights (their converter) and a random ``VaceWanModel``."""
    cfg = tiny_config()
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    dit = official.wan_video_dit.WanModel(
        dim=dim, in_dim=cfg["in_channels"], ffn_dim=cfg["ffn_dim"], out_dim=cfg["out_channels"], text_dim=cfg["text_dim"],
        freq_dim=cfg["freq_dim"], eps=cfg["eps"], patch_size=tuple(cfg["patch_size"]), num_heads=cfg["num_attention_heads"],
        num_layers=cfg["num_layers"], has_image_input=False, seperated_timestep=True, require_vae_embedding=False,
        require_clip_embedding=False, fuse_vae_embedding_in_latents=True,
    )
    converted, _ = official.wan_video_dit.WanModelStateDictConverter().from_diffusers(transformer.state_dict())
    dit.load_state_dict(converted, strict=True)
    torch.manual_seed(1)
    vace = official.wan_video_vace.VaceWanModel(vace_layers=vace_layers, vace_in_dim=VACE_IN_CHANNELS, patch_size=(1, 2, 2),
                                                 dim=dim, num_heads=cfg["num_attention_heads"], ffn_dim=cfg["ffn_dim"], eps=cfg["eps"])
    with torch.no_grad():  # trained-like: the output projections are not zero (VACE initialises them to zero)
        for p in vace.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return dit.eval(), vace.eval()


def attach_their_vace(transformer, vace, folder: Path):
    """Our transformer with their VACE weights, saved in their names and loaded by ``attach_vace``."""
    path = folder / "vace.safetensors"
    save_file({k: v.contiguous() for k, v in vace.state_dict().items()}, str(path))
    return attach_vace(transformer, path)


# --- inputs ------------------------------------------------------------------------------------------


def chunk_inputs(seed: int = 3) -> dict:
    gen = torch.Generator().manual_seed(seed)
    cfg = tiny_config()

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    return {
        "references": rand(1, C, REFS, H_LAT, W_LAT),
        "target": rand(1, C, TARGET, H_LAT, W_LAT),
        "preceding": rand(1, C, PRECEDING, H_LAT, W_LAT),
        "target_scene": rand(C, TARGET, H_LAT, W_LAT),
        "preceding_scene": rand(C, PRECEDING, H_LAT, W_LAT),
        "score": rand(C, TARGET + PRECEDING, H_LAT, W_LAT),
        "text": rand(1, TEXT_TOKENS, cfg["text_dim"]),
        "t": torch.tensor(700.0),
    }


def tokens_per_frame() -> int:
    return (H_LAT // 2) * (W_LAT // 2)


# --- our side of each stage (tests/test_peer_parity.py runs these without the repositories) --------


def ours_forward(model, x: dict, control: torch.Tensor) -> torch.Tensor:
    """Stage a, ours: [1, C, R+T+P, h, w] velocity of the whole sequence."""
    sequence = torch.cat([x["references"], x["target"], x["preceding"]], dim=2)
    timestep = sequence_timestep(x["t"], REFS, TARGET, PRECEDING, tokens_per_frame())
    with torch.no_grad():
        return vace_forward(model, sequence, timestep, x["text"], control, ref_frames=REFS)


def ours_context(x: dict) -> torch.Tensor:
    """Stage b, ours: the VACE context [1, 96, T+P, h, w] as ``VaceRecipe.denoise`` builds it."""
    scene = torch.cat([x["target_scene"], x["preceding_scene"]], dim=1)
    return vace_context(scene, x["score"])


def scene_points(seed: int = 5, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """A room-sized cloud of points [N, 3] in front of the cameras and their features [N, C]."""
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([4.0, 2.0, 3.0]) + torch.tensor([-2.0, -1.0, 1.5])
    return xyz, torch.randn(n, C, generator=gen)


def cameras(count: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """``count`` cameras turning right and stepping forward: world_from_cam [count, 4, 4] and pixel K [count, 3, 3]."""
    poses = np.zeros((count, 4, 4), np.float32)
    for i in range(count):
        yaw = np.deg2rad(8.0 * i)
        poses[i, :3, :3] = [[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]
        poses[i, :3, 3] = [0.05 * i, 0.0, 0.1 * i]
        poses[i, 3, 3] = 1
    W, H = W_LAT * STRIDE, H_LAT * STRIDE
    K = np.array([[70.0, 0, W / 2], [0, 70.0, H / 2], [0, 0, 1]], np.float32)
    return poses, np.repeat(K[None], count, 0)


def ours_selection(xyz: torch.Tensor, poses, K, history_frames: list[int], target_frames: list[int]) -> list[int]:
    """Stage c, ours: the history indices chosen for a chunk seen from ``target_frames``."""
    size = (H_LAT * STRIDE, W_LAT * STRIDE)

    def visible(frame: int) -> torch.Tensor:
        return visible_voxels(xyz, torch.as_tensor(K[frame]), torch.as_tensor(poses[frame]), size)

    target = torch.unique(torch.cat([visible(f) for f in target_frames]))
    return select_references(target, [(i, visible(f)) for i, f in enumerate(history_frames)])


PROJECTION_GRID = (22, 40)
"""Stage d's latent grid (a 352 x 640 view): big enough for holes between the points."""


def ours_projection(xyz: torch.Tensor, features: torch.Tensor, world_from_cam: np.ndarray, K_lat: np.ndarray) -> tuple:
    """Stage d, ours: the memory's points rendered by nearest cell into a camera with grid intrinsics
    ``K_lat``: latents [C, h, w] and mask [h, w] (``PointCache.render``, as ``query(projection="nearest")``)."""
    cache = PointCache(C, torch.float32, "cpu")
    cache.add(xyz, features, torch.full((len(xyz),), 0.01), torch.zeros(len(xyz), dtype=torch.int32))
    winner, _ = cache.render(torch.as_tensor(K_lat)[None].double(), torch.as_tensor(world_from_cam)[None].double(),
                             PROJECTION_GRID, 0.0, 0.0, nearest=True)
    return gather_rows(cache.features, winner)[0].permute(2, 0, 1), winner[0] >= 0


class _Backbone:
    """What ``denoise_vace_chunk`` needs of a backbone: device, dtype, the transformer, the scheduler."""

    def __init__(self, transformer):
        self.device, self.dtype, self.transformer = torch.device("cpu"), torch.float32, transformer

    def make_scheduler(self, shift: float):
        from diffusers import UniPCMultistepScheduler

        config = {**wan22_scheduler_config(), "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}
        return UniPCMultistepScheduler.from_config(config)


def ours_denoise(model, x: dict, noise: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """Stage e, ours: one chunk denoised from ``noise`` [1, C, T, h, w] with guidance 1: [1, C, T, h, w]."""
    result = denoise_vace_chunk(
        _Backbone(model), model, noise=noise, cond_frame0=x["target"][0, :, 0], references=x["references"],
        preceding=x["preceding"], control=ours_context(x), prompt_embeds=x["text"], negative_prompt_embeds=None,
        guidance=1.0, steps=steps, shift=SHIFT, generator=torch.Generator().manual_seed(0),
    )
    return result.latents


# --- the official side, stage by stage ---------------------------------------------------------------


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: ours {list(a.shape)}, theirs {list(b.shape)}")
    return float((a.double() - b.double()).abs().max())


def mirage_rows(official, label: str, vace_layers: tuple[int, ...], stages: str = "abcde") -> list[Row]:
    rows = []
    x = chunk_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        transformer = our_transformer(Path(tmp))
        dit, vace = their_models(official, transformer, vace_layers)
        model = attach_their_vace(transformer, vace, Path(tmp))
    control = ours_context(x)
    mp = official.mirage_pipeline
    fake_pipe = types.SimpleNamespace(vae=types.SimpleNamespace(upsampling_factor=STRIDE, parameters=lambda: iter([torch.zeros(1)]),
                                                                encode=lambda videos, **kw: x["score"][None]),
                                      device="cpu", torch_dtype=torch.float32, dit=dit, vace=vace,
                                      load_models_to_device=lambda names: None)
    theirs_context = mp.build_vace_context_96(pipe=fake_pipe, target_scene=x["target_scene"], preceding_scene=x["preceding_scene"],
                                              dtype=torch.float32, device=torch.device("cpu"), tiled=False, tile_size=(1, 1),
                                              tile_stride=(1, 1))[0]
    if "a" in stages:
        per_frame = torch.zeros(REFS + TARGET + PRECEDING)
        per_frame[REFS + 1 : REFS + TARGET] = x["t"]
        sequence = torch.cat([x["references"], x["target"], x["preceding"]], dim=2)
        with torch.no_grad():
            theirs = mp.model_fn_wan_video(dit=dit, vace=vace, latents=sequence, timestep=per_frame, context=x["text"],
                                           vace_context=[theirs_context], vace_scale=1.0, num_ref_frames=REFS,
                                           fuse_vae_embedding_in_latents=True)
        rows.append(Row(f"a. DiT + VACE forward ({label})", _max_diff(ours_forward(model, x, control), theirs),
                        f"{REFS} references, {TARGET} target, {PRECEDING} preceding latent frames, per-token timesteps; "
                        f"float32 attention in another order: float tolerance"))
    if label != "Mirage":
        return rows
    if "b" in stages:
        rows.append(Row("b. VACE context", _max_diff(control[0], theirs_context),
                        "scene latents of target and preceding frames above the score latent (the VAE's output fed to both)"))
    if "c" in stages:
        rows.append(_selection_row(official))
    if "d" in stages:
        rows.append(_projection_row(official))
    if "e" in stages:
        rows.extend(_denoise_rows(official, mp, fake_pipe, model, x))
    return rows


def _selection_row(official) -> Row:
    mp, lpc_mod = official.mirage_pipeline, official.latent_point_cloud
    xyz, features = scene_points()
    poses, K = cameras()
    history, target = [0, 1, 2, 3, 4, 5], [6, 7, 8]
    frames = np.zeros((len(poses), H_LAT * STRIDE, W_LAT * STRIDE, 3), np.uint8)
    geometry = mp.VideoGeometry(frames=frames, depths=np.ones(frames.shape[:3], np.float32), intrinsics=K, poses_c2w=poses)
    K_lat = mp.scale_intrinsics_to_hw(K[0], frames.shape[1:3], (H_LAT, W_LAT))
    lpc = lpc_mod.LatentPointCloud(xyz, features, torch.ones(len(xyz), dtype=torch.bool), torch.as_tensor(K_lat), (H_LAT, W_LAT))
    visible = {i: mp.visible_points_from_lpc(lpc, geometry, f) for i, f in enumerate(history)}
    latents = [torch.full((C, H_LAT, W_LAT), float(i)) for i in range(len(history))]
    _, theirs = mp.select_reference_latents(lpc=lpc, geometry=geometry, target_pose_indices=target, generated_latents=latents,
                                            frame_visible_points=visible, max_reference_frames=MAX_REFERENCES,
                                            iou_threshold=REFERENCE_IOU_THRESHOLD, voxel_size=REFERENCE_VOXEL)
    ours = ours_selection(xyz, poses, K, history, target)
    return Row("c. reference selection", 0.0 if ours == theirs else float("inf"),
               f"chosen history frames: ours {ours}, theirs {theirs} (voxel IoU >= {REFERENCE_IOU_THRESHOLD}, at most {MAX_REFERENCES})")


def _projection_row(official) -> Row:
    mp, lpc_mod = official.mirage_pipeline, official.latent_point_cloud
    xyz, features = scene_points(n=600)
    poses, K = cameras()
    h, w = PROJECTION_GRID
    K_lat = mp.scale_intrinsics_to_hw(K[4], (H_LAT * STRIDE, W_LAT * STRIDE), (h, w))
    lpc = lpc_mod.LatentPointCloud(xyz, features, torch.ones(len(xyz), dtype=torch.bool), torch.as_tensor(K_lat), (h, w))
    theirs, their_mask = lpc.project(poses[4], K_lat)
    ours, our_mask = ours_projection(xyz, features, poses[4], K_lat)
    masks = int((our_mask != their_mask).sum())
    return Row("d. memory projection (nearest cell)", _max_diff(ours, theirs) if masks == 0 else float("inf"),
               f"{len(xyz)} points into a {h}x{w} grid, {int(our_mask.sum())} cells filled (holes left), masks differ in "
               f"{masks} cells; the same grid intrinsics given to both")


def _denoise_rows(official, mp, fake_pipe, model, x) -> list[Row]:
    gen = torch.Generator().manual_seed(11)
    noise = torch.randn(1, C, TARGET, H_LAT, W_LAT, generator=gen)
    config = mp.MirageConfig(infer_steps=STEPS, timestep_shift=SHIFT, no_cfg=True, guidance_scale=1.0, tiled=False)
    pipeline = types.SimpleNamespace(pipe=fake_pipe, config=config)
    with torch.no_grad():
        theirs = mp.MiragePipeline.generate_single_iteration(
            pipeline, target_scene=x["target_scene"], first_frame_latent=x["target"][0, :, :1], preceding_latents=x["preceding"],
            preceding_scene=x["preceding_scene"], reference_latents=x["references"], context=x["text"], uncon_context=None,
            generator=torch.Generator().manual_seed(11))
    ours = ours_denoise(model, x, noise)
    sched = official.flow_match.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    sched.set_timesteps(STEPS, device="cpu", shift=SHIFT)
    our_sched = _Backbone(model).make_scheduler(SHIFT)
    set_sigmas(our_sched, STEPS, "cpu", WAN_SIGMAS)
    return [
        _next_chunk_row(mp),
        Row("e. scheduler timesteps", _max_diff(our_sched.timesteps.double(), sched.timesteps.double()),
            f"UniPC, {STEPS} steps, shift {SHIFT:g}: ours (diffusers' UniPC on the Wan2.2 grid, WAN_SIGMAS) vs "
            f"their FlowUniPCMultistepScheduler"),
        Row("e. scheduler sigmas", _max_diff(our_sched.sigmas.double(), sched.sigmas.double()),
            "the same grid, shifted in float64 by diffusers and in float32 by theirs: float tolerance"),
        Row("e. one chunk denoised", _max_diff(ours, theirs),
            f"{STEPS} steps from the same noise, guidance 1, frame 0 re-clamped after every step; the forward's float "
            f"differences carried through the steps"),
    ]


def _next_chunk_row(mp) -> Row:
    """The next chunks' sequences: each chunk's latent cameras (their ``compute_iteration_plan`` and
    ``build_target_pose_indices``) and preceding frames (their ``select_preceding_context``) over the
    history each side records (chunk 0's latent frames all, the later chunks' from their frame 1)."""
    worst, checked = 0.0, 0
    for frames in (97, 81, 33, 17):
        chunks = plan_chunks(frames, 33)
        plan = mp.compute_iteration_plan(frames)  # mirage.inference.utils's, imported by their pipeline
        history = []
        if len(plan) != len(chunks):
            return Row("e. next chunk's sequence", float("inf"), f"{frames} frames: {len(chunks)} chunks here, {len(plan)} theirs")
        for i, (chunk, (start, _, model_frames)) in enumerate(zip(chunks, plan, strict=True)):
            theirs_cams = mp.build_target_pose_indices(start_frame=0, output_start=start, model_frames=model_frames, temporal_stride=4,
                                                       iter_idx=i)
            if theirs_cams != chunk.latent_camera_frames():
                return Row("e. next chunk's sequence", float("inf"), f"chunk {i}: cameras {chunk.latent_camera_frames()} vs {theirs_cams}")
            theirs, _ = mp.select_preceding_context(generated_latents=history, generated_scene_latents=history, num_frames=2)
            span = preceding_span(len(history))
            ours = torch.stack(history[span], dim=1).unsqueeze(0) if span.stop > span.start else None
            if (ours is None) != (theirs is None):
                return Row("e. next chunk's sequence", float("inf"), f"chunk {i}: preceding frames given by one side only")
            if ours is not None:
                worst, checked = max(worst, _max_diff(ours, theirs)), checked + 1
            new = torch.randn(C, chunk.num_latent_frames, 1, 1).unbind(1)
            history.extend(new if i == 0 else new[1:])
    return Row("e. next chunk's sequence", worst, f"latent cameras and the 2 preceding latent frames of every chunk of 97, 81, 33 "
                                                  f"and 17-frame videos ({checked} chunks with preceding frames)")


# --- Spatia (stage f) ----------------------------------------------------------------------------------

SPATIA_INFRASTRUCTURE = ("diffsynth", "open3d", "decord", "imageio", "modelscope", "ftfy", "torchvision", "cv2", "pandas")
"""Modules Spatia's pipeline and inference script import at the top for loading, point clouds and video I/O."""
HISTORY, NEW, SPATIA_REFS = 3, 2, 2
"""A later round's window: 3 history latent frames (9 pixel frames), 2 new ones, 2 references."""


def import_spatia(repo: Path) -> tuple[types.SimpleNamespace, list[str]]:
    """Spatia's modules from a checkout of ZhaoJingjing713/Spatia; the stood-in packages."""
    if not (repo / "wan" / "wan_video_new.py").is_file() or not (repo / "inference.py").is_file():
        raise SystemExit(f"--spatia-repo: {repo} is not a checkout of ZhaoJingjing713/Spatia (no wan/wan_video_new.py, inference.py)")
    from diffusers import UniPCMultistepScheduler, WanTransformer3DModel  # noqa: F401  (ours first, as import_official)

    missing = [name for name in SPATIA_INFRASTRUCTURE  # not installed, or stood in already (by import_official)
               if isinstance(sys.modules.get(name), _StandInModule) or importlib.util.find_spec(name) is None]
    stand_ins = _StandIns(missing)
    sys.meta_path.insert(0, stand_ins)
    sys.path.insert(0, str(repo))
    modules = {}
    try:
        for name in ("wan.wan_video_new", "wan.wan_video_dit", "wan.wan_video_vace", "wan.flow_match", "utils.frustum_culling",
                     "inference"):
            modules[name.rsplit(".", 1)[-1]] = importlib.import_module(name)
    finally:
        sys.meta_path.remove(stand_ins)
    return types.SimpleNamespace(**modules), missing


def spatia_pipe(spatia, backbone):
    """What Spatia's pipeline units use of their pipeline: our tiny VAE behind their ``vae.encode``
    (a list of videos, or a batch, encoded one by one and stacked, as DiffSynth's ``WanVideoVAE``), their
    own ``preprocess_image``, and DiffSynth's ``preprocess_video`` (its frames' ``preprocess_image``
    stacked along time: the base class is DiffSynth's, not built here)."""
    pipe = types.SimpleNamespace(device="cpu", torch_dtype=torch.float32, training=False, load_models_to_device=lambda names: None)

    def encode(videos, device=None, **kwargs):
        return torch.stack([backbone.encode_video(video.unsqueeze(0).float())[0] for video in videos])

    pipe.vae = types.SimpleNamespace(encode=encode)
    pipe.preprocess_image = types.MethodType(spatia.wan_video_new.WanVideoPipeline.preprocess_image, pipe)
    pipe.preprocess_video = lambda video, min_value=-1, max_value=1: torch.stack(
        [pipe.preprocess_image(frame, min_value=min_value, max_value=max_value) for frame in video], dim=2)
    return pipe


def spatia_rows(spatia) -> list[Row]:
    from mirage_cli.backbone.random_components import tiny_backbone
    from mirage_cli.conditioning.spatia import (
        control_videos,
        encode_frames,
        frontmost_visible,
        history_target,
        match_references,
        reference_latents,
    )

    rows = [_spatia_forward_row(spatia)]
    backbone = tiny_backbone(torch.device("cpu"), torch.float32)
    pipe = spatia_pipe(spatia, backbone)
    gen = torch.Generator().manual_seed(21)
    H, W = H_LAT * STRIDE, W_LAT * STRIDE
    frames = 4 * (HISTORY + NEW - 1) + 1

    # control and score videos: the renderer's output (a render on black and its coverage) fed to both
    rgb = torch.rand(frames, 3, H, W, generator=gen)
    coverage = (torch.rand(frames, H, W, generator=gen) < 0.6).float()
    on_black = (rgb * coverage.unsqueeze(1)).permute(0, 2, 3, 1).numpy()
    render8 = [(f * 255).astype(np.uint8) for f in on_black]  # render_point.py's last step
    score8 = [255 - np.repeat((c * 255).astype(np.uint8)[..., None], 3, -1) for c in coverage.numpy()]  # inference.py
    with torch.no_grad():
        theirs = spatia.wan_video_new.WanVideoUnit_ControlNetAsVACEEmbedder().process(
            pipe, control_video=render8, control_score=score8, vace_scale=1.0, num_frames=frames, height=H, width=W, tiled=False,
            tile_size=None, tile_stride=None)["vace_context"]
        control, score = control_videos(rgb, coverage)
        ours = vace_context(backbone.encode_video(control)[0], backbone.encode_video(score)[0])
    rows.append(Row("f. control and score videos", _max_diff(ours, theirs),
                    f"{frames} frames rendered on black and their coverage, 8-bit, 255 - coverage as the score, both encoded by "
                    f"the same tiny VAE (their renderer, PyTorch3D, and the mp4 round trip between their scripts not built)"))

    # history and references: the sequence before the denoising loop
    history8 = torch.randint(0, 256, (9, H, W, 3), generator=gen, dtype=torch.uint8)
    refs8 = torch.randint(0, 256, (SPATIA_REFS, H, W, 3), generator=gen, dtype=torch.uint8)
    noise = torch.randn(1, C, HISTORY + NEW, H_LAT, W_LAT, generator=gen)
    with torch.no_grad():
        their_hist = spatia.wan_video_new.WanVideoUnit_HistVideoEmbedder(num_hist_frames=9).process(
            pipe, input_video=[f.numpy() for f in history8], noise=noise.clone(), tiled=False, tile_size=None, tile_stride=None)["latents"]
        their_seq = spatia.wan_video_new.WanVideoUnit_RefImageEmbedderFused().process(
            pipe, latents=their_hist, height=H, width=W, tiled=False, tile_size=None, tile_stride=None,
            ref_images=[f.numpy() for f in refs8])["latents"]
        our_target = history_target(encode_frames(backbone, history8.permute(3, 0, 1, 2)), noise[:, :, HISTORY - 1 :])
        our_seq = torch.cat([reference_latents(backbone, list(refs8.permute(0, 3, 1, 2))), our_target], dim=2)
    rows.append(Row("f. history assembly", _max_diff(our_target, their_hist),
                    "the last 9 frames (8-bit) encoded again into 3 latent frames before the new frames' noise"))
    rows.append(Row("f. references + history sequence", _max_diff(our_seq, their_seq),
                    f"{SPATIA_REFS} reference images, each encoded alone, before the history and the noise"))
    rows.append(_spatia_selection_row(spatia, frontmost_visible, match_references))
    sched = spatia.flow_match.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    sched.set_timesteps(40, device="cpu", shift=SHIFT)
    our_sched = _Backbone(None).make_scheduler(SHIFT)
    set_sigmas(our_sched, 40, "cpu", WAN_SIGMAS)
    rows.append(Row("f. scheduler timesteps (40 steps)", _max_diff(our_sched.timesteps.double(), sched.timesteps.double()),
                    "Spatia's FlowUniPCMultistepScheduler, 40 steps, shift 5 (its defaults) vs ours on the Wan2.2 grid"))
    rows.append(Row("f. LoRA schedule", None,
                    "read, not run (their generate_video needs MapAnything and PyTorch3D): inference.py unloads the LoRA in round "
                    "0 and loads it once for the later rounds; ours fuses it once before chunk 1 "
                    "(tests/test_spatia_recipe.py asserts when, and that a render resumed in chunk 1 fuses it again)"))
    return rows


def _spatia_forward_row(spatia) -> Row:
    """Stage a for Spatia's layout: 8 VACE blocks on every 4th layer (one on the tiny DiT's 4), a later
    round's sequence [references | history | new], their ``model_fn_wan_video``."""
    x = chunk_inputs(seed=4)
    gen = torch.Generator().manual_seed(9)
    target = torch.randn(1, C, HISTORY + NEW, H_LAT, W_LAT, generator=gen)
    control = torch.randn(1, VACE_IN_CHANNELS, HISTORY + NEW, H_LAT, W_LAT, generator=gen)
    sequence = torch.cat([x["references"], target], dim=2)
    with tempfile.TemporaryDirectory() as tmp:
        transformer = our_transformer(Path(tmp))
        dit, vace = their_models(types.SimpleNamespace(wan_video_dit=spatia.wan_video_dit, wan_video_vace=spatia.wan_video_vace),
                                 transformer, (0,))
        model = attach_their_vace(transformer, vace, Path(tmp))
    per_frame = torch.zeros(REFS + HISTORY + NEW)
    per_frame[REFS + HISTORY :] = x["t"]
    with torch.no_grad():
        theirs = spatia.wan_video_new.model_fn_wan_video(dit=dit, vace=vace, latents=sequence, timestep=per_frame, context=x["text"],
                                                          vace_context=control, vace_scale=1.0, num_ref_frames=REFS,
                                                          fuse_vae_embedding_in_latents=True)
        timestep = sequence_timestep(x["t"], REFS, HISTORY + NEW, 0, tokens_per_frame(), held=HISTORY)
        ours = vace_forward(model, sequence, timestep, x["text"], control, ref_frames=REFS)
    return Row("f. DiT + VACE forward (Spatia)", _max_diff(ours, theirs),
               f"1 VACE block on the tiny DiT's 4 layers (every 4th), {REFS} references, {HISTORY} history and {NEW} new latent "
               f"frames, history at timestep 0; float32 attention in another order: float tolerance")


def _spatia_selection_row(spatia, frontmost_visible, match_references) -> Row:
    """Reference selection: their ``select_reference_frames`` (inference.py) on the same points and cameras."""
    xyz, _ = scene_points()
    poses, _ = cameras()
    H, W = H_LAT * STRIDE, W_LAT * STRIDE
    intrinsic = np.array([70.0 / W, 70.0 / H, 0.5, 0.5], np.float32)  # Spatia's normalized, corner-origin
    fx, fy, cx, cy = (float(intrinsic[0] * W), float(intrinsic[1] * H), float(intrinsic[2] * W), float(intrinsic[3] * H))
    K = torch.tensor([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]], dtype=torch.float64)  # ours: centre origin
    cam_from_world = torch.linalg.inv(torch.as_tensor(poses).double()).float()
    candidates, targets = [0, 1, 2, 3, 4, 5], [6, 7, 8]
    spatia.inference.o3d = types.SimpleNamespace(io=types.SimpleNamespace(
        read_point_cloud=lambda path: types.SimpleNamespace(points=xyz.double().numpy(), colors=np.zeros((len(xyz), 3)))))
    args = types.SimpleNamespace(width=W, height=H, point_retrieval_batch_size=10_000_000, ref_num=7)
    theirs = spatia.inference.select_reference_frames(
        pipe=types.SimpleNamespace(device="cpu"), points_path="points.ply", all_exist_cam_w2cs=cam_from_world[candidates].numpy(),
        new_cam_w2c=cam_from_world[targets].numpy(), intrinsic=intrinsic, all_ref_frames=candidates, args=args)
    visible = frontmost_visible(xyz.double().float(), cam_from_world[candidates + targets], K.float().expand(9, 3, 3), (H, W))
    ours = [candidates[i] for i in match_references(visible[:6], visible[6:])]
    return Row("f. reference selection", 0.0 if ours == theirs else float("inf"),
               f"chosen frames: ours {ours}, theirs {theirs} (z-buffer visibility of {len(xyz)} points, Hungarian matching; the "
               f"point cloud handed to their script in place of its MapAnything file)")


def table(rows: list[Row], stood_in: list[str]) -> str:
    lines = ["| stage | max abs diff | what |", "|---|---|---|", *(r.cells() for r in rows)]
    if stood_in:
        lines.append(f"\nStood in for (not installed, not used by the compared code): {', '.join(stood_in)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirage-repo", type=Path, help="a checkout of microsoft/LatentSpatialMemory")
    parser.add_argument("--spatia-repo", type=Path, help="a checkout of ZhaoJingjing713/Spatia")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[Row] = []
    stood_in: list[str] = []
    if args.mirage_repo is None:
        rows.append(Row("a-e (Mirage)", None, "no --mirage-repo given"))
    else:
        official, stood_in = import_official(args.mirage_repo.resolve())
        with contextlib.redirect_stdout(sys.stderr):  # their pipeline prints shapes
            rows += mirage_rows(official, "Mirage", (0, 2))
    if args.spatia_repo is None:
        rows.append(Row("f (Spatia)", None, "no --spatia-repo given"))
    else:
        spatia, spatia_stood_in = import_spatia(args.spatia_repo.resolve())
        stood_in = sorted(set(stood_in) | set(spatia_stood_in))
        with contextlib.redirect_stdout(sys.stderr):  # their loaders print
            rows += spatia_rows(spatia)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print(table(rows, stood_in))
    return 0


if __name__ == "__main__":
    sys.exit(main())
