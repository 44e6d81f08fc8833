"""The `lifeline` command: the commands that need only the service (sources, rules, users,
messages, migrate). workers.cli adds the processes (serve, api, worker, scheduler) to `app`
and is the executable.

Each command imports what it uses when it runs, so `lifeline --help` and `lifeline rules
check` start without loading the whole service.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.kit.logs import configure_logging
from service.kit.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from service.engine.loader import RuleSet
    from service.processing.simulate import Outcome

PROJECT_ROOT = Path(__file__).resolve().parent.parent

app = typer.Typer(
    name="lifeline",
    help="Lifeline: user lifecycle engagement. Settings come from LIFELINE_* environment "
    "variables (see README).",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sources = typer.Typer(help="Manage event sources and their write keys.")
rules = typer.Typer(help="Work with the rules folder (YAML rules and templates).")
users = typer.Typer(help="Explain a user's rule decisions.")
messages = typer.Typer(help="Work with queued, sent and failed messages.")
app.add_typer(sources, name="sources")
app.add_typer(rules, name="rules")
app.add_typer(users, name="users")
app.add_typer(messages, name="messages")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on standard error; raise what this returns to end the command."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def load_settings() -> Settings:
    """The LIFELINE_* settings, with logging set up; an invalid one ends the command with a
    line per problem that names the variable."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        settings = get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            variable = "LIFELINE_" + str(error["loc"][0]).upper() if error["loc"] else "LIFELINE_*"
            reason = error["msg"].removeprefix("Value error, ")
            line = reason if reason.startswith(variable) else f"{variable}: {reason}"
            print(f"error: {line}", file=sys.stderr)
        raise typer.Exit(2) from None
    except SettingsError as exc:  # a value pydantic-settings cannot even parse
        raise fail(f"invalid LIFELINE_* setting: {exc}", 2) from None
    configure_logging(settings.log_level)
    return settings


# --- The database ------------------------------------------------------------------------------


@contextlib.contextmanager
def database_errors(
    question: str = "is it reachable, and up to date (`lifeline migrate`)?",
) -> Iterator[None]:
    """A database that cannot be reached or refuses a statement ends the command with one
    line instead of a traceback."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        yield
    except ArgumentError as exc:
        raise fail(f"LIFELINE_DATABASE_URL: {exc}") from None
    except DBAPIError as exc:
        raise fail(
            f"the database refused the command ({type(exc.orig).__name__}); {question}"
        ) from None


def migrate_database(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = settings.database_url
    with database_errors("is it reachable?"):
        command.upgrade(config, "head")


@contextlib.contextmanager
def session(settings: Settings) -> Iterator[Session]:
    """One transaction on the configured database, committed when the block ends (so end the
    command with an exit status after the block: raising inside rolls back)."""
    from sqlalchemy.engine import make_url

    from service.kit.db import create_sync_engine, unit_of_work

    with database_errors():
        if make_url(settings.database_url).get_backend_name() == "sqlite":
            migrate_database(settings)  # the embedded default sets itself up, as `serve` does
        engine = create_sync_engine(settings.database_url)
        try:
            with unit_of_work(engine) as uow:
                yield uow.session
        finally:
            engine.dispose()


RUNNING = "Running Lifeline"  # the help panel of migrate and of workers.cli's processes


@app.command(rich_help_panel=RUNNING)
def migrate() -> None:
    """Upgrade the database to the latest schema."""
    migrate_database(load_settings())
    print("database is at the latest schema")


# --- Sources -----------------------------------------------------------------------------------

SourceName = Annotated[
    str, typer.Argument(metavar="NAME", help="the source's name, 1 to 100 characters")
]


@sources.command("create")
def create_source(name: SourceName) -> None:
    """Create a source; prints its write key last (shown only this once)."""
    from service.ingest.sources import SourceError, create_source

    settings = load_settings()
    try:
        with session(settings) as db:
            created = create_source(db, name)
    except SourceError as exc:
        raise fail(str(exc)) from None
    print(f"created source {created.name!r}; its write key (shown only once):")
    print(created.write_key)


@sources.command("list")
def list_sources() -> None:
    """List the sources: name, key prefix, when created, active or revoked (never a key)."""
    from service.ingest.sources import list_sources

    with session(load_settings()) as db:
        rows = list_sources(db)
        if not rows:
            print("no sources yet: lifeline sources create NAME")
        for s in rows:
            state = f"revoked {s.revoked_at:%Y-%m-%d %H:%M}" if s.revoked_at else "active"
            print(f"{s.name}\t{s.key_prefix}...\tcreated {s.created_at:%Y-%m-%d %H:%M}\t{state}")


@sources.command("revoke")
def revoke_source(name: SourceName) -> None:
    """Revoke a source's write key: requests with it are refused from now on."""
    from service.ingest.sources import SourceError, revoke_source

    settings = load_settings()
    try:
        with session(settings) as db:
            revoke_source(db, name)
    except SourceError as exc:
        raise fail(str(exc)) from None
    print(f"revoked source {name!r}: its write key is refused from now on")


