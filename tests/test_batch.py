"""mirage batch: scene planning, shards, the child/requeue cycle with real processes and signals.

The render command does not exist in these tests: the batch machinery runs an injected child, a
tiny Python script whose behaviour the spec file names (``ok``, ``once75``, ``fail``,
``wait_signal``). It records every run in RUN_DIR/runs.txt, "checkpoints" by writing
RUN_DIR/state.txt plus a checkpoint manifest in RUN_DIR/state/, and exits 75 like `mirage render` does on a stop signal.

submitit's LocalExecutor is real (it runs the requeue cycle on this machine). SLURM is mocked only
where it cannot exist here: fake `srun`/`scontrol`/`mirage` executables on PATH for the sbatch
content and the example script, and SLURM_ARRAY_* variables for `--shard auto`.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirage_cli.base.errors import InputError
from mirage_cli.base.signals import GracefulStop
from mirage_cli.batch.run import (
    BatchOptions,
    Scene,
    SceneTask,
    gpu_slots,
    local_gpus,
    parse_shard,
    plan_scenes,
    run_batch,
    select_shard,
    slurm_parameters,
    split_render_args,
)
from mirage_cli.cli.main import app

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, signal, sys, time
from pathlib import Path
spec, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
mode = spec.read_text().strip()
run_dir.mkdir(parents=True, exist_ok=True)
state = run_dir / "state.txt"

def checkpoint(what):
    # what `mirage render` leaves behind: a checkpoint manifest in state/ (no tensors needed here)
    state.write_text(what)
    ckpt = run_dir / "state" / "ckpt-000001"
    ckpt.mkdir(parents=True, exist_ok=True)
    files = {"rollout.safetensors": {"sha256": "0" * 64, "size": 0}}
    meta = {"spec_fingerprint": "f", "chunk": 1, "num_chunks": 2, "frames_written": 9, "done": False}
    (ckpt / "manifest.json").write_text(json.dumps({"format": "mirage-checkpoint", "format_version": 1,
                                                    "spec_fingerprint": "f", "files": files, "meta": meta}))
with open(run_dir / "runs.txt", "a") as f:
    f.write(f"{mode} resumed={state.exists()} args={sys.argv[3:]}\n")
print(f"child {mode} in {run_dir.name}", flush=True)
if mode == "gpus":  # which GPUs this job saw, and when it held them
    t0 = time.time()
    time.sleep(1.0)
    (run_dir / "gpus.txt").write_text(f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r} {t0} {time.time()}")
    sys.exit(0)
if mode == "ok" or state.exists():
    (run_dir / "video.mp4").write_text("done")
    sys.exit(0)
if mode == "once75":
    checkpoint("checkpoint")
    print("error: stopped, checkpoint saved", file=sys.stderr, flush=True)
    sys.exit(75)
if mode == "fail":
    print("error: scene.yaml:3: seed: must be an integer", file=sys.stderr, flush=True)
    print("a last line that is not the error", file=sys.stderr, flush=True)
    sys.exit(2)
if mode == "wait_signal":
    def stop(signum, frame):
        checkpoint(signal.Signals(signum).name)
        sys.exit(75)
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(s, stop)
    (run_dir / "started").write_text("1")
    time.sleep(60)
    print("error: no signal came", file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture()
def child(tmp_path) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return ["{python}", str(script), "{spec}", "{run_dir}"]


def _spec(tmp_path: Path, name: str, mode: str) -> Path:
    path = tmp_path / "specs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mode)
    return path


# --- planning -------------------------------------------------------------------------------------


def test_plan_scenes_disambiguates_stems_independent_of_order(tmp_path):
    a = tmp_path / "room" / "scene.yaml"
    b = tmp_path / "hall" / "scene.yaml"
    c = tmp_path / "x" / "other.yaml"
    for p in (a, b, c):
        p.parent.mkdir(parents=True)
        p.write_text("ok")
    scenes = plan_scenes([a, b, c], tmp_path / "out")
    assert [s.name for s in scenes] == ["room-scene", "hall-scene", "other"]
    assert scenes[0].run_dir == (tmp_path / "out" / "room-scene").resolve()
    assert [s.name for s in plan_scenes([c, b, a], tmp_path / "out")] == ["other", "hall-scene", "room-scene"]


def test_plan_scenes_reports_missing_and_repeated_specs(tmp_path):
    a = _spec(tmp_path, "a.yaml", "ok")
    with pytest.raises(InputError) as info:
        plan_scenes([a, tmp_path / "nope.yaml", str(a)], tmp_path / "out")
    lines = [str(p) for p in info.value.problems]
    assert lines == [f"{tmp_path / 'nope.yaml'}: scene spec not found", f"{a}: given twice (also as {a})"]


def test_parse_shard_forms_and_errors():
    assert parse_shard("1/3", env={}) == (1, 3)
    assert parse_shard("auto", env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)
    # --array=1-4 numbers tasks from 1: the share is counted from SLURM_ARRAY_TASK_MIN
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard("auto", env=env) == (3, 4)
    with pytest.raises(InputError, match="'auto' needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT"):
        parse_shard("auto", env={})
    with pytest.raises(InputError, match="out of range"):
        parse_shard("3/3", env={})
    with pytest.raises(InputError, match="expected I/N or auto"):
        parse_shard("half", env={})


def test_select_shard_round_robin_covers_everything_once(tmp_path):
    scenes = [Scene(name=str(i), spec=Path(f"/{i}"), run_dir=Path(f"/o/{i}")) for i in range(7)]
    shares = [select_shard(scenes, i, 3) for i in range(3)]
    assert [len(s) for s in shares] == [3, 2, 2]
    assert sorted(s.name for share in shares for s in share) == sorted(s.name for s in scenes)


def test_split_render_args():
    assert split_render_args(["a.yaml", "b.yaml", "--preset", "tiny", "--steps", "2"]) == (
        ["a.yaml", "b.yaml"], ["--preset", "tiny", "--steps", "2"])
    assert split_render_args(["a.yaml"]) == (["a.yaml"], [])


# --- one scene, in this process ---------------------------------------------------------------------


def test_exit_75_is_run_again_and_reported_resumed(tmp_path, child):
    options = BatchOptions(out_root=tmp_path / "out", shard="0/1", command=child)
    summary = run_batch([_spec(tmp_path, "a.yaml", "once75"), _spec(tmp_path, "b.yaml", "ok")], options)
    a, b = summary.scenes
    assert (a.status, a.attempts, b.status, b.attempts) == ("resumed", 2, "done", 1)
    runs = (tmp_path / "out" / "a" / "runs.txt").read_text().splitlines()
    assert runs == ["once75 resumed=False args=[]", "once75 resumed=True args=[]"]
    assert summary.exit_code == 0
    log = (tmp_path / "out" / "logs" / "a.log").read_text()
    assert "=== attempt 1" in log and "=== exit 75" in log and "=== exit 0" in log


def test_failure_reason_is_the_childs_last_error_line(tmp_path, child):
    options = BatchOptions(out_root=tmp_path / "out", shard="0/1", command=child)
    summary = run_batch([_spec(tmp_path, "bad.yaml", "fail"), _spec(tmp_path, "good.yaml", "ok")], options)
    bad, good = summary.scenes
    assert bad.status == "failed" and bad.exit_code == 2 and bad.attempts == 1
    assert bad.reason == "error: scene.yaml:3: seed: must be an integer"
    assert good.status == "done"
    assert summary.exit_code == 1
    assert summary.to_dict()["counts"] == {"done": 1, "resumed": 0, "interrupted": 0, "failed": 1, "running": 0, "invalid": 0}


def test_retry_limit_for_a_child_that_always_stops(tmp_path):
    script = tmp_path / "always75.py"
    script.write_text("import sys; print('error: interrupted again', file=sys.stderr); sys.exit(75)")
    scene = plan_scenes([_spec(tmp_path, "a.yaml", "x")], tmp_path / "out")[0]
    with GracefulStop() as stop:
        result = SceneTask(scene, ["{python}", str(script)], max_attempts=3).run(stop)
    assert result.status == "failed" and result.attempts == 3
    assert result.reason == "stopped 3 times in a row (last exit 75); error: interrupted again"


def _signal_when_started(run_dir: Path, sig: int) -> threading.Thread:
    def fire():
        for _ in range(600):
            if (run_dir / "started").exists():
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.01)

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT])
def test_stop_signal_is_forwarded_child_checkpoints_and_batch_exits_75(tmp_path, child, sig):
    specs = [_spec(tmp_path, "a.yaml", "wait_signal"), _spec(tmp_path, "b.yaml", "ok")]
    options = BatchOptions(out_root=tmp_path / "out", shard="0/1", command=child)
    run_a = tmp_path / "out" / "a"
    _signal_when_started(run_a, sig)
    summary = run_batch(specs, options)
    a, b = summary.scenes
    forwarded = "SIGTERM" if sig == signal.SIGINT else signal.Signals(sig).name
    assert (run_a / "state.txt").read_text() == forwarded
    assert a.status == "interrupted" and a.exit_code == 75
    assert a.reason == f"stopped by {signal.Signals(sig).name} (checkpoint saved); run again to resume"
    assert b.status == "interrupted" and "before it started" in b.reason
    assert summary.exit_code == 75
    # the same batch again resumes the interrupted scene and renders the other one
    summary = run_batch(specs, options)
    assert [s.status for s in summary.scenes] == ["resumed", "done"] and summary.exit_code == 0


# --- submitit LocalExecutor ---------------------------------------------------------------------------


def test_local_executor_two_scenes(tmp_path, child):
    options = BatchOptions(out_root=tmp_path / "out", executor="local", array_parallelism=2, command=child)
    summary = run_batch([_spec(tmp_path, "a.yaml", "once75"), _spec(tmp_path, "b.yaml", "ok")], options)
    assert [s.status for s in summary.scenes] == ["resumed", "done"], summary.to_dict()
    assert all(s.job_id for s in summary.scenes)
    assert summary.exit_code == 0
    assert (tmp_path / "out" / ".submitit").is_dir()


def test_gpu_slots_and_local_gpus():
    assert local_gpus({"CUDA_VISIBLE_DEVICES": "3, 5,GPU-8f2a,7"}) == ["3", "5", "GPU-8f2a", "7"]
    assert local_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert local_gpus({}, count=2) == ["0", "1"]
    assert gpu_slots(["3", "5", "6", "7", "9"], 2) == ["3,5", "6,7"]
    assert gpu_slots(["0"], 0) == [""] and gpu_slots([], None) == [None] and gpu_slots([], 0) == [""]
    assert gpu_slots(["3", "5"], None) == ["3", "5"]  # not given: one GPU per job
    with pytest.raises(InputError, match="asks for 4 GPUs per job, but only 2 are visible"):
        gpu_slots(["0", "1"], 4)
    with pytest.raises(InputError, match="asks for 1 GPUs per job, but this machine shows none"):
        gpu_slots([], 1)  # no GPU here: a count that is asked for is refused, never run on the CPU instead
    with pytest.raises(InputError, match="must be >= 0"):
        gpu_slots(["0"], -1)


def test_local_jobs_each_get_their_own_gpus(tmp_path, child, monkeypatch):
    """No GPU here: a fake device list in CUDA_VISIBLE_DEVICES (what the batch hands out is the text
    of that variable; no CUDA call is made when it is set). Four scenes, two GPUs per job, four GPUs:
    two jobs at a time, on disjoint GPUs, every job seeing exactly its own."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    specs = [_spec(tmp_path, f"s{i}.yaml", "gpus") for i in range(4)]
    options = BatchOptions(out_root=tmp_path / "out", executor="local", command=child, gpus_per_job=2)
    summary = run_batch(specs, options)
    assert summary.exit_code == 0, summary.to_dict()
    seen = []
    for i in range(4):
        gpus, start, end = (tmp_path / "out" / f"s{i}" / "gpus.txt").read_text().rsplit(" ", 2)
        seen.append((ast.literal_eval(gpus), float(start), float(end)))
    assert {g for g, _, _ in seen} == {"3,5", "6,7"}
    for a in seen:  # jobs that overlap in time hold different GPUs
        for b in seen:
            if a is not b and a[1] < b[2] and b[1] < a[2]:
                assert a[0] != b[0]


