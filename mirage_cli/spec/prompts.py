"""The spec's ``prompts:``: which prompt each chunk is rendered with.

Three forms (``prompt:`` stays the default and the first chunk's prompt when nothing else says):

- a list of strings, one per chunk in order; when there are fewer than chunks the last one continues
  (more than chunks is a mistake and says so);
- a list of ``{frame: N, prompt: text}``, frames increasing, each the first frame of a chunk: that
  chunk and the ones after it take the prompt, up to the next entry (``prompt:`` before the first
  entry). A frame outside the video or inside a chunk is refused with the chunk starts nearest to it
  (a prompt changes only where a chunk starts; nothing is moved to the nearest start silently);
- a path (relative to the spec) of a text file with one prompt per non-empty line, read as the list
  of strings: Spatia's ``prompt.txt``, one prompt per generation round.
"""

from __future__ import annotations

import bisect
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
    if len(entries) > len(chunks):
        problems.add("prompts", f"{len(entries)} {{frame, prompt}} entries for {len(chunks)} chunk(s): one per chunk at most")
        return None
    chunk_starts, last = [c.start for c in chunks], chunks[-1].end
    by_start: dict[int, str] = {}
    previous, ok = None, True  # the last usable frame: a refused one is not compared again
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"frame", "prompt"}:
            problems.add(f"prompts[{i}]", "expected {frame: N, prompt: text}")
            ok = False
            continue
        frame, why = entry["frame"], _text_problem(entry["prompt"])
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            problems.add(f"prompts[{i}].frame", f"expected a frame number >= 0, got {frame!r}")
            ok = False
        elif previous is not None and frame <= previous:
            problems.add(f"prompts[{i}].frame", f"frames must increase: {frame} after {previous}")
            ok = False
        elif (where := _chunk_start_problem(frame, chunk_starts, last)) is not None:
            problems.add(f"prompts[{i}].frame", where)
            ok = False
        else:
            previous = frame
            by_start[frame] = entry["prompt"]
        if why:
            problems.add(f"prompts[{i}].prompt", why)
            ok = False
    if not ok:
        return None
    out, current = [], default
    for chunk in chunks:
        current = by_start.get(chunk.start, current)
        out.append(current)
    return tuple(out)


def _chunk_start_problem(frame: int, starts: list[int], last: int) -> str | None:
    """Why a prompt cannot change at video frame ``frame`` (outside the video of frames 0 to ``last``,
    or not one of the chunks' first frames ``starts``: naming the starts nearest to it), or None."""
    if frame > last:
        return f"frame {frame} is outside the video (frames 0 to {last}); the last chunk starts at frame {starts[-1]}"
    at = bisect.bisect_left(starts, frame)  # starts[at - 1] < frame <= starts[at]
    if at < len(starts) and starts[at] == frame:
        return None
    nearest = [f"{starts[at - 1]} (chunk {at - 1})"] + ([f"{starts[at]} (chunk {at})"] if at < len(starts) else [])
    return (f"frame {frame} does not start a chunk, and a prompt changes only where one starts: the nearest chunk "
            f"start{'s are' if len(nearest) > 1 else ' is'} {' and '.join(nearest)}")


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
