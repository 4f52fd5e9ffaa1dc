"""The README a newcomer reads top to bottom: short, the two commands first, a table of contents into docs/ whose
every link resolves, and no words about how or when its figures were made."""

from __future__ import annotations

import re
from pathlib import Path

from helpers.project import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MOST_BYTES = 12_000
# The pages the README's table of contents must name, one per topic.
TOPICS = {
    "experiments",
    "budgets",
    "studies",
    "search",
    "transfer",
    "explain",
    "detect",
    "ci",
    "gpu",
    "data",
    "params",
    "performance",
    "architecture",
}
# Words that describe how or when a figure was made, not the software.
PROCESS_WORDS = re.compile(r"\b(owed|lent|re-measured|we measured|was measured|at commit)\b", re.IGNORECASE)

FENCE = re.compile(r"^```[^\n]*\n.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def prose(text: str) -> str:
    """The text without code blocks, code spans and comments, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", HTML_COMMENT.sub("", text)))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            title = match.group(1).strip().lower().replace("`", "")
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return found


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def first_bash_block(text: str) -> str:
    match = re.search(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no bash block"
    return match.group(1)


def test_the_readme_is_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= MOST_BYTES, f"README.md is {size} bytes: move details into docs/"


def test_the_first_bash_block_holds_the_two_commands() -> None:
    commands = [line.split("#")[0].strip() for line in first_bash_block(README.read_text()).splitlines()]
    assert "bash scripts/quickstart.sh" in commands
    assert ".venv/bin/python -m pytest" in commands


def test_every_relative_link_resolves_to_a_file_and_heading() -> None:
    broken = []
    for page in pages():
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.is_file():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_table_of_contents_names_a_page_per_topic() -> None:
    section = README.read_text().split("## Documentation", 1)
    assert len(section) == 2, "README.md has no '## Documentation' section"
    named = {Path(target).stem for target in LINK.findall(section[1].split("\n## ", 1)[0])}
    assert named >= TOPICS, f"the table of contents lacks {sorted(TOPICS - named)}"
    for topic in TOPICS:
        assert (DOCS / f"{topic}.md").is_file(), f"docs/{topic}.md is missing"


def test_the_readme_says_what_the_software_does_not_how_figures_were_made() -> None:
    found = sorted({match.group(0) for match in PROCESS_WORDS.finditer(README.read_text())})
    assert not found, f"README.md describes how figures were made: {found}"


def test_the_helpers_see_what_they_should() -> None:
    """The link and anchor readers themselves: a broken reader would pass every page."""
    assert anchors(DOCS / "performance.md") >= {"summary", "the-speed-budget", "studies-several-folds-at-once"}
    assert "docs/results.png" in links(README)
    assert links(DOCS / "explain.md"), "docs/explain.md shows its pictures"
