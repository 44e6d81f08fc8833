"""The `lifeline` command itself: its help, and how it answers a mistake (one line, a non-zero
exit status, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.kit.settings import get_settings

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lifeline(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed executable, with the process commands workers.cli adds."""
    return subprocess.run(
        [str(BIN / "lifeline"), *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100", **env},
        check=False,
    )


def test_help_lists_every_command_and_shows_each_default() -> None:
    done = lifeline("--help")
    assert done.returncode == 0, done.stderr
    for command in ("sources", "rules", "users", "messages", "migrate", "serve", "api", "worker"):
        assert f" {command} " in done.stdout
    assert "scheduler" in done.stdout

    done = lifeline("api", "--help")
    assert done.returncode == 0, done.stderr
    assert "[default: 127.0.0.1]" in done.stdout and "[default: 8000]" in done.stdout
    assert "[default: 1]" in done.stdout
    assert "twice the CPU count" in lifeline("worker", "--help").stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sources", "create"], "error: Missing argument 'NAME'."),
        (["sources", "crate", "web"], "error: No such command 'crate'. Did you mean 'create'?"),
        (["users", "explain", "u-1", "--limit", "lots"], "error: Invalid value for '--limit'"),
        (["rules", "simulate", "--events", "nosuch.jsonl"], "error: Invalid value for '--events'"),
        ([], "error: Missing command."),
    ],
)
def test_a_usage_mistake_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith(message) and err.count("\n") == 1, err
    assert "--help`)" in err


def test_an_invalid_setting_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELINE_SWEEP_INTERVAL_SECONDS", "-1")
    code, _, err = run(capsys, "sources", "list")
    assert code == 2
    assert err == "error: LIFELINE_SWEEP_INTERVAL_SECONDS: Input should be greater than 0\n"


def test_a_database_that_cannot_be_reached_is_one_line() -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/lifeline"
    done = lifeline("sources", "list", LIFELINE_DATABASE_URL=unreachable)
    assert done.returncode == 1
    assert done.stderr.startswith("error: the database refused the command (OperationalError)")
    assert done.stderr.count("\n") == 1, done.stderr

    done = lifeline("migrate", LIFELINE_DATABASE_URL="no url at all")
    assert done.returncode == 1
    assert done.stderr == (
        "error: LIFELINE_DATABASE_URL: Could not parse SQLAlchemy URL from given URL string\n"
    )