def test_local_executor_time_limit_requeues_and_resumes(tmp_path, child):
    """A 20 s time limit: submitit sends USR1 8 s before it, the task forwards it, the child saves its
    checkpoint and exits 75, SceneTask.checkpoint() hands submitit the task to requeue, submitit
    restarts it, and the child resumes. All real: submitit's LocalExecutor, signals, processes. (With
    5 s and 2 s, a child that took over 3 s to start on a machine running four jobs on two cores was
    killed before it could checkpoint: the limits leave room for a busy machine.)"""
    options = BatchOptions(out_root=tmp_path / "out", executor="local", command=child,
                           time_min=20 / 60, signal_delay_s=8)
    summary = run_batch([_spec(tmp_path, "long.yaml", "wait_signal")], options)
    (scene,) = summary.scenes
    assert scene.status == "resumed", summary.to_dict()
    # normally exactly one requeue; on a very slow machine the signal may come before the first
    # child started, which costs one more (harmless) requeue
    assert scene.requeues >= 1 and scene.attempts == scene.requeues + 1
    run = tmp_path / "out" / "long"
    assert (run / "state.txt").read_text() == "SIGUSR1"
    runs = (run / "runs.txt").read_text().splitlines()
    assert runs[0] == "wait_signal resumed=False args=[]" and runs[-1] == "wait_signal resumed=True args=[]"


