"""The documentation stays true: the README's first-scene walk-through runs word by word, the spec
reference in docs/spec.md is the one the code declares, and every relative link resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from mirage_cli.spec.reference import reference_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def between(text: str, marker: str) -> str:
    """The text between ``<!-- MARKER: start -->`` and ``<!-- MARKER: end -->``."""
    match = re.search(rf"<!-- {marker}: start -->\n(.*?)<!-- {marker}: end -->", text, re.S)
    assert match, f"no {marker} markers"
    return match.group(1)


def test_the_first_scene_walkthrough_runs_word_by_word(tmp_path):
    """The README's commands, as written, in a fresh folder: the user's image is the only file given
    (a photo in ~/Pictures, HOME pointing here), the network is off (HF_HUB_OFFLINE), and `.venv` is
    this test's own environment."""
    block = between(README.read_text(), "first-scene")
    script = re.fullmatch(r"```bash\n(.*)```\n", block, re.S).group(1)
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    Image.open(ROOT / "examples" / "room" / "start.png").convert("RGB").save(home / "Pictures" / "photo.jpg")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))  # the virtual environment running the tests (make test's .venv)
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "depth model tiny" in done.stdout and "NOT HERE" not in done.stdout
    assert "myscene/runs/scene" in done.stdout
    run = work / "myscene" / "runs" / "scene"
    for produced in (work / "myscene" / "preview.mp4", run / "video.mp4", run / "report.html"):
        assert produced.stat().st_size > 0, produced


def test_the_spec_reference_is_the_declared_one():
    table = between((ROOT / "docs" / "spec.md").read_text(), "spec-reference")
    assert table == reference_table(), "docs/spec.md's reference is stale: python -m mirage_cli.spec.reference prints it"


def test_every_relative_link_resolves():
    broken = []
    for page in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_readme_starts_short():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert [h for h in re.findall(r"^## (.*)$", text, re.M)][:3] == ["Quickstart", "Your first scene", "Commands"]
