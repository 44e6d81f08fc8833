"""A copy of tests/fixtures/rules_minimal to break one file at a time."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from service.engine.loader import RulesInvalid, load_rules

MINIMAL = Path(__file__).parents[1] / "fixtures" / "rules_minimal"


def copy_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The minimal folder as ./rules in a fresh working directory, so errors name rules/..."""
    shutil.copytree(MINIMAL, tmp_path / "rules")
    monkeypatch.chdir(tmp_path)
    return Path("rules")


def write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def errors(folder: Path) -> list[str]:
    with pytest.raises(RulesInvalid) as raised:
        load_rules(folder)
    return [str(e) for e in raised.value.errors]
