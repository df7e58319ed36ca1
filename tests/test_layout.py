"""Size limits of the product code: no function over 80 lines, no file over 500 lines (issue 13).

Product code is the seven packages and the two scripts (``tests/`` and ``bench/`` are not product).
A function's length runs from its ``def`` line to its last line, docstring and comments included;
methods and nested functions count on their own too (a nested function also counts inside its parent).
A file's length is its number of lines.
"""

from __future__ import annotations

import ast

from conftest import ROOT, product_files

MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500


def long_functions(source: str, path: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line: name is N lines (limit L)`` for every function or method of ``source`` longer than ``limit``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{path}:{node.lineno}: {node.name} is {length} lines (limit {limit})")
    return found


def long_file(source: str, path: str, limit: int = MAX_FILE_LINES) -> list[str]:
    """``path: N lines (limit L)`` when ``source`` has more than ``limit`` lines, else nothing."""
    length = len(source.splitlines())
    return [f"{path}: {length} lines (limit {limit})"] if length > limit else []


def _sources() -> list[tuple[str, str]]:
    return [(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")) for path in product_files()]


def test_no_product_function_is_over_80_lines() -> None:
    sources = _sources()
    assert len(sources) > 50  # the walk found the packages
    found = [line for path, source in sources for line in long_functions(source, path)]
    assert not found, "functions over the limit:\n" + "\n".join(found)


def test_no_product_file_is_over_500_lines() -> None:
    found = [line for path, source in _sources() for line in long_file(source, path)]
    assert not found, "files over the limit:\n" + "\n".join(found)


def test_limits_are_measured_from_def_to_last_line_and_per_file() -> None:
    """The measures on synthetic code: an 81-line method and a 501-line file are caught, 80 and 500 pass."""
    body = "".join(f"        x{i} = {i}\n" for i in range(79))  # def line + 79 body lines = 80
    source = f"class C:\n    def fits(self) -> None:\n{body}\n    async def over(self) -> None:\n{body}        pass\n"
    assert long_functions(source, "pkg/m.py") == ["pkg/m.py:83: over is 81 lines (limit 80)"]
    assert long_file("x = 1\n" * 500, "pkg/m.py") == []
    assert long_file("x = 1\n" * 501, "pkg/m.py") == ["pkg/m.py: 501 lines (limit 500)"]
