"""No function in ccedit/ is longer than 80 lines, unless a `# long: <reason>` comment says why.

A long function is split into named steps; where one must stay long, the comment sits on the line before its
`def` (or its decorators) or is the first comment of its body.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "ccedit"
MAX_LINES = 80
LONG_REASON = re.compile(r"#\s*long:\s*\S")


def function_lengths(path: Path) -> list[tuple[str, int, bool]]:
    """`(qualified name, lines from def to its last line, whether a `# long:` comment explains it)` for every
    function of the file, methods and nested functions included."""
    lines = path.read_text().splitlines()
    found = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = f"{scope}{child.name}" if hasattr(child, "name") else scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((name, child.end_lineno - child.lineno + 1, explained(child, lines)))
            visit(child, f"{name}." if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  else scope)

    visit(ast.parse(path.read_text()), "")
    return found


def explained(function: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> bool:
    """Whether the line before the function (its first decorator, if any) or the first comment in its body says
    `# long: <reason>`."""
    first = min([function.lineno, *(d.lineno for d in function.decorator_list)])
    if first >= 2 and LONG_REASON.search(lines[first - 2]):
        return True
    # from the line after `def`: a comment before the first statement is not part of the body's nodes
    first_comment = next((line for line in lines[function.lineno:function.end_lineno]
                          if line.lstrip().startswith("#")), "")
    return bool(LONG_REASON.search(first_comment))


def long_functions() -> dict[tuple[str, str], int]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, length, is_explained in function_lengths(path):
            if length > MAX_LINES and not is_explained:
                found[(path.relative_to(PACKAGE).as_posix(), name)] = length
    return found


def test_no_function_is_longer_than_80_lines_without_a_reason():
    unexplained = long_functions()
    listed = ", ".join(f"{path}:{name} ({length} lines)" for (path, name), length in sorted(unexplained.items()))
    assert not unexplained, f"split these into named steps, or mark them `# long: <reason>`: {listed}"


def test_the_rule_sees_methods_nested_functions_and_both_comment_places(tmp_path):
    def body(indent: str) -> str:
        return "\n".join(f"{indent}x{i} = {i}" for i in range(MAX_LINES))

    source = (f"class A:\n    def method(self):\n{body(' ' * 8)}\n\n"
              f"# long: one table written out\ndef marked():\n{body('    ')}\n\n"
              f"def commented():\n    # long: the steps share too much state to split\n{body('    ')}\n\n"
              f"def outer():\n    def inner():\n{body(' ' * 8)}\n    return inner\n\n"
              f"def short():\n    return 1\n")
    path = tmp_path / "sample.py"
    path.write_text(source)
    found = {name: (length > MAX_LINES, is_explained) for name, length, is_explained in function_lengths(path)}
    assert found == {"A.method": (True, False), "marked": (True, True), "commented": (True, True),
                     "outer": (True, False), "outer.inner": (True, False), "short": (False, False)}
