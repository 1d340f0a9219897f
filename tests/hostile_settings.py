"""Hostile command-line cases: the settings surface (tests/hostile_commands.py).

MagCache calibration files (``--cache-calibration`` and the spec's ``step_cache.calibration``, through
``render`` and ``validate``), per-chunk prompts (``prompts:``) and ``mirage batch`` (its GPU counts, the
arguments it hands to ``mirage render`` and the checks every spec gets before a job is submitted).

Every case starts from the small scene of ``hostile_inputs`` (224x128, 17 frames in chunks of 9, 2
steps) and breaks one thing. A render case stops before any model loads (the calibration is read and
fitted with the spec); a batch case always holds a refused spec or option, so no job is submitted.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from hostile_commands import CommandCase
from hostile_inputs import base_spec, make_dir, make_fifo, write_spec

MODEL = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
"""The model of the base spec (the default), as a render's configuration names it."""
STEPS = 2
RESOLUTION = "224x128"
TINY = ["--preset", "tiny", "--steps", str(STEPS), "--quiet"]


# --- calibration files -------------------------------------------------------------------------------


def calibration(**changes) -> dict:
    """A valid calibration of the base spec (its model, size and steps), fields replaced by ``changes``
    (``ratios_by_branch`` follows a replaced ``ratios`` list unless it is given too)."""
    content = {"format": "mirage-magcache-calibration", "version": 1, "model": MODEL, "resolution": RESOLUTION,
               "chunk_frames": 9, "steps": STEPS, "shift": 5.0, "guidance": 5.0, "seed": 0, "ratios": [1.0, 0.98],
               "ratios_by_branch": {"cond": [1.0, 0.98], "uncond": [1.0, 0.97]}}
    content.update(changes)
    if isinstance(changes.get("ratios"), list) and "ratios_by_branch" not in changes:
        content["ratios_by_branch"] = {"cond": changes["ratios"], "uncond": changes["ratios"]}
    return content


def calibration_bytes(**changes) -> bytes:
    return json.dumps(calibration(**changes)).encode()


def _write(path: Path, content: bytes | Callable[[Path], None] | None) -> None:
    """``content`` at ``path``: bytes, or made by a function (a FIFO, a folder); None: nothing."""
    if content is None:
        return
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)


def validate_with_calibration(content, name: str = "mag.json", **spec_changes) -> Callable[[Path], list[str]]:
    """``mirage validate`` of the base spec with ``step_cache: {method: mag, calibration: name}``, the
    file ``name`` holding ``content``."""

    def build(folder: Path) -> list[str]:
        spec = {**base_spec(), "step_cache": {"method": "mag", "calibration": name}, **spec_changes}
        path = write_spec(folder, spec)
        if not name.startswith("/"):
            _write(folder / name, content)
        return ["validate", str(path)]

    return build


def render_with_calibration(content, name: str = "mag.json", *extra: str) -> Callable[[Path], list[str]]:
    """``mirage render --cache mag --cache-calibration FILE`` of the base spec (tiny preset, 2 steps)."""

    def build(folder: Path) -> list[str]:
        path = write_spec(folder, base_spec())
        target = name if name.startswith("/") else str(folder / name)
        if not name.startswith("/"):
            _write(folder / name, content)
        return ["render", str(path), "--out", str(folder / "run"), *TINY, "--cache", "mag", "--cache-calibration", target, *extra]

    return build


def nested_json(depth: int) -> bytes:
    return ('{"format": "mirage-magcache-calibration", "ratios": ' + "[" * depth + "]" * depth + "}").encode()


