"""The README and docs/*.md, as a reader meets them (issue 31, item 5).

Every fenced ``bash``, ``sh`` or ``console`` block in README.md and docs/*.md runs, page by
page, in order, as one bash script, unless the line right before its fence is a marker:

- ``<!-- not-tested: REASON -->``: the block needs a server, a GPU, data outside the repository,
  a placeholder of the reader's, or hours with the real model; the reason is required and is
  listed by ``test_inventory_of_doc_blocks``;
- ``<!-- walk -->``: docs/your-own-data.md's walk, which tests/unit/test_own_data_walk.py runs on
  a tiny model;
- ``<!-- slow: REASON -->``: the block runs as written, with the real model, in the slow tier
  (``make test-all``), after the page's unmarked blocks.

A page's script runs in an empty folder whose ``.venv`` is the environment running the tests,
so ``.venv/bin/syllabus`` works as it does from the repository root and nothing the blocks write
lands in the checkout. After each block the script prints a line naming it, and the test
asserts that every unmarked block printed its line. Also here: the README stays at most 15 KB,
and every relative link in README.md and docs/*.md resolves to a file (and its ``#anchor`` to a
heading of that page).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SHELLS = {"bash", "sh", "console"}
MARKER = re.compile(r"^<!--\s*(not-tested|walk|slow)\b(.*?)-->\s*$")
README_LIMIT = 15_000  # bytes: "the README at most 15 KB"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # None (runs here), "slow" (runs here in the slow tier), "not-tested" or "walk"
    reason: str

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page.name
        return f"{page}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """Every fenced block of a page with the marker on the line before its fence."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang, start = opening.group(1), opening.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        before = lines[start - 1].strip() if start else ""
        mark = MARKER.match(before)
        marker = mark.group(1) if mark else None
        reason = mark.group(2).strip().lstrip(":").strip() if mark else ""
        found.append(Block(page, start + 1, lang, "\n".join(body), marker, reason))
    return found


def shell_blocks(page: Path) -> list[Block]:
    return [b for b in fenced_blocks(page) if b.lang in SHELLS]


def as_script_lines(block: Block) -> str:
    """A console block's commands are its ``$ `` lines (the rest is output); bash/sh run whole."""
    if block.lang != "console":
        return block.code
    return "\n".join(line[2:] for line in block.code.split("\n") if line.startswith("$ "))


def page_script(page: Path, slow: bool = False) -> tuple[str, list[Block]]:
    runnable = [b for b in shell_blocks(page) if b.marker is None or (slow and b.marker == "slow")]
    parts = ["set -euo pipefail"]
    for n, block in enumerate(runnable):
        parts += [f"# --- {block.where}", as_script_lines(block), f"printf '\\n::doc-block {n} ran ({block.where})\\n'"]
    return "\n".join(parts) + "\n", runnable


PAGES_WITH_COMMANDS = [p for p in PAGES if any(b.marker is None for b in shell_blocks(p))]
PAGES_WITH_SLOW_COMMANDS = [p for p in PAGES if any(b.marker == "slow" for b in shell_blocks(p))]


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_unmarked_shell_block_of_the_page_runs(page, tmp_path):
    _run_page(page, tmp_path, slow=False)


@pytest.mark.slow  # the blocks score with the real SmolLM2-135M: minutes on 2 cores
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", PAGES_WITH_SLOW_COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_slow_shell_blocks_of_the_page_run_with_the_real_model(page, tmp_path):
    _run_page(page, tmp_path, slow=True)


def _run_page(page: Path, tmp_path: Path, slow: bool) -> None:
    script, runnable = page_script(page, slow)
    work = tmp_path / "reader"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PREFECT_HOME=str(tmp_path / "prefect-home"),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for leaked in ("SYLLABUS_STORE", "PREFECT_API_URL"):
        env.pop(leaked, None)
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=1800 if slow else 600)
    tail = f"\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{page.name}: a block failed (exit {done.returncode}){tail}"
    ran = re.findall(r"^::doc-block (\d+) ran", done.stdout, re.M)
    assert [int(n) for n in ran] == list(range(len(runnable))), f"{page.name}: not every block ran{tail}"


def test_inventory_of_doc_blocks():
    """Every shell block is accounted for: it runs here, or a marker says why not (with a reason),
    or it is the walk that tests/unit/test_own_data_walk.py runs. Prints the list."""
    rows, problems = [], []
    for page in PAGES:
        for block in shell_blocks(page):
            if block.marker is None:
                rows.append(f"runs here   {block.where}")
            elif block.marker == "not-tested":
                rows.append(f"not tested  {block.where}: {block.reason}")
                if len(block.reason) < 10:
                    problems.append(f"{block.where}: <!-- not-tested --> needs a reason after a colon")
            elif block.marker == "slow":
                rows.append(f"slow tier   {block.where}: {block.reason}")
                if len(block.reason) < 10:
                    problems.append(f"{block.where}: <!-- slow --> needs a reason after a colon")
            else:
                rows.append(f"walk        {block.where} (tests/unit/test_own_data_walk.py)")
                if page.name != "your-own-data.md":
                    problems.append(f"{block.where}: <!-- walk --> blocks run only from docs/your-own-data.md")
    print("\n".join(rows))
    assert problems == []
    assert any(r.startswith("runs here   README.md") for r in rows), "the README's quick start shows no runnable command"
    assert sum(r.startswith("runs here") for r in rows) >= 8
    walk_test = (ROOT / "tests" / "unit" / "test_own_data_walk.py").read_text()
    assert "<!-- walk -->" in walk_test and "your-own-data.md" in walk_test


def test_a_marker_stands_right_before_a_fence():
    """A marker a blank line or a paragraph away from its block would silently not apply."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines):
            if MARKER.match(line.strip()):
                following = lines[n + 1] if n + 1 < len(lines) else ""
                assert following.startswith("```"), f"{page.relative_to(ROOT)}:{n + 1}: a marker must be the line before a fence"


def test_the_script_builder_reads_markers_and_console_blocks(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n```bash\necho one\n```\n\n<!-- not-tested: needs a server on port 4200 -->\n```bash\n"
                    "prefect server start\n```\n\n```console\n$ echo two\ntwo\n```\n\n```python\nprint(3)\n```\n"
                    "<!-- slow: scores with the real model for minutes -->\n```sh\necho three\n```\n")
    blocks = shell_blocks(page)
    assert [(b.lang, b.marker) for b in blocks] == [("bash", None), ("bash", "not-tested"), ("console", None), ("sh", "slow")]
    assert blocks[1].reason == "needs a server on port 4200"
    script, runnable = page_script(page)
    assert "prefect server" not in script and "echo two" in script and "\ntwo\n" not in script
    assert len(runnable) == 2 and "echo three" not in script
    slow_script, slow_runnable = page_script(page, slow=True)
    assert len(slow_runnable) == 3 and slow_script.index("echo two") < slow_script.index("echo three")


def test_readme_is_a_front_door_of_at_most_15_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; move detail to docs/ (the limit is {README_LIMIT:,})"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text and "Contents:" in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def test_slug_matches_github_for_the_headings_used_here():
    assert _slug("One override syntax: `--set`") == "one-override-syntax---set"
    assert _slug("The proof's cost") == "the-proofs-cost"
    assert _slug("IFD, Superfiltering and LESS") == "ifd-superfiltering-and-less"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading with that anchor)")
    assert broken == [], "\n".join(broken)
