"""The README and the topic pages under docs/: every relative link resolves, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 320

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def outside_fences(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(path.read_text()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """The link targets of a markdown file that point inside the repository (no scheme, no mail)."""
    lines = [re.sub(r"`[^`]*`", "", line) for line in outside_fences(path.read_text())]  # inline code is no link
    targets = [m.group(1) for line in lines for m in LINK.finditer(line)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` whose file, or whose heading anchor in a markdown file, does not exist."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest}")
    return broken


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(path: Path) -> None:
    assert relative_links(path), f"{path.name} links nowhere"
    assert broken_links(path) == []


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_the_readme_links_every_topic_page_and_every_page_links_back() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert PAGES and [p.name for p in PAGES if p.resolve() not in linked] == []
    for page in PAGES:
        assert any(t.partition("#")[0] == "../README.md" for t in relative_links(page)), page.name


def test_a_broken_link_and_a_missing_anchor_are_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Two words, and `code`\n")
    page.write_text(
        "# Page\n\n[ok](other.md#two-words-and-code) [gone](missing.md) "
        "[bad anchor](other.md#nope) [self](#page)\n\n```\n[in code](nowhere.md)\n```\n"
    )
    problems = [line.split(":")[0] for line in broken_links(page)]
    assert problems == ["missing.md", "other.md#nope"]
