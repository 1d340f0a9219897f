"""The spec's ``prompts:``: which prompt each chunk is rendered with.

Three forms (``prompt:`` stays the default and the first chunk's prompt when nothing else says):

- a list of strings, one per chunk in order; when there are fewer than chunks the last one continues
  (more than chunks is a mistake and says so);
- a list of ``{frame: N, prompt: text}``, frames increasing: a chunk takes the last entry whose frame
  is at or before its first frame (``prompt:`` before the first entry);
- a path (relative to the spec) of a text file with one prompt per non-empty line, read as the list
  of strings: Spatia's ``prompt.txt``, one prompt per generation round.
"""

from __future__ import annotations

from pathlib import Path

from mirage_cli.base.errors import InputError, ProblemList
from mirage_cli.base.files import read_text
from mirage_cli.base.limits import MAX_PROMPT_CHARS, MAX_TEXT_BYTES


def _text_problem(text) -> str | None:
    if not isinstance(text, str):
        return f"expected a prompt (string), got {type(text).__name__}"
    if not text.strip():
        return "is empty"
    if len(text) > MAX_PROMPT_CHARS:
        return f"is {len(text):,} characters, more than the limit of {MAX_PROMPT_CHARS:,}"
    return None


def _from_file(value: str, base_dir: Path, problems: ProblemList) -> list | None:
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    try:
        return [line.strip() for line in read_text(path, MAX_TEXT_BYTES, field="prompts").splitlines() if line.strip()]
    except InputError as e:
        problems.items.extend(e.problems)
        return None


def _by_frame(entries: list, chunks, default: str, problems: ProblemList) -> tuple[str, ...] | None:
    starts, texts, ok = [], [], True
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"frame", "prompt"}:
            problems.add(f"prompts[{i}]", "expected {frame: N, prompt: text}")
            ok = False
            continue
        frame, why = entry["frame"], _text_problem(entry["prompt"])
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            problems.add(f"prompts[{i}].frame", f"expected a frame number >= 0, got {frame!r}")
            ok = False
        elif starts and frame <= starts[-1]:
            problems.add(f"prompts[{i}].frame", f"frames must increase: {frame} after {starts[-1]}")
            ok = False
        if why:
            problems.add(f"prompts[{i}].prompt", why)
            ok = False
        starts.append(frame)
        texts.append(entry["prompt"])
    if not ok:
        return None
    out = []
    for chunk in chunks:
        earlier = [t for f, t in zip(starts, texts, strict=True) if f <= chunk.start]
        out.append(earlier[-1] if earlier else default)
    return tuple(out)


def chunk_prompts(value, chunks, default: str, base_dir: Path, problems: ProblemList) -> tuple[str, ...] | None:
    """The prompt of every chunk (``chunks``: the plan's), or None after adding problems."""
    if value is None:
        return tuple(default for _ in chunks)
    if isinstance(value, str):
        value = _from_file(value, base_dir, problems)
        if value is None:
            return None
        if not value:
            problems.add("prompts", "the prompt file holds no prompt (one per line)")
            return None
    if not value:
        problems.add("prompts", "is an empty list (leave it out to use `prompt` for every chunk)")
        return None
    if all(isinstance(v, dict) for v in value):
        return _by_frame(value, chunks, default, problems)
    bad = [(i, _text_problem(v)) for i, v in enumerate(value)]
    for i, why in bad:
        if why:
            problems.add(f"prompts[{i}]", why)
    if any(why for _, why in bad):
        return None
    if len(value) > len(chunks):
        problems.add("prompts", f"{len(value)} prompts for {len(chunks)} chunk(s): one per chunk at most")
        return None
    return tuple(value[min(i, len(value) - 1)] for i in range(len(chunks)))
