"""Every hostile input as a user meets it: a child ``mirage`` process each, its exit code, time and
peak memory (one run).

    python benchmarks/hostile_inputs.py [--fuzz 50] [--timeout 120] [--only TEXT] [--surfaces spec,commands]

Spec cases (``--surfaces spec``): each named case of ``tests/hostile_inputs.py`` (and ``--fuzz``
seeded fuzz cases) runs twice:
``mirage validate SPEC`` and ``mirage render SPEC --preset tiny`` (the real tiny render with the
spec's own settings, so a bad ``steps:`` is refused as a user would meet it; a valid case renders
to the end). Peak memory is the child's maximum resident set size (``os.wait4``), which includes
the ~0.5 GB of importing torch and diffusers that every render process pays; ``validate`` imports
torch too (the image and depth checks use it). Prints a Markdown table and a summary; exits 1 when
a case ends in another exit code than expected (2 for bad input, 0 for the valid ones), when a
child outlives ``--timeout``, or when one prints a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile_commands import fuzz_command_cases, named_command_cases, verdict_problem  # noqa: E402
from hostile_inputs import NAMED_CASES, fuzz_cases  # noqa: E402


def run_child(args: list[str], timeout: float) -> tuple[int | None, float, float, str]:
    """(exit code or None when killed at ``timeout``, seconds, peak RSS in MiB, stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "mirage_cli", *args], stdout=subprocess.DEVNULL, stderr=err,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(child.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    code = os.waitstatus_to_exitcode(status)
    killed = time.perf_counter() > deadline and code == -signal.SIGKILL
    return (None if killed else code), seconds, usage.ru_maxrss / 1024, stderr


def spec_cases(cases, tmp: str, timeout: float, worst: dict, rows: list, failures: list) -> None:
    """Each spec case through ``validate`` and ``render --preset tiny`` (module docstring)."""
    for i, case in enumerate(cases):
        spec = case.build(Path(tmp) / f"case_{i}")
        render_args = ["--out", f"{tmp}/run_{i}", "--preset", "tiny", "--quiet"]
        codes = {}
        for command, extra in (("validate", []), ("render", render_args)):
            code, seconds, rss, stderr = run_child([command, str(spec), *extra], timeout)
            codes[command] = code
            worst[command] = (max(worst[command][0], seconds), max(worst[command][1], rss))
            allowed = (2,) if case.expect is not None else (0, 2) if case.name.startswith("fuzz") else (0,)
            if code not in allowed or "Traceback" in stderr:
                failures.append(f"{case.name} ({command}): exit {code if code is not None else 'hung'}, {stderr.strip()[-300:]}")
            add_row(rows, case.name, command, code, seconds, rss, stderr)
        if (codes["validate"] == 0) != (codes["render"] == 0):
            failures.append(f"{case.name}: validate exit {codes['validate']} but render exit {codes['render']}")


def command_cases(cases, tmp: str, timeout: float, worst: dict, rows: list, failures: list) -> None:
    """Each command case as its own child (module docstring)."""
    for i, case in enumerate(cases):
        folder = Path(tmp) / f"command_{i}"
        folder.mkdir(parents=True)
        args = case.build(folder)
        code, seconds, rss, stderr = run_child(args, timeout)
        worst[args[0]] = (max(worst.get(args[0], (0.0, 0.0))[0], seconds), max(worst.get(args[0], (0.0, 0.0))[1], rss))
        problem = verdict_problem(case, code, stderr)
        if problem is not None:
            failures.append(f"{case.name} ({args[0]}): {problem}")
        add_row(rows, case.name, args[0], code, seconds, rss, stderr)


def add_row(rows: list, name: str, command: str, code: int | None, seconds: float, rss: float, stderr: str) -> None:
    first = next((line for line in stderr.splitlines() if line.startswith("error:")), "")
    rows.append(f"| {name[:48]} | {command} | {code if code is not None else 'hung'} | {seconds:.1f} | "
                f"{rss:.0f} | {first[:90].replace('|', '/')} |")
    print(f"{name}: {command} exit {code} in {seconds:.1f} s, {rss:.0f} MiB", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=50, help="Fuzz cases besides the named ones (per command surface).")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds before a child counts as hung.")
    parser.add_argument("--only", default=None, help="Only cases whose name contains this text.")
    parser.add_argument("--surfaces", default="spec,commands", help="spec, commands, or both (comma-separated).")
    args = parser.parse_args()
    surfaces = set(args.surfaces.split(","))
    chosen = lambda cases: [c for c in cases if args.only is None or args.only in c.name]  # noqa: E731
    specs = chosen(NAMED_CASES + fuzz_cases(args.fuzz, seed=0)) if "spec" in surfaces else []
    commands = chosen(named_command_cases() + fuzz_command_cases(args.fuzz, seed=0)) if "commands" in surfaces else []
    failures, rows = [], []
    worst = {"validate": (0.0, 0.0), "render": (0.0, 0.0)}
    with tempfile.TemporaryDirectory(prefix="mirage-hostile-") as tmp:
        spec_cases(specs, tmp, args.timeout, worst, rows, failures)
        command_cases(commands, tmp, args.timeout, worst, rows, failures)
    print("\n| case | command | exit | s | peak MiB | first error |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    slowest = ", ".join(f"{command} {s:.1f} s / {rss:.0f} MiB" for command, (s, rss) in sorted(worst.items()) if s)
    print(f"\n{len(specs)} spec cases and {len(commands)} command cases, {len(rows)} runs, {len(failures)} failures; "
          f"slowest and largest per command: {slowest}")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
