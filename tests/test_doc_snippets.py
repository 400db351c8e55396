"""The README's Python snippets, and each docs page's, name nothing they do not define or import.

A snippet pasted alone must not stop at a ``NameError`` (the README's Ray snippet once used a
``gm`` defined only in an earlier one). Checked statically, without running the snippets (some
start Ray or step a million agents): every name a snippet reads is bound in it (assignment,
import, loop, ``def`` / ``class``, ``with ... as``) or is a builtin. A docs page reads top to
bottom, so its blocks are checked together, in order; the README's blocks each alone.
"""

from __future__ import annotations

import ast
import builtins
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def unbound_names(code: str) -> list[str]:
    """Names ``code`` reads that it never binds (and that are not builtins), in order of use."""
    tree = ast.parse(code)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    used = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return sorted(set(used) - bound, key=used.index)


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def docs_pages() -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / "docs").rglob("*.rst")
                  if not {"generated", "auto_examples", "_templates", "_build"} & set(p.parts))


def rst_code(page: pathlib.Path) -> str:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", page.read_text())
    return "\n".join("\n".join(line[3:] for line in b.splitlines()) for b in blocks)


def test_checker_catches_an_unbound_name():
    snippet = "import ray\npop = ShardedPopulation(gm, 10)"
    assert unbound_names(snippet) == ["ShardedPopulation", "gm"]
    assert unbound_names("from x import gm\nfor t in range(3):\n    y = gm(t)") == []


@pytest.mark.parametrize("i", range(len(readme_blocks())))
def test_readme_snippet_stands_alone(i):
    block = readme_blocks()[i]
    assert unbound_names(block) == [], f"README snippet {i} uses names it does not define:\n{block}"


@pytest.mark.parametrize("page", docs_pages(), ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_docs_page_code_defines_what_it_uses(page):
    assert unbound_names(rst_code(page)) == []