def test_local_executor_stopped_by_signal_checkpoints_and_resumes(tmp_path, child):
    """SIGTERM to `mirage batch` itself: it asks the submitit controller to stop, which forwards
    SIGTERM to the task, which forwards it to the child; the child checkpoints and exits 75."""
    specs = [_spec(tmp_path, "a.yaml", "wait_signal")]
    options = BatchOptions(out_root=tmp_path / "out", executor="local", command=child)
    _signal_when_started(tmp_path / "out" / "a", signal.SIGTERM)
    summary = run_batch(specs, options)
    (a,) = summary.scenes
    assert a.status == "interrupted" and summary.exit_code == 75, summary.to_dict()
    assert (tmp_path / "out" / "a" / "state.txt").read_text() == "SIGTERM"
    summary = run_batch(specs, options)
    assert summary.scenes[0].status == "resumed" and summary.exit_code == 0


def test_cli_batch_bad_input_is_exit_2(tmp_path, monkeypatch):
    for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["batch", str(tmp_path / "missing.yaml"), "--out-root", str(tmp_path)])
    assert result.exit_code == 2 and "scene spec not found" in result.stderr
    spec = _spec(tmp_path, "a.yaml", "ok")
    result = runner.invoke(app, ["batch", str(spec), "--out-root", str(tmp_path), "--shard", "auto"])
    assert result.exit_code == 2 and "'auto' needs SLURM_ARRAY_TASK_ID" in result.stderr
    result = runner.invoke(app, ["batch", str(spec), "--out-root", str(tmp_path), "--executor", "pbs"])
    assert result.exit_code == 2 and "expected local or slurm" in result.stderr