CALIBRATION_CASES = [
    CommandCase("settings-calibration-dev-zero-render", render_with_calibration(None, "/dev/zero"),
                "step_cache.calibration: /dev/zero: is a device, expected a regular file"),
    CommandCase("settings-calibration-dev-zero-validate", validate_with_calibration(None, "/dev/zero"),
                "step_cache.calibration: /dev/zero: is a device, expected a regular file"),
    CommandCase("settings-calibration-fifo-render", render_with_calibration(make_fifo), "is a named pipe (FIFO), expected a regular file"),
    CommandCase("settings-calibration-fifo-validate", validate_with_calibration(make_fifo),
                "is a named pipe (FIFO), expected a regular file"),
    CommandCase("settings-calibration-directory", validate_with_calibration(make_dir), "is a directory, expected a regular file"),
    CommandCase("settings-calibration-missing", validate_with_calibration(None), "mag.json: file not found"),
    CommandCase("settings-calibration-too-large", validate_with_calibration(b" " * (1 << 20) + calibration_bytes()),
                "more than the limit of 1,048,576"),
    CommandCase("settings-calibration-nul-in-name", validate_with_calibration(None, "mag\0.json"), "NUL byte"),
    CommandCase("settings-calibration-negative-ratios", validate_with_calibration(calibration_bytes(ratios=[-5, -7])),
                "mag.json: ratios[0]: must be > 0"),
    CommandCase("settings-calibration-negative-ratios-render", render_with_calibration(calibration_bytes(ratios=[-5, -7])),
                "mag.json: ratios[0]: must be > 0"),
    CommandCase("settings-calibration-bool-ratios", validate_with_calibration(calibration_bytes(ratios=[True, False])),
                "ratios[0]: expected a number, got bool True"),
    CommandCase("settings-calibration-nan-ratio", validate_with_calibration(calibration_bytes(ratios=[1.0, float("nan")])),
                "ratios[1]: must be finite, got nan"),
    CommandCase("settings-calibration-inf-ratio", validate_with_calibration(calibration_bytes(ratios=[float("inf"), 1.0])),
                "ratios[0]: must be finite, got inf"),
    CommandCase("settings-calibration-huge-ratio", validate_with_calibration(calibration_bytes(ratios=[1.0, 1e300])),
                "ratios[1]: must be > 0 and at most 100"),
    CommandCase("settings-calibration-huge-integer", validate_with_calibration(b'{"ratios": [1' + b"0" * 5000 + b"]}"),
                "mag.json: holds an integer of 5,001 digits (at most 30)"),
    CommandCase("settings-calibration-string-ratios", validate_with_calibration(calibration_bytes(ratios="1.0, 0.98")),
                "ratios: expected a list of 1 to 1000 per-step ratios, got str"),
    CommandCase("settings-calibration-no-ratios", validate_with_calibration(calibration_bytes(ratios=[])),
                "ratios: expected a list of 1 to 1000 per-step ratios, got a list of 0"),
    CommandCase("settings-calibration-too-many-ratios", validate_with_calibration(calibration_bytes(ratios=[1.0] * 1001)),
                "ratios: expected a list of 1 to 1000 per-step ratios, got a list of 1001"),
    CommandCase("settings-calibration-length-not-steps", validate_with_calibration(calibration_bytes(ratios=[1.0, 1.0, 1.0])),
                "steps: says 2 steps but the file holds 3 ratios"),
    CommandCase("settings-calibration-steps-not-int", validate_with_calibration(calibration_bytes(steps="2")),
                "steps: expected the number of denoising steps (an integer), got str '2'"),
    CommandCase("settings-calibration-deep-nesting", validate_with_calibration(nested_json(200_000)), "JSON nested deeper than 64 levels"),
    CommandCase("settings-calibration-nesting-100", validate_with_calibration(nested_json(100)), "JSON nested deeper than 64 levels"),
    CommandCase("settings-calibration-not-json", validate_with_calibration(b"ratios: [1, 1]\n"), "mag.json:1: JSON does not parse"),
    CommandCase("settings-calibration-truncated", validate_with_calibration(calibration_bytes()[:40]), "JSON does not parse"),
    CommandCase("settings-calibration-not-utf8", validate_with_calibration(b"\xff\xfe" + calibration_bytes()), "not UTF-8 text"),
    CommandCase("settings-calibration-empty", validate_with_calibration(b""), "JSON does not parse"),
    CommandCase("settings-calibration-a-list", validate_with_calibration(b"[1.0, 0.98]"), "format: is not a MagCache calibration"),
    CommandCase("settings-calibration-other-format", validate_with_calibration(calibration_bytes(format="magcache")),
                "format: is not a MagCache calibration"),
    CommandCase("settings-calibration-newer-version", validate_with_calibration(calibration_bytes(version=2)),
                "version: is 2; this mirage reads version 1"),
    CommandCase("settings-calibration-duplicate-key",
                validate_with_calibration(b'{"format": "mirage-magcache-calibration", "ratios": [1, 1], "ratios": [-1, 1]}'),
                "duplicate key 'ratios'"),
    CommandCase("settings-calibration-unknown-key", validate_with_calibration(calibration_bytes(stpes=2)),
                "stpes: unknown key (did you mean 'steps'?)"),
    CommandCase("settings-calibration-branch-ratios-damaged",
                validate_with_calibration(calibration_bytes(ratios_by_branch={"cond": [1.0, 0.98], "uncond": [1.0, -1]})),
                "ratios_by_branch.uncond[1]: must be > 0"),
    CommandCase("settings-calibration-model-not-string", validate_with_calibration(calibration_bytes(model=5)),
                "model: expected a non-empty string, got int 5"),
    CommandCase("settings-calibration-bad-resolution", validate_with_calibration(calibration_bytes(resolution="big")),
                "resolution: expected WIDTHxHEIGHT, got 'big'"),
    # a curve that does not fit the render: diffusers would stretch it over the steps without a word
    CommandCase("settings-calibration-10-steps-for-2-validate",
                validate_with_calibration(calibration_bytes(steps=10, ratios=[1.0] * 10)),
                "step_cache.calibration: was measured for 10 steps, this render uses 2 steps: run `mirage calibrate-cache"),
    CommandCase("settings-calibration-10-steps-for-2-render",
                render_with_calibration(calibration_bytes(steps=10, ratios=[1.0] * 10, model="preset:tiny")),
                "was measured for 10 steps, this render uses 2 steps: run `mirage calibrate-cache"),
    CommandCase("settings-calibration-other-resolution-validate",
                validate_with_calibration(calibration_bytes(resolution="1280x704")),
                "was measured for resolution 1280x704, this render uses resolution 224x128"),
    CommandCase("settings-calibration-other-model-validate", validate_with_calibration(calibration_bytes(model="someone/else")),
                "was measured for model 'someone/else', this render uses model 'Wan-AI/Wan2.2-TI2V-5B-Diffusers'"),
    CommandCase("settings-calibration-other-model-render", render_with_calibration(calibration_bytes()),
                "was measured for model 'Wan-AI/Wan2.2-TI2V-5B-Diffusers', this render uses model 'preset:tiny'"),
    CommandCase("settings-calibration-without-mag", validate_with_calibration(calibration_bytes(), step_cache={
        "method": "first-block", "calibration": "mag.json"}), "step_cache.calibration: is used by mag only"),
    CommandCase("settings-cache-threshold-huge-integer",
                lambda folder: ["validate", str(write_spec(folder, {**base_spec(), "step_cache": {"method": "first-block",
                                                                                                   "threshold": 10**400}}))],
                "step_cache.threshold: must be in (0, 1]"),
]


