"""``mirage batch``: render many scenes, one job per scene, surviving preemption and time limits.

Every scene gets its own run directory ``OUT_ROOT/<spec stem>`` (duplicate stems are told apart by
their parent directories: ``room-scene``, ``hall-scene``) and is rendered by a ``SceneTask``
(``mirage_cli.batch.scene_task``): ``mirage render`` in a child process, re-run or requeued after a stop
until it is done, with its exit code turned into a ``SceneResult``.

Three ways to run the jobs, one code path (``SceneTask``):

- ``executor="local"``: submitit's ``LocalExecutor`` on this machine, at most
  ``array_parallelism`` scenes at a time (default 1). With ``time_min`` set, submitit sends the
  preemption signal ``signal_delay_s`` before the limit, the task makes the child checkpoint and
  submitit requeues the task (``SceneTask.checkpoint``), which resumes. Exactly what SLURM does.
- ``executor="slurm"``: submitit's ``SlurmExecutor``, one array task per scene
  (``executor.batch()``), ``--signal=USR1@signal_delay_s``, ``--requeue``. On the warning signal
  (time limit, or preemption where the cluster sends user signals) the child checkpoints, then
  submitit calls ``SceneTask.checkpoint`` and requeues the task; the requeued task resumes.
- ``shard=(i, n)`` (``--shard I/N`` or ``--shard auto``): the i-th of n shares of the scenes,
  sequentially in this process, for plain ``sbatch --array`` scripts
  (``examples/slurm/render_array.sbatch``). A stop signal makes the running child checkpoint; the
  batch then exits 75 and the script requeues itself.

The preemption signal is SIGUSR1 throughout (``SUBMITIT_PREEMPT_SIGNAL=USR1``): it is the signal
``mirage render`` treats as "checkpoint and exit 75", so a child that receives it directly from
SLURM behaves exactly like one that gets it forwarded.

Before any job is submitted, every spec this batch renders is checked as ``mirage validate`` checks it,
with the render's settings (``check_spec``, ``mirage_cli.batch.check``): a bad spec is refused with
its problems and nothing is submitted (exit 2), unless ``skip_invalid`` renders the valid ones and
reports the others as "invalid". GPUs per job are checked against what the executor can give: the
GPUs this machine shows for the local executor, at most ``MAX_GPUS_PER_JOB`` on a SLURM node.

Batch exit code: 0 when every scene is done, 75 when some scene was interrupted by a signal
(checkpoint saved: run the same command again, or let the script requeue), else 1 (a skipped
invalid scene too).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirage_cli.base.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, InputError, Problem
from mirage_cli.base.files import file_problem
from mirage_cli.base.limits import MAX_SPEC_BYTES
from mirage_cli.base.signals import GracefulStop
from mirage_cli.batch.scene_task import PREEMPT_SIGNAL, Scene, SceneResult, SceneTask, render_command
from mirage_cli.report.format import fmt_seconds

log = logging.getLogger(__name__)

LOCAL_TIME_MIN = 7 * 24 * 60  # "no limit" for the local executor
SLURM_TIME_MIN = 4 * 60
MAX_GPUS_PER_JOB = 64
"""GPUs one SLURM job may ask for on its node: more than any node holds (8 is usual, 16 the most)."""
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


# --- scenes and shards ------------------------------------------------------------------------------


def plan_scenes(specs: Sequence[str | os.PathLike], out_root: str | os.PathLike) -> list[Scene]:
    """One ``Scene`` per spec, in the given order, with unique run directories under ``out_root``.

    The run directory is named after the spec's stem; specs sharing a stem are told apart by as
    many parent directory names as needed (``examples/room/scene.yaml`` -> ``room-scene``). The
    name depends only on the set of paths, not their order, so every shard computes the same plan.

    Raises:
        InputError: a spec is missing or not a readable regular file (a FIFO, a device, too large), the
            same file is given twice, or no spec at all.
    """
    if not specs:
        raise InputError(Problem(file=None, field="SPEC", message="give at least one scene spec"))
    problems = []
    paths = []
    for s in specs:
        try:
            p = Path(s).expanduser().resolve()
        except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL byte in the name
            problems.append(Problem(file=str(s), field=None, message=f"cannot be used as a scene spec: {e}"))
            continue
        why = file_problem(p, MAX_SPEC_BYTES)
        if why is not None:
            problems.append(Problem(file=str(s), field=None, message="scene spec not found" if why == "file not found" else why))
        paths.append(p)
    seen: dict[Path, str] = {}
    for s, p in zip(specs, paths):
        if p in seen:
            problems.append(Problem(file=str(s), field=None, message=f"given twice (also as {seen[p]})"))
        seen.setdefault(p, str(s))
    if problems:
        raise InputError(problems)
    out_root = Path(out_root).expanduser().resolve()
    names = _unique_names(paths)
    return [Scene(name=names[p], spec=p, run_dir=out_root / names[p]) for p in paths]


def _unique_names(paths: list[Path]) -> dict[Path, str]:
    def name_at(p: Path, depth: int) -> str:
        parts = list(p.parent.parts[1:])[-depth:] if depth else []
        return _NAME_BAD.sub("_", "-".join([*parts, p.stem])).strip("._") or "scene"

    names = {p: name_at(p, 0) for p in paths}
    for depth in range(1, 64):
        clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
        if not clashes:
            return names
        for p in paths:
            if names[p] in clashes:
                names[p] = name_at(p, depth)
    raise InputError(Problem(file=None, field="SPEC", message="cannot give the specs distinct run directory names"))


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) or ``"auto"`` -> (I, N).

    ``auto`` reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MIN, so
    ``--array=1-8`` works too). Raises InputError (exit 2) with the reason otherwise.
    """
    env = os.environ if env is None else env
    if text.strip().lower() == "auto":
        missing = [k for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT") if not env.get(k)]
        if missing:
            raise InputError(
                Problem(
                    file=None,
                    field="--shard",
                    message=f"'auto' needs {' and '.join(missing)} from SLURM; run it inside an `sbatch --array` "
                    "job, or give the share as I/N",
                )
            )
        try:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        except ValueError:
            raise InputError(Problem(file=None, field="--shard", message="SLURM_ARRAY_TASK_* are not integers")) from None
        source = "from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_MIN/SLURM_ARRAY_TASK_COUNT"
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise InputError(Problem(file=None, field="--shard", message=f"expected I/N or auto, got {text!r}"))
        index, count = int(m.group(1)), int(m.group(2))
        source = f"in {text!r}"
    if count < 1 or not 0 <= index < count:
        raise InputError(
            Problem(file=None, field="--shard", message=f"share {index} of {count} {source} is out of range (0 <= I < N)")
        )
    return index, count


def select_shard(scenes: Sequence[Scene], index: int, count: int) -> list[Scene]:
    """Scenes index, index+count, index+2*count, ... (round robin keeps shares balanced)."""
    return list(scenes[index::count])


# --- results ----------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    scenes: list[SceneResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for s in self.scenes if s.status == status)

    @property
    def exit_code(self) -> int:
        if all(s.status in ("done", "resumed") for s in self.scenes):
            return EXIT_OK
        if any(s.status in ("interrupted", "running") for s in self.scenes):
            return EXIT_INTERRUPTED
        return EXIT_FAILURE

    def to_dict(self) -> dict:
        statuses = ("done", "resumed", "interrupted", "failed", "running", "invalid")
        return {
            "scenes": [s.to_dict() for s in self.scenes],
            "counts": {k: self.count(k) for k in statuses},
            "exit_code": self.exit_code,
        }


def summary_table(summary: BatchSummary):
    """A Rich table of the summary (the CLI prints it on stderr)."""
    from rich.table import Table

    colors = {"done": "green", "resumed": "green", "interrupted": "yellow", "failed": "red", "running": "yellow", "invalid": "red"}
    table = Table(title="mirage batch", show_lines=False)
    for col in ("scene", "status", "time", "attempts", "run directory", "reason"):
        table.add_column(col, overflow="fold", justify="right" if col == "time" else "left")
    for s in summary.scenes:
        color = colors.get(s.status, "white")
        time_text = fmt_seconds(s.wall_seconds) if s.wall_seconds else "-"
        table.add_row(s.name, f"[{color}]{s.status}[/{color}]", time_text, str(s.attempts), s.run_dir, s.reason)
    return table


def scene_outcome(result: SceneResult) -> str:
    """One line for the end of a scene: "scene kitchen: done in 42.1 s" (and why, when it did not finish)."""
    line = f"scene {result.name}: {result.status} in {fmt_seconds(result.wall_seconds)}"
    return line + (f" ({result.reason})" if result.reason else "")


PROGRESS_LINE = re.compile(r"^(chunk \d+/\d+ done|resuming at chunk|error:|warning:|rebuilding)")
"""The lines of a render's output (a scene's log) that a batch repeats as the scene's progress."""


class LogFollower:
    """The new progress lines (``PROGRESS_LINE``) of a scene's log since the last look; it starts at
    the log's end, since a log keeps every earlier batch's attempts."""

    def __init__(self, path: Path | None):
        self.path = path
        self.offset = 0
        self.partial = ""
        if path is not None:
            try:
                self.offset = path.stat().st_size
            except OSError:
                self.offset = 0

    def new_lines(self) -> list[str]:
        if self.path is None:
            return []
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                text = f.read(1 << 20)
                self.offset = f.tell()
        except OSError:
            return []
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        return [line.strip() for line in lines if PROGRESS_LINE.match(line.strip())]


# --- the batch --------------------------------------------------------------------------------------


@dataclass
class BatchOptions:
    """Everything ``run_batch`` needs besides the specs (CLI flags of ``mirage batch``)."""

    out_root: Path
    executor: str = "local"  # "local" | "slurm"
    partition: str | None = None
    gpus_per_job: int | None = None  # None: local, one per job where there are GPUs (else CPU); slurm, 1
    time_min: float | None = None
    array_parallelism: int | None = None
    shard: str | None = None
    extra_args: list[str] = field(default_factory=list)
    signal_delay_s: int = 120
    max_attempts: int = 3
    max_requeues: int = 20
    command: list[str] | None = None  # child argv template (tests); default: mirage render
    poll_s: float = 0.2
    skip_invalid: bool = False  # render the valid specs when some are refused (else nothing is submitted)


def run_batch(specs: Sequence[str | os.PathLike], options: BatchOptions,
              on_start: Callable[[str], None] | None = None,
              check_spec: Callable[[Path], list[Problem]] | None = None) -> BatchSummary:
    """Render every spec; returns the summary (its ``exit_code`` is the batch's exit code).

    ``on_start`` gets one progress line per submitted job / started scene, and the lines saying which
    specs were refused or skipped (the CLI prints them). ``check_spec(spec)`` lists the problems a
    spec's render would be refused for (``mirage_cli.batch.check.spec_problems`` with the render's
    settings); every spec this batch renders is checked before anything is submitted (None: not
    checked, e.g. a test's injected child command that reads other files).

    Raises:
        InputError: bad specs (``check_spec``; unless ``options.skip_invalid`` and some are valid),
            bad ``--shard``, bad executor or options, GPUs the executor cannot give, no SLURM for ``slurm``.
    """
    check_options(options)
    scenes = plan_scenes(specs, options.out_root)
    share = parse_shard(options.shard) if options.shard is not None else None
    if share is not None:
        scenes = select_shard(scenes, *share)
    slots = gpu_slots(local_gpus(), options.gpus_per_job) if options.executor == "local" and share is None else None
    if check_spec is None:
        return _run_scenes(scenes, options, share, slots, on_start)
    good, invalid = checked_scenes(scenes, check_spec, options.skip_invalid, on_start)
    rendered = iter(_run_scenes(good, options, share, slots, on_start).scenes)  # in the order of ``good``
    return BatchSummary([invalid[s.spec] if s.spec in invalid else next(rendered) for s in scenes])


def check_options(options: BatchOptions) -> None:
    """The batch's own options (not the specs), each refused by its flag (exit 2)."""
    if options.executor not in ("local", "slurm"):
        raise InputError(Problem(file=None, field="--executor", message=f"expected local or slurm, got {options.executor!r}"))
    if options.shard is not None and options.executor == "slurm":
        raise InputError(
            Problem(file=None, field="--shard", message="--shard renders its share in this process (inside your own "
                    "`sbatch --array` job); it cannot be combined with --executor slurm")
        )
    if options.time_min is not None and options.time_min <= 0:
        raise InputError(Problem(file=None, field="--time-min", message="must be > 0"))
    if options.array_parallelism is not None and options.array_parallelism < 1:
        raise InputError(Problem(file=None, field="--array-parallelism", message="must be >= 1"))
    gpus = options.gpus_per_job
    if gpus is not None and options.shard is not None:
        raise InputError(Problem(file=None, field="--gpus-per-job", message="--shard renders in this process with the GPUs "
                                 "its job was given (CUDA_VISIBLE_DEVICES): ask your `sbatch` for them and leave --gpus-per-job out"))
    if gpus is not None and gpus < 0:
        raise InputError(Problem(file=None, field="--gpus-per-job", message=f"must be >= 0 (0: CPU jobs), got {gpus}"))
    if gpus is not None and options.executor == "slurm" and gpus > MAX_GPUS_PER_JOB:
        raise InputError(Problem(file=None, field="--gpus-per-job", message=f"asks each SLURM job for {gpus} GPUs on one node; "
                                 f"no node has more than {MAX_GPUS_PER_JOB} (ask for what your partition's nodes hold, "
                                 "usually 1 to 8)"))


def checked_scenes(scenes: list[Scene], check_spec: Callable[[Path], list[Problem]], skip_invalid: bool,
                   on_start: Callable[[str], None] | None) -> tuple[list[Scene], dict[Path, SceneResult]]:
    """The scenes whose spec passes ``check_spec``, and a result ("invalid") for each of the others.

    Raises:
        InputError: every problem of the refused specs, when ``skip_invalid`` is off or no spec is valid
            (nothing is submitted then; a line through ``on_start`` says how to go on with the valid ones).
    """
    good, problems, invalid = [], [], {}
    for scene in scenes:
        found = check_spec(scene.spec)
        if not found:
            good.append(scene)
            continue
        problems += found
        invalid[scene.spec] = SceneResult(name=scene.name, spec=str(scene.spec), run_dir=str(scene.run_dir), status="invalid",
                                          reason=f"refused before submission: {found[0]}")
    if not invalid:
        return good, {}
    if skip_invalid and good:
        for result in invalid.values():
            if on_start:
                on_start(f"scene {result.name}: skipped, {result.reason}")
        return good, invalid
    if on_start:
        way_out = (f"fix them, or add --skip-invalid to render the {len(good)} valid one(s)" if good
                   else "fix them (no spec is valid)")
        on_start(f"batch: {len(invalid)} of {len(scenes)} specs would be refused by `mirage render` (listed below); "
                 f"nothing was submitted: {way_out}")
    raise InputError(problems)


def _run_scenes(scenes: list[Scene], options: BatchOptions, share: tuple[int, int] | None,
                slots: list[str | None] | None, on_start) -> BatchSummary:
    """Render the checked ``scenes`` here (a share), on the local executor or on SLURM."""
    command = options.command if options.command is not None else render_command(options.extra_args)
    log_dir = Path(options.out_root).expanduser().resolve() / "logs"

    def task(scene: Scene) -> SceneTask:
        grace = max(1.0, options.signal_delay_s - 10.0)
        return SceneTask(scene, command, max_attempts=options.max_attempts, grace_s=grace, log_dir=log_dir)

    if share is not None:
        return _run_here([task(s) for s in scenes], on_start)
    _use_preempt_signal()
    if options.executor == "local":
        return _run_local([task(s) for s in scenes], options, slots, on_start)
    return _run_slurm([task(s) for s in scenes], options, on_start)


def _use_preempt_signal() -> None:
    """Make submitit (in this process and in its jobs) use SIGUSR1 as the preemption signal."""
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = PREEMPT_SIGNAL
    if "submitit" in sys.modules:  # imported before we set the variable: it read USR2 already
        import submitit

        submitit.JobEnvironment.USR_SIG = PREEMPT_SIGNAL


def _run_here(tasks: list[SceneTask], on_start: Callable[[str], None] | None) -> BatchSummary:
    summary = BatchSummary()
    with GracefulStop() as stop:
        for i, t in enumerate(tasks):
            if on_start:
                on_start(f"scene {t.scene.name} ({i + 1}/{len(tasks)}): rendering into {t.scene.run_dir}")
            summary.scenes.append(t.run(stop))
            if on_start:
                on_start(scene_outcome(summary.scenes[-1]))
    return summary


def local_gpus(environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs a local batch hands out: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set
    (indices, UUIDs or MIG ids, kept as written), else the ``count`` devices CUDA reports."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    if count is None:
        import torch

        count = torch.cuda.device_count()
    return [str(i) for i in range(count)]


def gpu_slots(gpus: Sequence[str], per_job: int | None) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each job of a local batch that may run at once: disjoint groups of
    ``per_job`` of this machine's ``gpus``; ``[""]`` (CPU) for ``per_job`` 0. ``per_job`` None (not
    given): one GPU per job, or ``[None]`` (inherit: CPU jobs) when there is no GPU.

    Raises:
        InputError: a negative count, or more GPUs per job than this machine shows (none at all included).
    """
    if per_job is not None and per_job < 0:
        raise InputError(Problem(file=None, field="--gpus-per-job", message=f"must be >= 0 (0: CPU jobs), got {per_job}"))
    if per_job == 0:
        return [""]
    if not gpus:
        if per_job is None:
            return [None]
        raise InputError(Problem(file=None, field="--gpus-per-job", message=f"asks for {per_job} GPUs per job, but this "
                                 "machine shows none (CUDA_VISIBLE_DEVICES is empty or CUDA finds no GPU) for the local "
                                 "executor: leave it out or give 0 to render on the CPU, or use --executor slurm"))
    per_job = 1 if per_job is None else per_job
    if per_job > len(gpus):
        raise InputError(Problem(file=None, field="--gpus-per-job", message=f"asks for {per_job} GPUs per job, "
                                 f"but only {len(gpus)} are visible ({','.join(gpus)})"))
    return [",".join(gpus[i * per_job:(i + 1) * per_job]) for i in range(len(gpus) // per_job)]


def _run_local(tasks: list[SceneTask], options: BatchOptions, slots: list[str | None], on_start) -> BatchSummary:
    """submitit LocalExecutor: each job gets its own GPUs (``slots``, from ``gpu_slots``), so at most as
    many jobs run at once as there are GPU groups (and ``array_parallelism``, when given)."""
    import submitit

    folder = Path(options.out_root).expanduser().resolve() / ".submitit" / "%j"
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=options.max_requeues)
    time_min = options.time_min if options.time_min is not None else LOCAL_TIME_MIN
    delay = int(min(options.signal_delay_s, max(1, time_min * 60 / 2)))
    executor.update_parameters(timeout_min=time_min, signal_delay_s=delay)
    many = len(slots) > 1 or slots[0] not in (None, "")
    parallel = min(options.array_parallelism or len(slots), len(slots)) if many else options.array_parallelism or 1
    free = list(slots) * (1 if many else parallel)  # a CPU or inherited "slot" is shared by every job
    pending = list(tasks)
    running: list[tuple[SceneTask, Any]] = []
    finished: dict[int, SceneResult] = {}
    order = {id(t): i for i, t in enumerate(tasks)}
    follow: dict[int, LogFollower] = {}
    started: dict[int, float] = {}
    with GracefulStop() as stop:
        while pending or running:
            while pending and len(running) < parallel and not stop.requested:
                t = pending.pop(0)
                t.cuda_visible_devices = free.pop(0)
                follow[id(t)], started[id(t)] = LogFollower(t.log_path), time.monotonic()
                job = executor.submit(t)
                running.append((t, job))
                if on_start:
                    gpus = "" if t.cuda_visible_devices is None else f" (CUDA_VISIBLE_DEVICES={t.cuda_visible_devices!r})"
                    on_start(f"scene {t.scene.name} ({order[id(t)] + 1}/{len(tasks)}): local job {job.job_id}{gpus} "
                             f"-> {t.scene.run_dir}")
            if stop.requested and pending:
                for t in pending:
                    finished[order[id(t)]] = _not_started(t, stop)
                pending = []
            if stop.requested:
                for _, job in running:
                    _stop_local_job(job)
            still = []
            for t, job in running:
                for line in follow[id(t)].new_lines() if on_start else ():
                    on_start(f"scene {t.scene.name}: {line}")
                if job.done():
                    result = finished[order[id(t)]] = _job_result(t, job, stop)
                    result.wall_seconds = result.wall_seconds or round(time.monotonic() - started[id(t)], 3)
                    free.append(t.cuda_visible_devices)
                    if on_start:
                        on_start(scene_outcome(result))
                else:
                    still.append((t, job))
            running = still
            if running:
                time.sleep(options.poll_s)
    return BatchSummary([finished[i] for i in range(len(tasks))])


def _stop_local_job(job: Any) -> None:
    """Ask a local job to checkpoint: SIGTERM to its submitit controller, which forwards it to the task."""
    if getattr(job, "_mirage_stop_sent", False):
        return
    process = getattr(job, "_process", None)  # submitit.local.LocalJob keeps its controller here
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
    job._mirage_stop_sent = True


def _not_started(t: SceneTask, stop: GracefulStop) -> SceneResult:
    s = t.scene
    return SceneResult(name=s.name, spec=str(s.spec), run_dir=str(s.run_dir), status="interrupted",
                       reason=f"stopped by {stop.signal_name} before it started; run again to render it")


def _job_result(t: SceneTask, job: Any, stop: GracefulStop | None) -> SceneResult:
    s = t.scene
    try:
        result = job.result()
        result.job_id = str(job.job_id)
        return result
    except Exception as e:  # submitit raises FailedJobError / UncompletedJobError with the job's traceback
        text = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = text[-1] if text else type(e).__name__
        status = "failed"
        if stop is not None and stop.requested:
            status, reason = "interrupted", f"stopped by {stop.signal_name}; run again to resume ({reason})"
        return SceneResult(name=s.name, spec=str(s.spec), run_dir=str(s.run_dir), status=status, reason=reason,
                           job_id=str(job.job_id))


def slurm_parameters(options: BatchOptions) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` arguments for a batch (pure; tested without SLURM)."""
    time_min = options.time_min if options.time_min is not None else SLURM_TIME_MIN
    params: dict[str, Any] = {
        "job_name": "mirage",
        "time": int(max(1, round(time_min))),
        "gpus_per_node": 1 if options.gpus_per_job is None else options.gpus_per_job,
        "ntasks_per_node": 1,
        "signal_delay_s": options.signal_delay_s,
        "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"],
        "additional_parameters": {"requeue": True, "signal": f"{PREEMPT_SIGNAL}@{options.signal_delay_s}"},
    }
    if options.partition:
        params["partition"] = options.partition
    if options.array_parallelism:
        params["array_parallelism"] = options.array_parallelism
    return params