# --- every spec checked before anything is submitted ------------------------------------------------------

RAN = ["{python}", "-c", "import pathlib, sys; d = pathlib.Path(sys.argv[2]); d.mkdir(parents=True); (d / 'ran').write_text('1')",
       "{spec}", "{run_dir}"]
"""A child that only records that it ran (the render itself is not what these tests are about)."""


def _small_specs(tmp_path: Path, **bad) -> tuple[Path, Path]:
    from render_helpers import write_small_scene

    return write_small_scene(tmp_path / "good"), write_small_scene(tmp_path / "bad", **bad)


def test_cli_batch_refuses_a_bad_spec_before_submitting_anything(tmp_path):
    good, bad = _small_specs(tmp_path, prompts=[{"frame": 5, "prompt": "a storm"}])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(good), str(bad), "--out-root", str(out), "--", "--preset", "tiny", "--steps", "1"])
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}:" in errors[0] and "prompts[0].frame: frame 5 does not start a chunk" in errors[0]
    assert "nothing was submitted: fix them, or add --skip-invalid to render the 1 valid one(s)" in result.stderr
    assert not out.exists()  # no job, no log, no submitit folder


def test_batch_checks_the_specs_with_the_render_arguments(tmp_path):
    """The arguments after `--` are the render's: they replace spec fields in the checks too (a spec with
    steps 0 is fine with --steps 2), and an argument the render would refuse stops the batch at once."""
    from mirage_cli.batch.check import spec_problems
    from mirage_cli.cli.main import render_flag_values, render_overrides

    good, zero_steps = _small_specs(tmp_path, steps=0)
    values = render_flag_values(["--preset", "tiny", "--steps", "2", "--memory", "none", "--cache", "taylorseer"])
    assert values["backbone"].preset == "tiny" and values["steps"] == 2
    overrides = render_overrides(**{k: values[k] for k in ("model", "steps", "guidance", "seed", "depth_model", "memory", "pin",
                                                           "pin_until", "conditioning", "vace", "lora", "lora_scale", "step_cache")})
    assert overrides["steps"] == 2 and overrides["memory.mode"] == "none" and overrides["step_cache.method"] == "taylorseer"
    assert spec_problems(zero_steps, overrides, values["backbone"]) == []
    assert [p.field for p in spec_problems(zero_steps, {}, values["backbone"])] == ["steps"]
    with pytest.raises(InputError, match="RENDER_ARGS: No such option: --stepz"):
        render_flag_values(["--stepz", "2"])
    with pytest.raises(InputError, match="RENDER_ARGS: No such option: --help"):
        render_flag_values(["--help"])