# --- Rules -------------------------------------------------------------------------------------

RulesDir = Annotated[
    Path | None,
    typer.Argument(
        help="the rules folder",
        show_default="LIFELINE_RULES_DIR, else ./rules",
        metavar="DIR",
    ),
]


def rules_folder(directory: Path | None) -> Path:
    return directory if directory is not None else load_settings().rules_dir


@rules.command("check")
def check_rules(directory: RulesDir = None) -> None:
    """Check every file; print each problem as file:line:column: message.

    Exits with status 1 when there is a problem, so CI can run it on every change."""
    from service.engine.loader import RulesInvalid, load_rules

    try:
        ruleset = load_rules(rules_folder(directory))
    except RulesInvalid as exc:
        for error in exc.errors:
            print(error)
        count = len(exc.errors)
        print(f"{count} error{'' if count == 1 else 's'}")
        raise typer.Exit(1) from None
    print(
        f"ok: {len(ruleset.rules)} rules, {len(ruleset.templates)} templates, "
        f"version {ruleset.version[:12]}"
    )


@rules.command("schema")
def write_rule_schemas(directory: RulesDir = None) -> None:
    """(Re)write the JSON Schemas editors use to check the YAML files."""
    from service.engine.schema import write_schemas

    folder = rules_folder(directory)
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    changed = write_schemas(folder)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"the JSON Schemas in {folder} are up to date")


def live_rules(folder: Path) -> RuleSet:
    """The rule set in `folder`; its errors end the command (on standard error)."""
    from service.engine.loader import RulesInvalid, load_rules

    try:
        return load_rules(folder)
    except RulesInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(
            f"{len(exc.errors)} errors in {folder}: fix them first (lifeline rules check)",
            file=sys.stderr,
        )
        raise typer.Exit(1) from None


@rules.command("test")
def test_rules(directory: RulesDir = None) -> None:
    """Run the rule tests in DIR/tests/*.yaml (given events -> expected sends).

    Exits with status 1 when a test fails, or when there are none."""
    from service.processing.ruletests import load_tests, run_test

    folder = rules_folder(directory)
    ruleset = live_rules(folder)
    tests, errors = load_tests(folder / "tests")
    for error in errors:
        print(error)
    failed = 0
    for file, test in tests:
        outcome = run_test(ruleset, test, file)
        if outcome.passed:
            print(f"PASS {file}: {test.name}")
            continue
        failed += 1
        print(f"FAIL {file}: {test.name}")
        for failure in outcome.failures:
            print("  " + failure.rstrip().replace("\n", "\n  "))
    print(f"{len(tests) - failed} passed, {failed + len(errors)} failed")
    if failed or errors or not tests:
        raise typer.Exit(1)


EventsFile = Annotated[
    typer.FileText,
    typer.Option(
        "--events",
        metavar="FILE.jsonl",
        encoding="utf-8",
        help="one Segment call per line (type defaults to track), with `timestamp` or `at` "
        "(an offset from --start such as 2d); '-' reads standard input",
    ),
]