# --- prompts ------------------------------------------------------------------------------------------


def validate_with_prompts(prompts, **changes) -> Callable[[Path], list[str]]:
    return lambda folder: ["validate", str(write_spec(folder, {**base_spec(), "prompts": prompts, **changes}))]


def validate_with_prompt_file(content) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        path = write_spec(folder, {**base_spec(), "prompts": "prompt.txt"})
        _write(folder / "prompt.txt", content)
        return ["validate", str(path)]

    return build


PROMPT_CASES = [
    CommandCase("settings-prompts-frame-outside-9-frame-video",
                validate_with_prompts([{"frame": 5000, "prompt": "a storm"}], frames=9),
                "prompts[0].frame: frame 5000 is outside the video (frames 0 to 8)"),
    CommandCase("settings-prompts-frame-outside", validate_with_prompts([{"frame": 0, "prompt": "a"}, {"frame": 17, "prompt": "b"}]),
                "prompts[1].frame: frame 17 is outside the video (frames 0 to 16)"),
    CommandCase("settings-prompts-frame-inside-a-chunk", validate_with_prompts([{"frame": 5, "prompt": "a storm"}]),
                "prompts[0].frame: frame 5 does not start a chunk, and a prompt changes only where one starts: the nearest "
                "chunk starts are 0 (chunk 0) and 8 (chunk 1)"),
    CommandCase("settings-prompts-frame-last", validate_with_prompts([{"frame": 16, "prompt": "a storm"}]),
                "the nearest chunk start is 8 (chunk 1)"),
    CommandCase("settings-prompts-a-mapping", validate_with_prompts({"frame": 0, "prompt": "a"}),
                "got dict {'frame': 0, 'prompt': 'a'}; to give a list of one entry, start it with '- ' in YAML or write [{...}]"),
    CommandCase("settings-prompts-a-number", validate_with_prompts(5), "prompts: expected list or string or null, got int"),
    CommandCase("settings-prompts-frame-negative", validate_with_prompts([{"frame": -8, "prompt": "a"}]),
                "prompts[0].frame: expected a frame number >= 0, got -8"),
    CommandCase("settings-prompts-frame-bool", validate_with_prompts([{"frame": True, "prompt": "a"}]),
                "prompts[0].frame: expected a frame number >= 0, got True"),
    CommandCase("settings-prompts-frame-float", validate_with_prompts([{"frame": 8.0, "prompt": "a"}]),
                "prompts[0].frame: expected a frame number >= 0, got 8.0"),
    CommandCase("settings-prompts-frame-huge", validate_with_prompts([{"frame": 10**30, "prompt": "a"}]),
                "is outside the video (frames 0 to 16)"),
    CommandCase("settings-prompts-frames-repeat", validate_with_prompts([{"frame": 8, "prompt": "a"}, {"frame": 8, "prompt": "b"}]),
                "prompts[1].frame: frames must increase: 8 after 8"),
    CommandCase("settings-prompts-entry-extra-key", validate_with_prompts([{"frame": 8, "prompt": "a", "weight": 2}]),
                "prompts[0]: expected {frame: N, prompt: text}"),
    CommandCase("settings-prompts-entry-prompt-not-text", validate_with_prompts([{"frame": 8, "prompt": ["a"]}]),
                "prompts[0].prompt: expected a prompt (string), got list"),
    CommandCase("settings-prompts-more-entries-than-chunks",
                validate_with_prompts([{"frame": 8 * i, "prompt": "a"} for i in range(1000)]),
                "prompts: 1000 {frame, prompt} entries for 2 chunk(s): one per chunk at most"),
    CommandCase("settings-prompts-more-than-chunks", validate_with_prompts(["a", "b", "c"]), "prompts: 3 prompts for 2 chunk(s)"),
    CommandCase("settings-prompts-mixed-list", validate_with_prompts([{"frame": 0, "prompt": "a"}, "b"]),
                "prompts[0]: expected a prompt (string), got dict"),
    CommandCase("settings-prompts-file-fifo", validate_with_prompt_file(make_fifo), "is a named pipe (FIFO), expected a regular file"),
    CommandCase("settings-prompts-file-dev-zero", validate_with_prompts("/dev/zero"), "is a device, expected a regular file"),
    CommandCase("settings-prompts-file-empty", validate_with_prompt_file(b"\n\n"), "prompts: the prompt file holds no prompt"),
    CommandCase("settings-prompts-file-not-utf8", validate_with_prompt_file(b"\xff\xfe\x00a"), "not UTF-8 text"),
]


