"""Every relative link and every backticked repository path in README.md and docs/*.md exists (a link's
#anchor too), and no file of the repository names a Markdown file the repository does not hold: a
clone has only what is committed, so a reference to a note kept elsewhere dangles."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_DIRS = ("xcoin_trading/", "xcoin_pipelines/", "dbt_like_sql/", "tests/", "benchmarks/", "examples/",
            "docs/", ".ci/")  # fmt: skip
TOP_FILES = {"Makefile", "pyproject.toml", "workspace.yaml", "README.md"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SOURCES = ("*.py", "*.toml", "*.yaml", "*.sql", "*.md", "run", "Makefile")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def repo_paths(text: str) -> list[str]:
    """Backticked words that name a file or folder of the repository."""
    found = []
    for code in CODE.findall(FENCE.sub("", text)):
        for word in code.split():
            word = word.rstrip(".,;:)")
            if word.startswith(TOP_DIRS) or word in TOP_FILES:
                found.append(word)
    return found


def dangling(page: Path) -> list[str]:
    """What one page names that the repository does not hold."""
    text = page.read_text()
    problems = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"link {target}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"link {target}: no such heading")
    for path in repo_paths(text):
        if re.search(r"[<{]", path):  # a placeholder: the part before it must exist
            path = re.split(r"[<{]", path)[0].rsplit("/", 1)[0]
        if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
            problems.append(f"path {path}")
    return problems


def test_every_link_and_repository_path_in_the_docs_exists():
    assert len(PAGES) >= 14
    problems = {page.name: dangling(page) for page in PAGES}
    assert {name: p for name, p in problems.items() if p} == {}


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {t.partition("#")[0] for t in LINK.findall((ROOT / "README.md").read_text())}
    pages = {f"docs/{page.name}" for page in PAGES[1:]}
    assert pages - linked == set()


def test_the_check_finds_what_dangles(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[ok](page.md#title) [gone](nowhere.md) [bad anchor](page.md#nope)\n"
        "`xcoin_trading/no_such_module.py`, `tests/*.nothing` and `xcoin_trading/risk.py`\n"
        "```bash\ncat `tests/inside_a_fence_is_not_checked.py`\n```\n"
    )
    assert dangling(page) == [
        "link nowhere.md",
        "link page.md#nope: no such heading",
        "path xcoin_trading/no_such_module.py",
        "path tests/*.nothing",
    ]


def test_no_file_names_a_markdown_file_the_repository_lacks():
    held = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    problems = []
    for top in [*TOP_DIRS, *TOP_FILES]:
        for pattern in SOURCES:
            for file in (ROOT / top).rglob(pattern) if (ROOT / top).is_dir() else [ROOT / top]:
                if file == Path(__file__):  # its own example of a dangling page
                    continue
                if not file.is_file() or "__pycache__" in file.parts or not file.match(pattern):
                    continue
                for name in re.findall(r"[\w./-]+\.md\b(?!\()", file.read_text(errors="replace")):
                    if Path(name).name not in held:
                        problems.append(f"{file.relative_to(ROOT)}: {name}")
    assert sorted(set(problems)) == []
