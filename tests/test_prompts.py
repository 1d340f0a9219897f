"""Per-chunk prompts (the spec's ``prompts:``): parsing, and real tiny renders that use them."""

from __future__ import annotations

import pytest
import torch
from render_helpers import SMALL, cli, write_small_scene
from safetensors.torch import load_file

from mirage_cli.base.errors import InputError
from mirage_cli.spec.plan import load_plan

# the small scene: 17 frames in chunks of 9 -> chunks 0-8 and 8-16


@pytest.mark.parametrize("prompts, expected", [
    (None, ["base", "base"]),
    (["one"], ["one", "one"]),
    (["one", "two"], ["one", "two"]),
    ([{"frame": 8, "prompt": "later"}], ["base", "later"]),
    ([{"frame": 0, "prompt": "first"}, {"frame": 8, "prompt": "second"}], ["first", "second"]),
    ([{"frame": 0, "prompt": "first"}], ["first", "first"]),
], ids=["none", "one-continues", "one-each", "by-frame", "by-frame-two", "by-frame-continues"])
def test_prompts_by_chunk(tmp_path, prompts, expected):
    plan = load_plan(write_small_scene(tmp_path, prompt="base", prompts=prompts))
    assert [plan.prompt_of(c.index) for c in plan.chunks] == expected
    assert plan.varied_prompts == any(p != "base" for p in expected)


def test_a_refused_frame_is_reported_once(tmp_path):
    """A frame outside the video is one problem: the entry after it is not compared with it."""
    with pytest.raises(InputError) as info:
        load_plan(write_small_scene(tmp_path, prompt="base", prompts=[{"frame": 99, "prompt": "x"}, {"frame": 8, "prompt": "y"}]))
    assert [p.field for p in info.value.problems] == ["prompts[0].frame"]


def test_validate_shows_the_chunks_of_each_prompt(tmp_path):
    scene = write_small_scene(tmp_path, prompt="a quiet room", prompts=[{"frame": 8, "prompt": "a storm outside"}])
    shown = cli("validate", scene)
    assert shown.exit_code == 0, shown.stderr
    assert "  chunk 0 (frames 0-8): 'a quiet room'" in shown.stdout
    assert "  chunk 1 (frames 8-16): 'a storm outside'" in shown.stdout


def test_validate_groups_chunks_that_share_a_prompt(tmp_path):
    scene = write_small_scene(tmp_path, prompt="one", chunk_frames=5, prompts=[{"frame": 8, "prompt": "two"}])
    shown = cli("validate", scene)
    assert shown.exit_code == 0, shown.stderr
    assert "  chunks 0-1 (frames 0-8): 'one'" in shown.stdout and "  chunks 2-3 (frames 8-16): 'two'" in shown.stdout


def test_spatia_prompt_file(tmp_path):
    (tmp_path / "prompt.txt").write_text("round one\n\nround two\n")
    plan = load_plan(write_small_scene(tmp_path, prompt="base", prompts="prompt.txt"))
    assert list(plan.chunk_prompts) == ["round one", "round two"]


@pytest.mark.parametrize("prompts, message", [
    (["a", "b", "c"], "prompts: 3 prompts for 2 chunk(s)"),
    (["a", ""], "prompts[1]: is empty"),
    ([{"frame": 8, "prompt": "x"}, {"frame": 4, "prompt": "y"}], "prompts[1].frame: frames must increase"),
    ([{"frame": 0}], "prompts[0]: expected {frame: N, prompt: text}"),
    ([], "prompts: is an empty list"),
    ("missing.txt", "missing.txt"),
    ([{"frame": 5000, "prompt": "x"}],
     "prompts[0].frame: frame 5000 is outside the video (frames 0 to 16); the last chunk starts at frame 8"),
    ([{"frame": 0, "prompt": "x"}, {"frame": 5, "prompt": "y"}],
     "prompts[1].frame: frame 5 does not start a chunk, and a prompt changes only where one starts: the nearest chunk starts are "
     "0 (chunk 0) and 8 (chunk 1)"),
    ([{"frame": 12, "prompt": "x"}], "the nearest chunk start is 8 (chunk 1)"),
    ([{"frame": 0, "prompt": "x"}, {"frame": 8, "prompt": "y"}, {"frame": 16, "prompt": "z"}],
     "prompts: 3 {frame, prompt} entries for 2 chunk(s)"),
    ({"frame": 0, "prompt": "x"}, "prompts: expected list or string or null, got dict"),
], ids=["too-many", "empty", "decreasing", "no-prompt", "empty-list", "missing-file", "outside-the-video", "inside-a-chunk",
        "inside-the-last-chunk", "more-entries-than-chunks", "a-mapping"])
def test_bad_prompts_name_the_field(tmp_path, prompts, message):
    with pytest.raises(InputError) as info:
        load_plan(write_small_scene(tmp_path, prompt="base", prompts=prompts))
    assert any(message in str(p) for p in info.value.problems), [str(p) for p in info.value.problems]


def test_each_chunk_renders_with_its_prompt_and_resume_keeps_them(tmp_path):
    same = write_small_scene(tmp_path / "same", prompt="a quiet room")
    varied = write_small_scene(tmp_path / "varied", prompt="a quiet room", prompts=["a quiet room", "a storm outside"])
    for scene, run in ((same, "same"), (varied, "varied")):
        result = cli("render", scene, "--out", tmp_path / run, "--memory", "none", *SMALL)
        assert result.exit_code == 0, result.stderr
    def latents(run, chunk):
        return load_file(str(tmp_path / run / "latents" / f"chunk_{chunk:04d}.safetensors"))

    a, b = latents("same", 0), latents("varied", 0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # chunk 1: same prompt, seed and inputs
    a, b = latents("same", 1), latents("varied", 1)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # chunk 2: another prompt
    # the prompts are part of the run's settings: changing them is refused on resume
    changed = write_small_scene(tmp_path / "changed", prompt="a quiet room", prompts=["a quiet room", "sunshine"])
    refused = cli("render", changed, "--out", tmp_path / "varied", "--memory", "none", *SMALL)
    assert refused.exit_code == 2 and "chunk_prompts" in refused.stderr
