"""The shape of the code: no function in service/ or workers/ runs over 60 lines, counted from
its `def` line to the last line of its body, so each can be read on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONGEST = 60


def long_functions() -> list[str]:
    found = []
    for package in ("service", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.append(f"{where}: {node.name} is {length} lines")
    return found


def test_no_function_is_over_60_lines() -> None:
    too_long = long_functions()
    assert not too_long, f"functions over {LONGEST} lines:\n" + "\n".join(too_long)
