"""`lifeline sources create|list|revoke`, as an operator runs them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.cli import main
from service.kit.settings import get_settings

TRACK = {"userId": "u-1", "event": "Signed Up"}


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI reads LIFELINE_DATABASE_URL, like the running service."""
    monkeypatch.setenv("LIFELINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_created_key_is_printed_last_and_works_until_revoked(
    cli_database: str, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "sources", "create", "web")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("ll_") and " " not in key

    response = await client.post("/v1/track", auth=(key, ""), json=TRACK)
    assert response.status_code == 200, response.text

    code, out, _ = run(capsys, "sources", "revoke", "web")
    assert code == 0
    assert "web" in out
    response = await client.post("/v1/track", auth=(key, ""), json=TRACK)
    assert response.status_code == 401, response.text


async def test_duplicate_and_unknown_names_fail_with_a_clear_message(
    cli_database: str, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "sources", "create", "web")
    assert code == 0
    first_key = out.strip().splitlines()[-1]

    code, out, err = run(capsys, "sources", "create", "web")
    assert code != 0
    assert "already exists" in err and "web" in err
    assert "ll_" not in out  # no second key was made
    response = await client.post("/v1/track", auth=(first_key, ""), json=TRACK)
    assert response.status_code == 200, response.text  # and the first one still works

    code, _, err = run(capsys, "sources", "revoke", "nosuch")
    assert code != 0
    assert "no source named 'nosuch'" in err

    assert run(capsys, "sources", "revoke", "web")[0] == 0
    code, _, err = run(capsys, "sources", "revoke", "web")
    assert code != 0
    assert "already revoked" in err

    code, _, err = run(capsys, "sources", "create", "   ")
    assert code != 0
    assert "1 to 100 characters" in err


def test_list_shows_each_source_and_its_state_but_never_a_key(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "sources", "list")
    assert code == 0
    assert "no sources yet" in out

    keys = {}
    for name in ("web", "ios"):
        code, out, _ = run(capsys, "sources", "create", name)
        assert code == 0
        keys[name] = out.strip().splitlines()[-1]
    assert run(capsys, "sources", "revoke", "ios")[0] == 0

    code, out, _ = run(capsys, "sources", "list")
    assert code == 0
    rows = {line.split("\t")[0]: line for line in out.strip().splitlines()}
    assert set(rows) == {"web", "ios"}
    assert rows["web"].endswith("active")
    assert "revoked" in rows["ios"]
    for name, key in keys.items():
        assert key not in out
        assert key[:8] in rows[name]  # the prefix, to tell keys apart
