"""The `lifeline` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from service.kit.logs import configure_logging
from service.kit.settings import Settings, get_settings

log = logging.getLogger("lifeline")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def migrate(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, "head")


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings)
    print("database is at the latest schema")
    return 0


def _uvicorn(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    if workers > 1:
        uvicorn.run(
            "workers.api:create_api",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
        return
    from workers.api import create_api

    uvicorn.run(
        create_api(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings)
    print(
        f"Lifeline on http://{args.host}:{args.port}  (database {settings.database_url}, "
        f"broker {settings.broker_url}); create a write key with `lifeline sources create NAME`"
    )
    _uvicorn(settings, args.host, args.port)
    return 0


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    _uvicorn(settings, args.host, args.port, args.workers)
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import run_workers

    if settings.broker_url.startswith("memory://"):
        print(
            "lifeline worker needs a shared broker: set LIFELINE_BROKER_URL to redis://... or "
            "amqp://... (with the in-process broker, `lifeline serve` runs the worker itself)",
            file=sys.stderr,
        )
        return 2
    run_workers(settings, args.processes, args.threads)
    return 0


def _cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:

    from workers.actors import build_runtime
    from workers.scheduler import run_scheduler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime = build_runtime(settings)
    try:
        run_scheduler(runtime, stop)
    finally:
        runtime.close()
    return 0


def _with_session(settings: Settings, work: Callable[..., int]) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from service.kit.db import create_sync_engine, unit_of_work

    if make_url(settings.database_url).get_backend_name() == "sqlite":
        migrate(settings)  # the embedded default sets itself up, as `lifeline serve` does
    engine = create_sync_engine(settings.database_url)
    try:
        with unit_of_work(engine) as uow:
            return work(uow.session)
    except DBAPIError as exc:
        print(
            f"error: the database refused the command ({type(exc.orig).__name__}); "
            "is it reachable, and up to date (`lifeline migrate`)?",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


def _cmd_sources(args: argparse.Namespace, settings: Settings) -> int:
    from service.ingest import sources

    def create(session: object) -> int:
        created = sources.create_source(session, args.name)  # type: ignore[arg-type]
        print(f"created source {created.name!r}; its write key (shown only once):")
        print(created.write_key)
        return 0

    def list_(session: object) -> int:
        rows = sources.list_sources(session)  # type: ignore[arg-type]
        if not rows:
            print("no sources yet: lifeline sources create NAME")
        for s in rows:
            state = f"revoked {s.revoked_at:%Y-%m-%d %H:%M}" if s.revoked_at else "active"
            print(f"{s.name}\t{s.key_prefix}...\tcreated {s.created_at:%Y-%m-%d %H:%M}\t{state}")
        return 0

    def revoke(session: object) -> int:
        sources.revoke_source(session, args.name)  # type: ignore[arg-type]
        print(f"revoked source {args.name!r}: its write key is refused from now on")
        return 0

    action = {"create": create, "list": list_, "revoke": revoke}[args.action]
    try:
        return _with_session(settings, action)
    except sources.SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    directory: Path = args.dir if args.dir is not None else settings.rules_dir
    action: Callable[[argparse.Namespace, Path], int] = {
        "check": _rules_check,
        "schema": _rules_schema,
        "simulate": _rules_simulate,
        "test": _rules_test,
    }[args.action]
    return action(args, directory)


def _rules_check(args: argparse.Namespace, directory: Path) -> int:
    from service.engine.loader import RulesInvalid, load_rules

    try:
        ruleset = load_rules(directory)
    except RulesInvalid as exc:
        for error in exc.errors:
            print(error)
        count = len(exc.errors)
        print(f"{count} error{'' if count == 1 else 's'}")
        return 1
    print(
        f"ok: {len(ruleset.rules)} rules, {len(ruleset.templates)} templates, "
        f"version {ruleset.version[:12]}"
    )
    return 0


def _rules_simulate(args: argparse.Namespace, directory: Path) -> int:
    from service.processing.commands import simulate_command

    return simulate_command(directory, args.events, args.user, args.start, args.run_for, args.json)


def _rules_test(args: argparse.Namespace, directory: Path) -> int:
    from service.processing.commands import test_command

    return test_command(directory)


def _cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from service.processing.commands import explain

    return _with_session(settings, lambda session: explain(session, args.user_id, args.limit))


def _cmd_messages(args: argparse.Namespace, settings: Settings) -> int:
    from service.delivery.messages import retry_failed
    from service.kit.db import utcnow

    if not (args.ids or args.rule or args.all_failed):
        print("error: choose messages: --id ID, --rule RULE or --all-failed", file=sys.stderr)
        return 2

    def retry(session: object) -> int:
        done = retry_failed(session, args.ids or [], args.rule, utcnow())  # type: ignore[arg-type]
        for message_id in done.missing:
            print(f"message {message_id}: no such message", file=sys.stderr)
        for message_id, status in done.not_failed.items():
            print(f"message {message_id}: {status}, not retried", file=sys.stderr)
        count = len(done.queued)
        print(
            f"{count} failed message{'' if count == 1 else 's'} queued again; "
            "the scheduler hands them to a worker"
        )
        return 1 if done.missing or done.not_failed else 0

    return _with_session(settings, retry)


def _rules_schema(args: argparse.Namespace, directory: Path) -> int:
    from service.engine.schema import write_schemas

    if not directory.is_dir():
        print(f"error: {directory} is not a folder", file=sys.stderr)
        return 1
    changed = write_schemas(directory)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"the JSON Schemas in {directory} are up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifeline",
        description="Lifeline: user lifecycle engagement. Settings come from LIFELINE_* "
        "environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace, Settings], int], help_: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        return sub

    serve = add(
        "serve",
        _cmd_serve,
        "Run everything in one process (migrates the database "
        "first). The embedded default needs no other service.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    api = add("api", _cmd_api, "Run the HTTP API (production; run migrate first).")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")

    worker = add("worker", _cmd_worker, "Run Dramatiq worker processes (production).")
    # Many processes with few threads each: a thread back from the database or a provider
    # otherwise waits for the GIL behind the others (see docs/scaling.md).
    worker.add_argument(
        "--processes",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="worker processes (default: twice the CPU count)",
    )
    worker.add_argument("--threads", type=int, default=2, help="jobs each process runs at once")

    add("scheduler", _cmd_scheduler, "Run the scheduler: sweeps that re-enqueue lost work.")
    add("migrate", _cmd_migrate, "Upgrade the database to the latest schema.")

    src = add("sources", _cmd_sources, "Manage event sources and their write keys.")
    actions = src.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("create", help="create a source; prints its write key last").add_argument(
        "name"
    )
    actions.add_parser("list", help="list sources")
    actions.add_parser("revoke", help="revoke a source's write key").add_argument("name")

    rules = add("rules", _cmd_rules, "Work with the rules folder (YAML rules and templates).")
    rule_actions = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_ in (
        ("check", "check every file; print each problem as file:line:column: message"),
        ("schema", "(re)write the JSON Schemas editors use to check the YAML files"),
    ):
        rule_actions.add_parser(action, help=help_, description=help_).add_argument(
            "dir",
            nargs="?",
            type=Path,
            metavar="DIR",
            help="the rules folder (default: LIFELINE_RULES_DIR, ./rules)",
        )
    simulate = rule_actions.add_parser(
        "simulate",
        help="run the rules for one user over a timeline of events on a virtual clock; "
        "prints what would be sent, when and why, and what was skipped and why (sends nothing)",
    )
    simulate.add_argument(
        "dir",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="the rules folder (default: LIFELINE_RULES_DIR, ./rules)",
    )
    simulate.add_argument(
        "--events",
        required=True,
        metavar="FILE.jsonl",
        help="one Segment call per line (type defaults to track), with `timestamp` or `at` "
        "(an offset from --start such as 2d); '-' reads standard input",
    )
    simulate.add_argument("--user", default="simulated-user", help="userId of the calls")
    simulate.add_argument("--start", help="ISO time the offsets count from (default: now)")
    simulate.add_argument(
        "--run-for", default="30d", help="how long to keep the clock running after the last event"
    )
    simulate.add_argument("--json", action="store_true", help="one JSON object per line")
    rule_actions.add_parser(
        "test", help="run the rule tests in DIR/tests/*.yaml (given events -> expected sends)"
    ).add_argument(
        "dir",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="the rules folder (default: LIFELINE_RULES_DIR, ./rules)",
    )

    users = add("users", _cmd_users, "Explain a user's rule decisions.")
    user_actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    explain = user_actions.add_parser(
        "explain", help="every rule decision for a user: outcome, reason and rule version"
    )
    explain.add_argument("user_id")
    explain.add_argument("--limit", type=int, default=200)

    messages = add("messages", _cmd_messages, "Work with queued, sent and failed messages.")
    message_actions = messages.add_subparsers(dest="action", required=True, metavar="ACTION")
    retry = message_actions.add_parser(
        "retry",
        help="queue failed messages again (checked again before sending); prints how many",
    )
    retry.add_argument(
        "--id", dest="ids", type=int, action="append", metavar="ID", help="a message id (repeat)"
    )
    retry.add_argument("--rule", help="the failed messages of this rule")
    retry.add_argument("--all-failed", action="store_true", help="every failed message")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic's ValidationError names the bad variable
        print(f"error: invalid LIFELINE_* setting:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return handler(args, settings)


def console() -> None:
    """The `lifeline` executable. `lifeline ... | head` ends quietly, as other tools do."""
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
