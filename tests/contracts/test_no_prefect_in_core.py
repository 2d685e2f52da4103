"""src/syllabus is pure logic: nothing under it may import prefect (shared/design.md)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "syllabus"


def test_core_never_imports_prefect():
    offenders = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10  # the walk found the package
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(SRC)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "prefect"]
    assert offenders == []