# --- mirage batch -------------------------------------------------------------------------------------


def batch(*args: str, bad: dict | None = None, good: int = 1, render_args: tuple[str, ...] = TINY) -> Callable[[Path], list[str]]:
    """``mirage batch`` of ``good`` valid copies of the base spec (and one with ``bad``'s fields, when
    given) into ``folder/out``, then ``args``, then ``-- render_args``."""

    def build(folder: Path) -> list[str]:
        specs = [str(write_spec(folder / f"good{i}", base_spec())) for i in range(good)]
        if bad is not None:
            specs.append(str(write_spec(folder / "bad", {**base_spec(), **bad})))
        return ["batch", *specs, "--out-root", str(folder / "out"), *args, "--", *render_args]

    return build


def batch_of_spec_file(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        make(folder / "scene.yaml")
        return ["batch", str(folder / "scene.yaml"), "--out-root", str(folder / "out")]

    return build


BATCH_CASES = [
    CommandCase("settings-batch-gpus-per-job-100000", batch("--gpus-per-job", "100000"), "--gpus-per-job: asks for 100000 GPUs per job"),
    CommandCase("settings-batch-gpus-per-job-negative", batch("--gpus-per-job", "-1"),
                "--gpus-per-job: must be >= 0 (0: CPU jobs), got -1"),
    CommandCase("settings-batch-slurm-gpus-per-job-100000", batch("--executor", "slurm", "--gpus-per-job", "100000"),
                "--gpus-per-job: asks each SLURM job for 100000 GPUs on one node; no node has more than 64"),
    CommandCase("settings-batch-shard-with-gpus-per-job", batch("--shard", "0/1", "--gpus-per-job", "2"),
                "--gpus-per-job: --shard renders in this process"),
    CommandCase("settings-batch-bad-spec-among-good", batch(bad={"prompts": [{"frame": 5, "prompt": "a storm"}]}, good=2),
                "prompts[0].frame: frame 5 does not start a chunk"),
    CommandCase("settings-batch-bad-spec-says-the-problem", batch(bad={"seed": -1}), "seed: must be in [0, 2^63), got -1"),
    CommandCase("settings-batch-bad-spec-skip-invalid-alone", batch("--skip-invalid", bad={"frames": 10}, good=0),
                "frames: must be 4k+1"),
    CommandCase("settings-batch-calibration-dev-zero", batch(render_args=(*TINY, "--cache", "mag", "--cache-calibration", "/dev/zero")),
                "step_cache.calibration: /dev/zero: is a device"),
    CommandCase("settings-batch-calibration-misfit", lambda folder: batch(
        render_args=(*TINY, "--cache", "mag", "--cache-calibration", str(_calibration_at(folder, 10))))(folder),
                "was measured for 10 steps, this render uses 2 steps"),
    CommandCase("settings-batch-unknown-render-arg", batch(render_args=("--stepz", "2")), "RENDER_ARGS: No such option: --stepz"),
    CommandCase("settings-batch-bad-render-arg-value", batch(render_args=("--steps", "two")), "RENDER_ARGS: Invalid value for '--steps'"),
    CommandCase("settings-batch-spec-fifo", batch_of_spec_file(make_fifo), "scene.yaml: is a named pipe (FIFO), expected a regular file"),
    CommandCase("settings-batch-spec-directory", batch_of_spec_file(make_dir), "scene.yaml: is a directory, expected a regular file"),
]


def render_from(source: Callable[[Path], str], **spec_changes) -> Callable[[Path], list[str]]:
    """``mirage render --from SOURCE`` of the base spec (with ``spec_changes``) into ``folder/run``."""

    def build(folder: Path) -> list[str]:
        path = write_spec(folder, {**base_spec(), **spec_changes})
        return ["render", str(path), "--out", str(folder / "run"), *TINY, "--from", source(folder)]

    return build


def _a_file(folder: Path) -> str:
    (folder / "notes.txt").write_text("not a run")
    return str(folder / "notes.txt")


BRANCH_CASES = [
    CommandCase("settings-from-chunk-0", render_from(lambda folder: f"{folder}/runs/parent@0"),
                "--from: expected RUN or RUN@CHUNK with CHUNK a number of finished chunks (>= 1)"),
    CommandCase("settings-from-no-run", render_from(lambda folder: "@3"), "--from: expected RUN or RUN@CHUNK with CHUNK"),
    CommandCase("settings-from-unknown-user", render_from(lambda folder: "~no-such-user-here/run"), "--from: cannot expand"),
    CommandCase("settings-from-missing", render_from(lambda folder: f"{folder}/nowhere"),
                "--from: the parent run directory does not exist"),
    CommandCase("settings-from-a-file", render_from(_a_file), "--from: the parent run directory is not a directory"),
    CommandCase("settings-from-its-own-out", render_from(lambda folder: f"{folder}/run"),
                "--from: names the run directory the branch renders into"),
    CommandCase("settings-from-word-after-at", render_from(lambda folder: f"{folder}@latest"),
                "does not exist (in RUN@CHUNK, CHUNK is a number of finished chunks"),
    CommandCase("settings-from-replaces-a-bad-spec-from", render_from(lambda folder: f"{folder}/nowhere", **{"from": 123}),
                "--from: the parent run directory does not exist"),
]


def _calibration_at(folder: Path, steps: int) -> Path:
    """A calibration of the tiny preset at the base size, measured with ``steps`` steps, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mag.json"
    path.write_bytes(calibration_bytes(steps=steps, ratios=[1.0] * steps, model="preset:tiny"))
    return path


NAMED_CASES: list[CommandCase] = CALIBRATION_CASES + PROMPT_CASES + BATCH_CASES + BRANCH_CASES


# --- fuzzing --------------------------------------------------------------------------------------------


HOSTILE_VALUES = [float("nan"), float("inf"), -float("inf"), -1, 0, 1e308, -1e308, 10**30, True, None, "1.0", [], {}, [1.0] * 3,
                  "x" * 10_000]


def _mutate_values(content: dict, rng: random.Random) -> dict:
    """One field of a valid calibration (or one of its ratios) replaced by a hostile value, or removed."""
    content = json.loads(json.dumps(content))
    key = rng.choice(["ratios", "ratios", "ratios", "steps", "model", "resolution", "format", "version"])
    if key == "ratios" and rng.random() < 0.7:
        content["ratios"][rng.randrange(len(content["ratios"]))] = rng.choice(HOSTILE_VALUES)
    elif rng.random() < 0.2:
        content.pop(key, None)
    else:
        content[key] = rng.choice(HOSTILE_VALUES)
    return content


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """``data`` with bytes flipped, a piece cut out or repeated, or cut short."""
    data = bytearray(data)
    kind = rng.choice(["flip", "flip", "cut", "repeat", "truncate"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "cut":
        a = rng.randrange(len(data))
        del data[a:a + rng.randint(1, 20)]
    elif kind == "repeat":
        a = rng.randrange(len(data))
        data[a:a] = data[a:a + rng.randint(1, 20)] * rng.randint(2, 50)
    else:
        del data[rng.randrange(len(data)):]
    return bytes(data)


def _fuzz_calibration(rng: random.Random) -> Callable[[Path], list[str]]:
    """A valid calibration file with one value replaced, or its bytes damaged."""
    if rng.random() < 0.5:
        content = json.dumps(_mutate_values(calibration(), rng)).encode()
    else:
        content = _mutate_bytes(calibration_bytes(), rng)
    return validate_with_calibration(content)


def _fuzz_prompts(rng: random.Random) -> Callable[[Path], list[str]]:
    """Valid per-chunk prompts with one thing broken: a value replaced, or the entries out of order."""
    entries = [{"frame": 0, "prompt": "a quiet room"}, {"frame": 8, "prompt": "a storm outside"}]
    if rng.random() < 0.2:
        entries.reverse()
    else:
        victim = rng.choice(entries)
        field = rng.choice(["frame", "frame", "prompt"])
        victim[field] = rng.choice([*HOSTILE_VALUES, rng.randint(-20, 40), rng.randint(0, 16)])
    return validate_with_prompts(entries)


def fuzz_cases(n: int, seed: int) -> list[CommandCase]:
    """``n`` seeded cases: a valid calibration file with a value replaced or its bytes damaged, or
    per-chunk prompts with a value replaced (each through ``mirage validate``)."""
    rng = random.Random(f"settings-{seed}")
    cases = []
    for i in range(n):
        make = _fuzz_calibration if rng.random() < 0.7 else _fuzz_prompts
        cases.append(CommandCase(f"fuzz-settings-{i}", make(random.Random(rng.random())), None))
    return cases
