"""Small rules folders for the rule engine's tests, and shorthands for simulator timelines.

Each test writes only the rules it is about; the lifecycle, policy, event catalog and
templates default to something neutral (no caps, no quiet hours) that a test can replace.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.engine import due
from service.engine.index import RuleIndex
from service.engine.loader import RuleSet, load_rules
from service.engine.registry import SETTLE_SECONDS
from service.ingest.schemas import parse_single
from service.ingest.service import event_rows
from service.kit.db import unit_of_work
from service.models import Decision, Event, Journey, Message, Source
from service.processing.service import process_events
from service.processing.simulate import Outcome, Result, simulate

START = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)  # a Monday, 10:00 UTC

LIFECYCLE = """
activation: {event: Product Used}
engagement: {event: Product Used, at_least: 3, within: 7d}
at_risk_after: 14d
churned_after: 30d
"""

EVENTS = (
    "Signed Up",
    "Product Used",
    "App Opened",
    "Checkout Started",
    "Order Completed",
    "Plan Changed",
    "Password Reset",
    "Unsubscribed",
)

TEMPLATES = ("welcome", "nudge", "reminder", "winback", "thanks", "receipt", "promo_a", "promo_b")


def write_rules(
    folder: Path,
    rules: str,
    *,
    policy: str = "{}",
    lifecycle: str = LIFECYCLE,
    events: tuple[str, ...] = EVENTS,
) -> Path:
    """A complete rules folder at `folder`; every template has an email, sms and push section
    whose text is the template's name."""
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    put(folder, "lifecycle.yaml", lifecycle)
    put(folder, "policy.yaml", policy)
    put(folder, "events.yaml", "events:\n" + "".join(f"  - {e}\n" for e in events))
    for name in TEMPLATES:
        put(
            folder,
            f"templates/{name}.yaml",
            f"""
            email: {{subject: "{name}", html: "<p>{name}</p>"}}
            sms: {{body: "{name}"}}
            push: {{title: "{name}", body: "{name}"}}
            """,
        )
    put(folder, "rules.yaml", rules)
    return folder


def settled(path: Path) -> None:
    """Age a just-written file past the registry's settling time, as if saved a while ago."""
    past = time.time() - SETTLE_SECONDS - 1
    os.utime(path, (past, past))


def put(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def ruleset(folder: Path, rules: str, **kwargs: Any) -> RuleSet:
    return load_rules(write_rules(folder, rules, **kwargs))


def version_of(rules: RuleSet, rule_id: str) -> str:
    loaded = rules.rule(rule_id)
    assert loaded is not None, rule_id
    return loaded.version


def identify(at: str = "0m", **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "at": at, "traits": traits}


def track(event: str, at: str = "0m", **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "at": at, "properties": properties}


def device(at: str = "0m") -> dict[str, Any]:
    return {"type": "device", "at": at, "platform": "ios", "token": "device-token"}


def contactable(at: str = "0m", **traits: Any) -> list[dict[str, Any]]:
    """A user reachable on every channel: email, phone and a push device."""
    traits = {"email": "ada@example.com", "phone": "+14155550100", **traits}
    return [identify(at, **traits), device(at)]


def run(
    rules: RuleSet,
    calls: list[dict[str, Any]],
    run_for: dt.timedelta = dt.timedelta(days=30),
    start: dt.datetime = START,
    user_id: str = "simulated-user",
) -> Result:
    return simulate(rules, calls, user_id=user_id, start=start, run_for=run_for)


def sends(result: Result) -> list[tuple[str | None, str | None, str | None]]:
    """(rule, channel, template) of every message, in order."""
    return [(s.rule, s.channel, s.template) for s in result.sends]


def of(result: Result, outcome: str, rule: str | None = None) -> list[Outcome]:
    return [o for o in result.outcomes if o.outcome == outcome and (rule is None or o.rule == rule)]


def reasons(result: Result, outcome: str, rule: str | None = None) -> list[str]:
    return [o.reason for o in of(result, outcome, rule)]


# --- The engine on a real database (the `engine` fixture's), with an explicit clock ----------


def index_of(rules: RuleSet) -> RuleIndex:
    return RuleIndex.from_ruleset(rules)


def ingest(
    engine: Engine,
    index: RuleIndex,
    calls: list[dict[str, Any]],
    at: dt.datetime,
    user_id: str = "u-1",
) -> list[int]:
    """Store `calls` (timestamped `at`) and process them together, as one worker job does
    with the events of concurrent requests; returns their ids."""
    with unit_of_work(engine) as uow:
        source = uow.session.scalar(select(Source.id).where(Source.name == "engine-tests"))
        if source is None:
            row = Source(name="engine-tests", key_hash="-" * 64, key_prefix="-", created_at=at)
            uow.session.add(row)
            uow.session.flush()
            source = row.id
        parsed = []
        for call in calls:
            full = {"userId": user_id, "timestamp": at.isoformat(), **call}
            parsed += parse_single(full, full.get("type", "track"), 0)
        events = [Event(**row) for row in event_rows(source, parsed, at)]
        uow.session.add_all(events)
        uow.session.flush()
        ids = [e.id for e in events]
        process_events(uow.session, ids, index, now=at)
    return ids


def run_due_journeys(engine: Engine, index: RuleIndex, now: dt.datetime) -> int:
    """What the scheduler does at `now` for journeys; returns how many woke."""
    with unit_of_work(engine) as uow:
        ids = due.due_journey_ids(uow.session, now, 1000)
    woke = 0
    for journey_id in ids:
        with unit_of_work(engine) as uow:
            woke += due.run_journey(uow.session, index, journey_id, now)
    return woke


def db_messages(engine: Engine) -> list[Message]:
    with unit_of_work(engine) as uow:
        return list(uow.session.scalars(select(Message).order_by(Message.id)))


def db_decisions(engine: Engine) -> list[Decision]:
    with unit_of_work(engine) as uow:
        return list(uow.session.scalars(select(Decision).order_by(Decision.id)))


def db_journeys(engine: Engine) -> list[Journey]:
    with unit_of_work(engine) as uow:
        return list(uow.session.scalars(select(Journey).order_by(Journey.id)))