@rules.command("simulate")
def simulate_rules(
    events: EventsFile,
    directory: RulesDir = None,
    user: Annotated[str, typer.Option(help="userId of the calls")] = "simulated-user",
    start: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="ISO time the offsets count from", show_default="now"),
    ] = None,
    run_for: Annotated[
        str,
        typer.Option(
            metavar="DURATION", help="how long to keep the clock running after the last event"
        ),
    ] = "30d",
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per line instead of text")
    ] = False,
) -> None:
    """Run the rules for one user over a timeline of events, on a virtual clock.

    Prints what would be sent, when and why, and what was skipped and why; sends nothing."""
    from service.kit.durations import parse_duration
    from service.processing.simulate import TimelineError, simulate

    ruleset = live_rules(rules_folder(directory))
    try:
        begin = dt.datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None
    except ValueError as exc:
        raise fail(f"--start: {exc}", 2) from None
    if begin is not None and begin.tzinfo is None:
        begin = begin.replace(tzinfo=dt.UTC)
    try:
        window = parse_duration(run_for)
    except ValueError as exc:
        raise fail(f"--run-for: {exc}", 2) from None
    with events:
        calls = read_timeline(events)
    try:
        result = simulate(ruleset, calls, user_id=user, start=begin, run_for=window)
    except TimelineError as exc:
        print(f"{events.name}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        for o in result.outcomes:
            print(json.dumps(outcome_json(o)))
        return
    print(f"rules version {ruleset.version[:12]}; user {user}; nothing is sent\n")
    for o in result.outcomes:
        print(format_outcome(o))
    sends = len(result.sends)
    print(
        f"\n{sends} message{'' if sends == 1 else 's'} would be sent; final stage: "
        f"{result.stage or '-'}"
    )


def read_timeline(lines: typer.FileText) -> list[dict[str, Any]]:
    """The calls of a timeline file: one JSON object a line; blank lines and # comments
    skipped."""
    calls: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            calls.append(json.loads(line))
        except json.JSONDecodeError as exc:
            print(f"{lines.name}:{number}: not JSON: {exc.msg}", file=sys.stderr)
            raise typer.Exit(1) from None
    return calls


def format_outcome(o: Outcome) -> str:
    what = o.outcome.upper()
    if o.is_send:
        what = "SEND" if o.outcome == "queued" else "DEFER"
    rule = f"{o.rule}@{o.rule_version}" if o.rule else "-"
    line = f"{o.at:%Y-%m-%d %H:%M} UTC  {what:<11} {rule:<34} {o.reason}"
    if o.outcome == "deferred" and o.send_at:
        line += f" (goes out {o.send_at:%Y-%m-%d %H:%M} UTC)"
    return line


def outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        "at": o.at.isoformat(),
        "outcome": o.outcome,
        "rule": o.rule,
        "ruleVersion": o.rule_version,
        "reason": o.reason,
        "channel": o.channel,
        "template": o.template,
        "sendAt": o.send_at.isoformat() if o.send_at else None,
    }


# --- Users and messages ------------------------------------------------------------------------


@users.command("explain")
def explain_user(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="the userId the product sends")],
    limit: Annotated[int, typer.Option(min=1, help="how many of the latest decisions")] = 200,
) -> None:
    """Every rule decision for a user, oldest first: outcome, reason and rule version."""
    from sqlalchemy import select

    from service.models import Decision, User

    with session(load_settings()) as db:
        user = db.scalar(select(User).where(User.user_id == user_id))
        rows: list[Decision] = []
        if user is not None:
            newest = select(Decision).where(Decision.profile_id == user.id)
            rows = list(db.scalars(newest.order_by(Decision.id.desc()).limit(limit)))
    if user is None:
        raise fail(f"no user {user_id!r}")
    print(
        f"user {user_id}: stage {user.stage or '-'}; "
        f"the {len(rows)} most recent decisions, oldest first"
    )
    for d in reversed(rows):
        rule = f"{d.rule_id}@{d.rule_version}" if d.rule_id else "-"
        print(f"{d.at:%Y-%m-%d %H:%M} UTC  {d.outcome.upper():<11} {rule:<34} {d.reason}")


@messages.command("retry")
def retry_messages(
    ids: Annotated[
        list[int] | None,
        typer.Option("--id", metavar="ID", help="a failed message's id; repeat for more"),
    ] = None,
    rule: Annotated[
        str | None, typer.Option(metavar="RULE", help="the failed messages of this rule")
    ] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="every failed message")] = False,
) -> None:
    """Queue failed messages again; prints how many.

    They are checked again before sending. --id and --rule narrow the choice: give one of
    them, or --all-failed."""
    from service.delivery.messages import retry_failed
    from service.kit.db import utcnow

    if not (ids or rule or all_failed):
        raise fail("choose messages: --id ID, --rule RULE or --all-failed", 2)
    with session(load_settings()) as db:
        done = retry_failed(db, ids or [], rule, utcnow())
    for message_id in done.missing:
        print(f"message {message_id}: no such message", file=sys.stderr)
    for message_id, status in done.not_failed.items():
        print(f"message {message_id}: {status}, not retried", file=sys.stderr)
    count = len(done.queued)
    print(
        f"{count} failed message{'' if count == 1 else 's'} queued again; "
        "the scheduler hands them to a worker"
    )
    if done.missing or done.not_failed:
        raise typer.Exit(1)


# --- Running -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: the process's arguments); returns the exit
    status. A usage mistake (a missing argument, an unknown option, a value of the wrong
    type) is one line on standard error and status 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="lifeline", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        # typer raises usage errors as its (vendored) click exceptions, which it does not
        # export: each has a message for the user and an exit status.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        context = getattr(exc, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0


def console() -> None:
    """Run `lifeline` and exit with its status. `lifeline ... | head` ends quietly, as other
    tools do."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    console()