def test_skip_invalid_renders_the_valid_specs_and_reports_the_others(tmp_path):
    from mirage_cli.base.options import BackboneOptions
    from mirage_cli.batch.check import spec_problems

    good, bad = _small_specs(tmp_path, frames=10)
    out = tmp_path / "out"
    lines = []
    options = BatchOptions(out_root=out, executor="local", command=RAN, skip_invalid=True)
    summary = run_batch([bad, good], options, on_start=lines.append,
                        check_spec=lambda spec: spec_problems(spec, {}, BackboneOptions(preset="tiny")))
    assert [s.status for s in summary.scenes] == ["invalid", "done"], summary.to_dict()
    assert "frames: must be 4k+1" in summary.scenes[0].reason and summary.exit_code == 1
    assert summary.to_dict()["counts"]["invalid"] == 1
    assert (out / "good-scene" / "ran").is_file() and not (out / "bad-scene").exists()
    assert any(line.startswith("scene bad-scene: skipped, refused before submission:") for line in lines)
    # nothing valid: refused even with skip_invalid, nothing submitted
    with pytest.raises(InputError, match="frames: must be 4k\\+1"):
        run_batch([bad], BatchOptions(out_root=tmp_path / "out2", command=RAN, skip_invalid=True), on_start=lines.append,
                  check_spec=lambda spec: spec_problems(spec, {}, BackboneOptions(preset="tiny")))
    assert "fix them (no spec is valid)" in lines[-1] and not (tmp_path / "out2").exists()


def test_gpu_counts_the_executor_cannot_give_are_refused(tmp_path, monkeypatch):
    spec = _spec(tmp_path, "a.yaml", "ok")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a machine without GPUs
    with pytest.raises(InputError, match="asks for 2 GPUs per job, but this machine shows none"):
        run_batch([spec], BatchOptions(out_root=tmp_path / "out", command=RAN, gpus_per_job=2))
    summary = run_batch([spec], BatchOptions(out_root=tmp_path / "out", command=RAN))  # not given: CPU jobs
    assert summary.exit_code == 0 and (tmp_path / "out" / "a" / "ran").is_file()
    # SLURM nodes have GPUs the submitting machine does not: asked for, within what a node holds
    assert slurm_parameters(BatchOptions(out_root=tmp_path, executor="slurm", gpus_per_job=8))["gpus_per_node"] == 8
    assert slurm_parameters(BatchOptions(out_root=tmp_path, executor="slurm"))["gpus_per_node"] == 1
    with pytest.raises(InputError, match="no node has more than 64"):
        run_batch([spec], BatchOptions(out_root=tmp_path / "out", executor="slurm", gpus_per_job=100_000))
    with pytest.raises(InputError, match="--shard renders in this process"):
        run_batch([spec], BatchOptions(out_root=tmp_path / "out", shard="0/1", gpus_per_job=1))


def test_a_spec_that_is_not_a_regular_file_is_refused_by_name(tmp_path):
    fifo = tmp_path / "scene.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="is a named pipe \\(FIFO\\), expected a regular file"):
        plan_scenes([fifo], tmp_path / "out")


# --- SLURM (mocked where it cannot exist) -----------------------------------------------------------------


