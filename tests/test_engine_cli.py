"""`lifeline rules simulate`, `lifeline rules test` and `lifeline users explain`, as staff run
them: what they print and the exit codes scripts and CI rely on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from service.cli import main
from service.engine.loader import load_rules
from service.kit.settings import get_settings
from tests.helpers.engine import START, identify, index_of, ingest, track
from tests.helpers.rules import QUIET_NIGHTS, RulePack, version_of, write

RULES = """
rules:
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome}
      - wait: 1d
      - send: {channel: sms, template: nudge}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").policy(QUIET_NIGHTS).rules(RULES).write()


@pytest.fixture
def timeline(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [
        identify(email="ada@example.com", phone="+14155550100"),
        track("Signed Up", "12h"),  # 22:00 UTC: the sms a day later falls in quiet hours
    ]
    path.write_text("# a user signs up\n" + "\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_simulate_prints_each_decision_and_what_would_be_sent(
    capsys: pytest.CaptureFixture[str], folder: Path, timeline: Path
) -> None:
    code, out, _ = run(
        capsys,
        "rules",
        "simulate",
        str(folder),
        "--events",
        str(timeline),
        "--start",
        "2026-01-05T10:00:00Z",
        "--run-for",
        "3d",
        "--user",
        "ada",
    )
    assert code == 0
    version = version_of(load_rules(folder), "welcome")
    lines = out.splitlines()
    assert lines[0].startswith("rules version ") and "user ada; nothing is sent" in lines[0]
    assert f"2026-01-05 22:00 UTC  SEND        welcome@{version}" in out
    assert "email 'welcome'" in out
    assert "DEFER" in out and "(goes out 2026-01-07 08:00 UTC)" in out
    assert lines[-1] == "2 messages would be sent; final stage: new"


def test_simulate_json_names_channel_template_and_send_time(
    capsys: pytest.CaptureFixture[str], folder: Path, timeline: Path
) -> None:
    code, out, _ = run(
        capsys,
        "rules",
        "simulate",
        str(folder),
        "--events",
        str(timeline),
        "--start",
        "2026-01-05T10:00:00Z",
        "--json",
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    sent = [(r["outcome"], r["channel"], r["template"], r["sendAt"]) for r in rows if r["channel"]]
    assert sent == [
        ("queued", "email", "welcome", "2026-01-05T22:00:00+00:00"),
        ("deferred", "sms", "nudge", "2026-01-07T08:00:00+00:00"),
    ]


def test_simulate_exit_codes(
    capsys: pytest.CaptureFixture[str], folder: Path, timeline: Path, tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "rules", "simulate", str(folder), "--events", str(timeline), "--start", "soon"
    )
    assert code == 2 and "error:" in err

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"event": "Signed Up", "at": "1h"}\n{not json\n')
    code, _, err = run(capsys, "rules", "simulate", str(folder), "--events", str(bad_json))
    assert code == 1 and f"{bad_json}:2: not JSON" in err

    bad_time = tmp_path / "bad-time.jsonl"
    bad_time.write_text('{"event": "Signed Up", "at": "next tuesday"}\n')
    code, _, err = run(capsys, "rules", "simulate", str(folder), "--events", str(bad_time))
    assert code == 1 and "line 1: 'next tuesday' is neither a time" in err

    write(folder, "rules.yaml", RULES.replace("template: nudge", "template: nudgy"))
    code, out, err = run(capsys, "rules", "simulate", str(folder), "--events", str(timeline))
    assert code == 1 and out == ""
    assert "unknown template 'nudgy'" in err and "1 errors in" in err


PASSING = """
tests:
  - name: welcome, then a nudge a day later
    user: {traits: {email: ada@example.com, phone: "+14155550100"}}
    events:
      - {event: Signed Up, at: 1h}
    run_for: 3d
    expect:
      sends:
        - {rule: welcome, channel: email, template: welcome, at: 1h}
        - {rule: welcome, channel: sms, template: nudge, at: 1d1h}
      decisions:
        - {rule: welcome, outcome: ended, reason: completed}
      stage: new
"""

FAILING = """
tests:
  - name: no phone, no sms
    user: {traits: {email: ada@example.com}}
    events:
      - {event: Signed Up, at: 1h}
    expect:
      sends:
        - {rule: welcome, channel: email, template: welcome}
        - {rule: welcome, channel: sms, template: nudge}
"""


def test_rules_test_passes_and_fails(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, _ = run(capsys, "rules", "test", str(folder))
    assert code == 1  # no tests at all is no green light
    assert out.strip().endswith("0 passed, 0 failed")

    write(folder, "tests/welcome.yaml", PASSING)
    code, out, _ = run(capsys, "rules", "test", str(folder))
    assert code == 0, out
    assert "PASS" in out and "welcome, then a nudge a day later" in out
    assert out.strip().endswith("1 passed, 0 failed")

    write(folder, "tests/no-phone.yaml", FAILING)
    code, out, _ = run(capsys, "rules", "test", str(folder))
    assert code == 1
    assert "FAIL" in out and "no phone, no sms" in out
    assert "sends differ" in out and "welcome: email 'welcome' at +1h" in out
    assert out.strip().endswith("1 passed, 1 failed")


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("LIFELINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def test_users_explain_lists_decisions_oldest_first(
    capsys: pytest.CaptureFixture[str], cli_database: str, engine: Engine, folder: Path
) -> None:
    index = index_of(load_rules(folder))
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    code, out, _ = run(capsys, "users", "explain", "u-1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("user u-1: stage new;")
    assert "2 most recent decisions, oldest first" in lines[0]
    assert "ENTERED" in lines[1] and "welcome@" in lines[1] and "event 'Signed Up'" in lines[1]
    assert "QUEUED" in lines[2] and "email 'welcome'" in lines[2]
    assert lines[1].startswith("2026-01-05 10:00 UTC")

    code, out, _ = run(capsys, "users", "explain", "u-1", "--limit", "1")
    assert out.splitlines()[1:] == lines[2:]

    code, _, err = run(capsys, "users", "explain", "nobody")
    assert code == 1 and "no user 'nobody'" in err
