"""Several processes on one render: diffusers' context parallelism under ``torchrun``.

    torchrun --nproc-per-node N -m mirage_cli render SCENE --parallel ulysses

Every rank loads the transformer and splits each denoising step's token sequence with the others
(diffusers' ``ContextParallelConfig``: Ulysses all-to-all over attention heads, or ring attention).
Only rank 0 (the *leader*) does everything else: it holds the run lock, reads and writes the run
directory, encodes the prompt, queries and updates the memory, decodes, estimates depth, writes
segments, checkpoints and the report. The other ranks (*followers*) never touch the run directory:
before each chunk's denoising loop the leader sends them the loop's inputs (noise, conditioning
latents, pin mask, prompt embeddings, generator state, a mid-chunk state when resuming), all ranks
run the loop in lockstep, and the leader keeps the result.

Stops: after every step all ranks all-reduce a stop flag (any rank's SIGTERM/SIGINT/SIGUSR1), so
they all stop after the same step; the leader saves the mid-chunk checkpoint and every rank exits
75. A stop that reaches the leader outside a loop is handled by its session as in a single-process
render, then the followers are told to end with the same exit code. The checkpoint holds nothing
rank-specific, so a run started on N processes resumes on M (or on one, without ``--parallel``).

Agreement: before any work, all ranks compare the run's fingerprint (the settings that change the
output) and output directory; ranks that disagree all exit 2 naming the difference.

Devices: on CUDA each rank uses ``cuda:LOCAL_RANK`` with NCCL and diffusers' ``enable_parallelism``.
On CPU (gloo) diffusers' own setup cannot run (it places rank r on accelerator ``r % count`` and
divides by zero without one), so the same configuration is applied with a CPU device mesh
(``_enable_on_cpu``); that path exists so the coordination and the split are tested on CPU-only
machines. Ring attention needs an attention backend that returns log-sum-exp (not ``native``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from mirage_cli.base.errors import InputError, Interrupted, Problem
from mirage_cli.denoise.loop import DenoiseState, denoise_chunk
from mirage_cli.render.config import RunSettings
from mirage_cli.render.prepare import estimate_intrinsics
from mirage_cli.render.session import load_backbone_for, render

KINDS = ("ulysses", "ring")
EXIT_CODES = {"done": 0, "failed": 1, "input": 2, "stopped": 75}


@dataclass
class Team:
    """This process's place in a parallel render: ``rank`` of ``world`` processes, ``kind`` of split,
    ``device`` (this rank's), and the device collectives run on (``collective_device``)."""

    rank: int
    world: int
    kind: str
    device: torch.device
    collective_device: torch.device

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def agree(self, what: str, value: str) -> None:
        """Every rank holds the same ``value`` of ``what``; else InputError (exit 2) on every rank."""
        import torch.distributed as dist

        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        differing = sorted({r for r, v in enumerate(values) if v != values[0]})
        if differing:
            raise InputError(Problem(file=None, field="--parallel", message=(
                f"the ranks disagree about the {what}: rank 0 has {values[0]!r}, rank {differing[0]} has "
                f"{values[differing[0]]!r}; start every rank with the same command, spec and files")))

    def any_stop(self, local: bool) -> bool:
        """True on every rank when any rank asks to stop (all-reduce, MAX)."""
        import torch.distributed as dist

        flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=self.collective_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def send(self, message: dict) -> None:
        """The leader's message to every follower (pickled by torch.distributed)."""
        import torch.distributed as dist

        dist.broadcast_object_list([message], src=0, device=self.collective_device)

    def receive(self) -> dict:
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, src=0, device=self.collective_device)
        return box[0]


def requested_world() -> int | None:
    """WORLD_SIZE as torchrun sets it, or None outside torchrun."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value and value.isdigit() else None


def join(kind: str, device: str) -> Team:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); InputError (exit 2) outside torchrun or for a bad choice."""
    import torch.distributed as dist

    if kind not in KINDS:
        raise InputError(f"must be one of {', '.join(KINDS)}, got {kind!r}", field="--parallel")
    if requested_world() is None or "RANK" not in os.environ:
        raise InputError("needs torchrun: `torchrun --nproc-per-node N -m mirage_cli render SCENE --parallel "
                         f"{kind}` (RANK and WORLD_SIZE are not set)", field="--parallel")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"rank with LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible)", field="--parallel")
        torch.cuda.set_device(local_rank)
        mine = torch.device("cuda", local_rank)
    else:
        mine = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wants_cuda else "gloo", device_id=mine if wants_cuda else None)
    return Team(rank=dist.get_rank(), world=dist.get_world_size(), kind=kind, device=mine, collective_device=mine)


