"""The README is a front door into docs/: every relative link in README.md and docs/*.md must
lead somewhere, and the README must stay short.

A link ``[text](path#anchor)`` is checked the way GitHub renders it: the path relative to the
file that holds the link must exist, and an anchor into a Markdown file must be the slug of one
of its headings (GitHub's rule, which the Sphinx build's MyST ``heading_anchors`` also follows).
Links inside code (fenced blocks, inline backticks) are text, not links, and are skipped. The
Sphinx build (scripts/build_docs.sh) checks docs/ again with warnings as errors; this test also
covers README.md, which Sphinx does not read, and runs without Sphinx.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250  # issue 22: the README is a front door; the rest lives in docs/

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
_IMAGE = re.compile(r"!\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; inline code spans blanked if asked."""
    out, fence = [], False
    for number, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            out.append((number, re.sub(r"`[^`]*`", "``", line) if blank_code else line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), blank_code=False):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link and image in the prose of ``path``.

    Link text may run over a line break; code (fenced or inline) is blanked first, keeping
    the line numbers.
    """
    prose = [""] * (path.read_text(encoding="utf-8").count("\n") + 1)
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        prose[number - 1] = line
    text = "\n".join(prose)
    out = []
    for pattern in (_LINK, _IMAGE):
        for match in pattern.finditer(text):
            target = match.group("target")
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # skip https:, mailto:
                out.append((text.count("\n", 0, match.start()) + 1, target))
    return sorted(out)


def broken_links(path: Path) -> list[str]:
    """One line per link of ``path`` that leads nowhere."""
    problems = []
    for number, target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: ({target})"
        if not dest.exists():
            problems.append(f"{where} {file_part} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where} no heading of {dest.relative_to(ROOT)} has the anchor #{anchor}")
    return problems


def test_slug_follows_github():
    assert slug("The β embedding") == "the-β-embedding"
    assert slug("Mixture priors: GMVAE vs LIDGMVAE (`--models gmvae,lidgmvae`)") == \
        "mixture-priors-gmvae-vs-lidgmvae---models-gmvaelidgmvae"
    assert slug("Soak run (`benchmarks/soak.py`)") == "soak-run-benchmarkssoakpy"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail into docs/ and link it")
    targets = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    assert "docs/index.md" in targets, "the README links docs/index.md, the page that says what is where"
