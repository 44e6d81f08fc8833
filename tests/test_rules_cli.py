"""`lifeline rules check` and `lifeline rules schema`, as staff run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.kit.settings import get_settings
from tests.helpers.rules import copy_minimal

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("LIFELINE_RULES_DIR", raising=False)
    return copy_minimal(tmp_path, monkeypatch)


def test_check_ok(rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", "rules"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"ok: 2 rules, 2 templates, version [0-9a-f]{12}\n", out), out


def test_check_defaults_to_the_configured_folder(
    rules: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules.rename("pack")
    monkeypatch.setenv("LIFELINE_RULES_DIR", "pack")
    (Path("pack") / "events.yaml").unlink()

    assert main(["rules", "check"]) == 1
    assert capsys.readouterr().out == (
        "pack/events.yaml:1:1: missing file: the event catalog listing every event name the "
        "product sends (events.yaml)\n"
        "1 error\n"
    )


def test_check_prints_every_error_and_fails(
    rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onboarding = rules / "onboarding.yaml"
    onboarding.write_text(
        onboarding.read_text()
        .replace("template: welcome}", "template: welcom}")
        .replace("wait: 2d", "wait: 2 days")
    )

    assert main(["rules", "check", "./rules/"]) == 1
    assert capsys.readouterr().out == (
        "rules/onboarding.yaml:7:42: unknown template 'welcom' (did you mean 'welcome'?): "
        "templates are the files in rules/templates/\n"
        "rules/onboarding.yaml:8:15: bad duration '2 days': write a number and a unit "
        "(m, h, d or w), e.g. 30m, 24h, 2d\n"
        "2 errors\n"
    )


def test_schema_writes_the_schema_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("pack").mkdir()

    assert main(["rules", "schema", "pack"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "wrote pack/rules.schema.json",
        "wrote pack/lifecycle.schema.json",
        "wrote pack/policy.schema.json",
        "wrote pack/events.schema.json",
        "wrote pack/template.schema.json",
    ]
    assert main(["rules", "schema", "pack"]) == 0
    assert capsys.readouterr().out == "the JSON Schemas in pack are up to date\n"
    assert (Path("pack") / "rules.schema.json").read_text() == (
        ROOT / "rules" / "rules.schema.json"
    ).read_text()


def test_exit_status_of_the_real_command(rules: Path) -> None:
    (rules / "policy.yaml").write_text("caps: [{max: 1, per: 1 day}]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LIFELINE_RULES_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "rules", "check"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == (
        "rules/policy.yaml:1:22: bad duration '1 day': write a number and a unit "
        "(m, h, d or w), e.g. 30m, 24h, 2d\n"
        "1 error\n"
    )