def _fake_bin(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_slurm_executor_sbatch_requeues_on_usr1(tmp_path, monkeypatch):
    """No SLURM here: a fake `srun` on PATH lets submitit build its sbatch file, which we read."""
    import submitit

    _fake_bin(tmp_path, "srun", "exit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    options = BatchOptions(out_root=tmp_path, executor="slurm", partition="gpu", time_min=90,
                           array_parallelism=4)
    params = slurm_parameters(options)
    executor = submitit.SlurmExecutor(folder=tmp_path / "logs")
    executor.update_parameters(**params)
    text = executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    assert "#SBATCH --signal=USR1@120" in text
    assert "#SBATCH --requeue" in text
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=90" in text
    assert "#SBATCH --gpus-per-node=1" in text
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in text


def test_example_sbatch_script_content():
    text = (REPO / "examples" / "slurm" / "render_array.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in text
    assert "#SBATCH --requeue" in text
    assert "--shard auto" in text
    subprocess.run(["bash", "-n", str(REPO / "examples" / "slurm" / "render_array.sbatch")], check=True)


def test_example_sbatch_script_forwards_usr1_and_requeues(tmp_path):
    """Runs the example script with bash; `mirage` and `scontrol` are fakes on PATH, SLURM's
    variables are set by hand, and the test plays SLURM by sending USR1 to the batch shell."""
    calls = tmp_path / "calls.txt"
    _fake_bin(tmp_path, "mirage", f"""
echo "mirage $*" >> {calls}
trap 'echo "mirage got USR1" >> {calls}; kill $sleeper; exit 75' USR1
sleep 30 &
sleeper=$!
touch {tmp_path}/started
wait $sleeper
exit 0
""")
    _fake_bin(tmp_path, "scontrol", f'echo "scontrol $*" >> {calls}\n')
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_ARRAY_TASK_ID": "1", "OUT_ROOT": str(tmp_path / "out"), "RENDER_ARGS": "--preset tiny"}
    proc = subprocess.Popen(["bash", str(REPO / "examples" / "slurm" / "render_array.sbatch"), "a.yaml", "b.yaml"],
                            env=env, stderr=subprocess.PIPE, text=True)
    # the fake mirage touches `started` after the script's trap is installed (trap comes first)
    for _ in range(500):
        if (tmp_path / "started").exists():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert calls.read_text().splitlines() == [
        f"mirage batch a.yaml b.yaml --out-root {tmp_path / 'out'} --shard auto -- --preset tiny",
        "mirage got USR1",
        "scontrol requeue 77_1",
    ]


def test_example_sbatch_script_passes_exit_code_through(tmp_path):
    calls = tmp_path / "calls.txt"
    _fake_bin(tmp_path, "mirage", f'echo "mirage $*" >> {calls}\nexit 1\n')
    _fake_bin(tmp_path, "scontrol", f'echo "scontrol $*" >> {calls}\n')
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_ARRAY_TASK_ID": "1"}
    env.pop("RENDER_ARGS", None)
    proc = subprocess.run(["bash", str(REPO / "examples" / "slurm" / "render_array.sbatch"), "a.yaml"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert calls.read_text().splitlines() == ["mirage batch a.yaml --out-root runs/batch --shard auto --"]


# --- end to end with the real render ---------------------------------------------------------------------


def _rollout_available() -> bool:
    try:
        importlib.import_module("mirage_cli.render.rollout")
    except Exception:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _rollout_available(), reason="mirage_cli.render.rollout is not importable yet")
def test_batch_end_to_end_with_mirage_render(tmp_path):
    from render_helpers import write_small_scene

    src = write_small_scene(tmp_path / "room")
    other = write_small_scene(tmp_path / "room2", seed=1)
    out = tmp_path / "out"
    bad = write_small_scene(tmp_path / "bad", seed=-1)  # refused by the checks: skipped with --skip-invalid
    cmd = [sys.executable, "-m", "mirage_cli", "batch", str(src), str(bad), str(other), "--executor", "local", "--skip-invalid",
           "--out-root", str(out), "--json", "--", "--preset", "tiny", "--steps", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]  # not every scene is done: the skipped one
    summary = json.loads(proc.stdout)
    assert [s["status"] for s in summary["scenes"]] == ["done", "invalid", "done"]
    assert "seed: must be in [0, 2^63), got -1" in summary["scenes"][1]["reason"]
    for s in (summary["scenes"][0], summary["scenes"][2]):
        assert (Path(s["run_dir"]) / "video.mp4").is_file()
        assert s["wall_seconds"] > 0
        # per-scene progress on stderr: its chunks as the render reports them, then its outcome and time
        assert f"scene {s['name']}: chunk 2/2 done in " in proc.stderr
        assert f"scene {s['name']}: done in " in proc.stderr
    assert not Path(summary["scenes"][1]["run_dir"]).exists()
