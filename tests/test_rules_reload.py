"""Hot reload: a changed rule set goes live once its files have settled, and an emptied rule
file is an error rather than the silent removal of its rules."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from service.engine.loader import RuleSet, RulesInvalid, load_rules
from service.engine.registry import RuleRegistry
from tests.helpers.rules import MINIMAL, settled


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MINIMAL, tmp_path / "rules"))


def test_an_empty_rule_file_is_an_error(folder: Path) -> None:
    (folder / "onboarding.yaml").write_text("")
    with pytest.raises(RulesInvalid) as caught:
        load_rules(folder)
    assert [str(e) for e in caught.value.errors] == [
        f"{folder / 'onboarding.yaml'}:1:1: this file is empty: delete the file to remove "
        "its rules, or write them under 'rules:'"
    ]


def test_a_change_goes_live_only_after_the_files_settle(folder: Path) -> None:
    registry = RuleRegistry(folder, check_every=0)
    first = registry.current()
    assert first is not None
    rule_file = folder / "onboarding.yaml"
    rule_file.write_text(rule_file.read_text().replace("wait: 2d", "wait: 3d"))

    assert registry.current() is first  # just written: may be half-saved, not loaded yet
    settled(rule_file)
    current = registry.current()
    assert current is not first
    assert current is not None and current.version != first.version


def test_every_caller_waits_for_the_first_load(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's threads all start at once: one loads the rules, the others must wait for
    it rather than see no rule set (and process events as if there were no rules)."""
    loading = threading.Event()

    def slow_load(directory: Path) -> RuleSet:
        loading.set()
        time.sleep(0.3)
        return load_rules(directory)

    monkeypatch.setattr("service.engine.registry.load_rules", slow_load)
    registry = RuleRegistry(folder)
    first = threading.Thread(target=registry.current)
    first.start()
    assert loading.wait(5)

    assert registry.current() is not None
    first.join(5)


def test_the_version_depends_on_the_content_not_on_where_the_folder_is(
    folder: Path, tmp_path: Path
) -> None:
    elsewhere = Path(shutil.copytree(folder, tmp_path / "deeper" / "copy"))
    assert load_rules(folder).version == load_rules(elsewhere).version
    (elsewhere / "onboarding.yaml").write_text(
        (elsewhere / "onboarding.yaml").read_text().replace("wait: 2d", "wait: 3d")
    )
    assert load_rules(folder).version != load_rules(elsewhere).version
