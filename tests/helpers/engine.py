"""Shorthands for the rule engine's tests: simulator timelines and what came of them, and the
engine on a real database with an explicit clock. Rules folders come from
tests.helpers.rules.RulePack."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.engine import due
from service.engine.index import RuleIndex
from service.engine.loader import RuleSet
from service.ingest.schemas import parse_single
from service.ingest.service import event_rows
from service.kit.db import unit_of_work
from service.models import Decision, Event, Journey, Message, Source
from service.processing.service import process_events
from service.processing.simulate import Outcome, Result, simulate

START = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)  # a Monday, 10:00 UTC


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