def leave() -> None:
    """Leave the process group once every rank is here: a rank that destroyed its group while another
    still finished its last exchange aborted that one at exit ("terminate called without an active
    exception", a follower, now and then on the CPU)."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - a rank that is gone already: leave anyway
            pass
        dist.destroy_process_group()


def check_split(team: Team, tokens: int, heads: int, backend: str | None) -> None:
    """The sequence and the heads split evenly over the ranks, and the backend can do ``kind``."""
    if team.kind == "ulysses" and heads % team.world:
        raise InputError(f"ulysses splits the {heads} attention heads over the ranks: use a number of processes that divides "
                         f"{heads}", field="--parallel")
    if tokens % team.world:
        raise InputError(f"the {tokens} tokens of a chunk do not split over {team.world} processes: use a number of processes "
                         f"that divides {tokens}", field="--parallel")
    if team.kind == "ring" and backend in (None, "native"):
        raise InputError("ring attention needs an attention backend that returns log-sum-exp (e.g. --attention-backend flash "
                         "on CUDA); the native backend cannot: use --parallel ulysses", field="--parallel")


def enable(transformer, team: Team) -> None:
    """Split the transformer's sequence over the team with diffusers' context parallelism."""
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=team.world) if team.kind == "ulysses" else ContextParallelConfig(ring_degree=team.world)
    if team.device.type == "cuda":
        transformer.enable_parallelism(config=config)
    else:
        _enable_on_cpu(transformer, config, team)


def _enable_on_cpu(transformer, cp_config, team: Team) -> None:
    """``enable_parallelism``'s steps with a CPU device mesh (see the module docstring)."""
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    config = ParallelConfig(context_parallel_config=cp_config)
    mesh = init_device_mesh("cpu", mesh_shape=cp_config.mesh_shape, mesh_dim_names=cp_config.mesh_dim_names)
    config.setup(team.rank, team.world, torch.device("cpu"), mesh=mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(transformer, cp_config, transformer._cp_plan)


# --- the loop, on every rank ----------------------------------------------------------------------------

LOOP_INPUTS = ("noise", "cond_frame0", "pinned_latents", "pin_mask", "pin_mode", "pin_until", "prompt_embeds",
               "negative_prompt_embeds", "guidance", "steps", "shift", "start_step", "timesteps")


def lead_denoise(team: Team, denoise_chunk):
    """``denoise_chunk`` for the leader: the inputs go to the followers first, and the stop decision
    after each step is the team's (``any_stop``)."""

    def run(backbone, *, generator, resume_state=None, on_step=None, profiler=None, **inputs):
        team.send({"kind": "denoise", "inputs": {k: _to_cpu(v) for k, v in inputs.items()},
                   "generator": {"device": str(generator.device), "seed_state": generator.get_state()},
                   "resume": None if resume_state is None else {k: v.cpu() for k, v in resume_state.to_tensors().items()}})

        def on_step_team(i, state):
            return team.any_stop(bool(on_step(i, state)) if on_step is not None else False)

        return denoise_chunk(backbone, generator=generator, resume_state=resume_state, on_step=on_step_team, profiler=profiler, **inputs)

    return run


def follow(team: Team, backbone, stop) -> int:
    """A follower's life: run every denoising loop the leader sends, until it says the render ended;
    returns the exit code the leader ended with."""
    while True:
        message = team.receive()
        if message["kind"] != "denoise":
            return EXIT_CODES[message["kind"]]
        inputs = {k: _to_device(v, team.device) for k, v in message["inputs"].items()}
        generator = torch.Generator(device="cpu" if message["generator"]["device"] == "cpu" else team.device)
        generator.set_state(message["generator"]["seed_state"])
        resume = None if message["resume"] is None else DenoiseState.from_tensors(message["resume"])
        denoise_chunk(backbone, generator=generator, resume_state=resume, on_step=lambda i, s: team.any_stop(stop.requested), **inputs)


def parallel_render(plan, options, events, stop):
    """``mirage render --parallel KIND`` on this rank: the leader's ``RenderResult``, or a follower's
    exit code (an int)."""
    plan = estimate_intrinsics(plan)  # the settings are computed here, from the camera path the render uses
    team = join(options.parallel, options.backbone.device)
    try:
        if plan.conditioning.method != "pin" or plan.step_cache.enabled:
            raise InputError("runs with conditioning.method pin and no step cache (the VACE branch and the caches' skip "
                             "decisions are not split over ranks yet)", field="--parallel")
        options = replace(options, backbone=replace(options.backbone, device=str(team.device)).resolved())
        settings = RunSettings.of(plan, options)  # computed once: the render goes on with it
        team.agree("settings (the run fingerprint)", settings.fingerprint)
        team.agree("output directory", str((options.out or plan.output).expanduser().resolve()))
        backbone = load_backbone_for(plan, options.backbone)
        _check_plan_split(team, plan, backbone, options.backbone.attention_backend)
        enable(backbone.transformer, team)
        if not team.is_leader:
            with stop.deferred():  # a stop only sets the flag: the team decides together after the step
                return follow(team, backbone, stop)
        outcome = "failed"
        try:
            # the chunk files are written behind the next chunk's denoising, as in one process: the aborts at exit
            # once seen with the writer thread beside gloo have not come back since the ranks leave together (leave())
            result = render(plan, options, events, stop=stop, backbone=backbone, denoise=lead_denoise(team, denoise_chunk),
                            settings=settings)
            outcome = "done"
            return result
        except Interrupted:
            outcome = "stopped"
            raise
        except InputError:
            outcome = "input"
            raise
        finally:
            finish(team, outcome)
    finally:
        leave()


def _check_plan_split(team: Team, plan, backbone, attention_backend: str | None) -> None:
    h, w = plan.height // backbone.spatial_scale, plan.width // backbone.spatial_scale
    heads = int(backbone.transformer.config.num_attention_heads)
    for chunk in plan.chunks:
        check_split(team, chunk.num_latent_frames * (h // 2) * (w // 2), heads, attention_backend)


def finish(team: Team, outcome: str) -> None:
    """The leader tells the followers how the render ended (``EXIT_CODES``)."""
    team.send({"kind": outcome})


def _to_cpu(value):
    return value.cpu() if isinstance(value, torch.Tensor) else value


def _to_device(value, device: torch.device):
    return value.to(device) if isinstance(value, torch.Tensor) else value