def _run_slurm(tasks: list[SceneTask], options: BatchOptions, on_start) -> BatchSummary:
    """submitit SlurmExecutor: one array job, one task per scene; waits and summarizes."""
    import submitit

    folder = Path(options.out_root).expanduser().resolve() / ".submitit" / "%j"
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
    except RuntimeError as e:
        raise InputError(Problem(file=None, field="--executor", message=f"slurm is not available here: {e}")) from None
    executor.update_parameters(**slurm_parameters(options))
    with executor.batch():
        jobs = [executor.submit(t) for t in tasks]
    if on_start:
        for t, job in zip(tasks, jobs):
            on_start(f"scene {t.scene.name}: slurm job {job.job_id} -> {t.scene.run_dir}")
    results: dict[int, SceneResult] = {}
    with GracefulStop() as stop:
        while len(results) < len(jobs) and not stop.requested:
            for i, (t, job) in enumerate(zip(tasks, jobs)):
                if i not in results and job.done():
                    results[i] = _job_result(t, job, None)
                    if on_start:
                        on_start(scene_outcome(results[i]))
            if len(results) < len(jobs):
                stop.wait(max(options.poll_s, 10.0))
    for i, (t, job) in enumerate(zip(tasks, jobs)):
        if i not in results:
            s = t.scene
            results[i] = SceneResult(name=s.name, spec=str(s.spec), run_dir=str(s.run_dir), status="running",
                                     reason=f"still running as slurm job {job.job_id} (stopped waiting)",
                                     job_id=str(job.job_id))
    return BatchSummary([results[i] for i in range(len(tasks))])


def split_render_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``mirage batch``'s positional arguments into specs and extra ``mirage render`` arguments.

    The command line parser drops the ``--`` separator, so the extra arguments start at the first
    argument that begins with ``-`` (write a spec named like an option as ``./-name.yaml``).
    """
    for i, arg in enumerate(args):
        if arg.startswith("-"):
            return list(args[:i]), list(args[i:])
    return list(args), []
