"""Running the rule set for one user over a timeline, on a virtual clock. Nothing is sent.

The simulation is the real engine — event processing, lifecycle, journeys, policy — against a
throwaway SQLite database, with the clock jumping from one due moment to the next: waits of
days take no time, and what it reports is what the service would do.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

import service.models  # noqa: F401  (every table on Base.metadata)
from service.engine import due, schedules
from service.engine.index import RuleIndex
from service.engine.loader import RuleSet
from service.ingest.schemas import InvalidRequest, parse_single
from service.ingest.service import event_rows
from service.kit.db import Base, create_sync_engine, unit_of_work
from service.kit.durations import parse_duration
from service.models import Decision, Device, Event, Journey, Message, Source, User
from service.processing.service import process_events

SENT = ("queued", "deferred")


class TimelineError(ValueError):
    """A timeline line that cannot be simulated; says which line and why."""


@dataclass(frozen=True)
class Outcome:
    at: dt.datetime
    outcome: str  # queued, deferred, skipped, entered, holdout, converted, ...
    rule: str | None
    rule_version: str | None
    reason: str
    channel: str | None = None
    template: str | None = None
    send_at: dt.datetime | None = None

    @property
    def is_send(self) -> bool:
        return self.outcome in SENT


@dataclass
class Result:
    outcomes: list[Outcome]
    stage: str | None

    @property
    def sends(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.is_send]


def _when(value: Any, start: dt.datetime, line: int) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        if value.strip() in ("0", "0m", "0s", "0h", "0d"):
            return start
        try:
            return start + parse_duration(value)
        except ValueError:
            pass
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TimelineError(
                f"line {line}: {value!r} is neither a time (ISO 8601) nor an "
                "offset from the start such as 2d"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise TimelineError(f"line {line}: give a time (timestamp or at)")


@dataclass(frozen=True)
class TimelineItem:
    at: dt.datetime
    line: int
    call: dict[str, Any]


def read_timeline(
    items: Iterable[dict[str, Any]], user_id: str, start: dt.datetime
) -> list[TimelineItem]:
    """Timeline lines are Segment calls (type defaults to track) with `timestamp` or `at`
    (an offset from the start, e.g. 2d), plus {"type": "device", "platform", "token"}."""
    timeline = []
    for line, raw in enumerate(items, start=1):
        if not isinstance(raw, dict):
            raise TimelineError(f"line {line}: expected a JSON object")
        call = dict(raw)
        at = _when(call.pop("at", None) or call.get("timestamp"), start, line)
        call.setdefault("type", "track")
        call.setdefault("userId", user_id)
        call["timestamp"] = at.isoformat()
        timeline.append(TimelineItem(at, line, call))
    return sorted(timeline, key=lambda item: (item.at, item.line))


class Simulation:
    def __init__(self, ruleset: RuleSet):
        self.index = RuleIndex.from_ruleset(ruleset)
        self._dir = tempfile.TemporaryDirectory(prefix="lifeline-simulate-")
        self.engine: Engine = create_sync_engine(f"sqlite:///{Path(self._dir.name) / 'sim.db'}")
        Base.metadata.create_all(self.engine)
        with unit_of_work(self.engine) as uow:
            source = Source(
                name="simulation",
                key_hash="-" * 64,
                key_prefix="-",
                created_at=dt.datetime.now(dt.UTC),
            )
            uow.session.add(source)
            uow.session.flush()
            self.source_id = source.id
        self.clock = dt.datetime.now(dt.UTC)

    def close(self) -> None:
        self.engine.dispose()
        self._dir.cleanup()

    def run(self, timeline: list[TimelineItem], until: dt.datetime) -> Result:
        if timeline:
            self.clock = timeline[0].at
        for item in timeline:
            self._run_due(item.at)
            if item.call["type"] == "device":
                self._add_device(item)
            else:
                self._ingest(item)
        self._run_due(until)
        return self._result()

    def _next_due(self) -> dt.datetime | None:
        with unit_of_work(self.engine) as uow:
            candidates = [
                uow.session.scalar(select(func.min(Journey.wake_at))),
                uow.session.scalar(select(func.min(User.due_at))),
                schedules.due_moment(uow.session, self.index, self.clock),
            ]
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    def _run_due(self, until: dt.datetime) -> None:
        while (moment := self._next_due()) is not None and moment <= until:
            with unit_of_work(self.engine) as uow:
                journeys = due.due_journey_ids(uow.session, moment, 1000)
                users = due.due_user_ids(uow.session, moment, 1000)
            for journey_id in journeys:
                with unit_of_work(self.engine) as uow:
                    due.run_journey(uow.session, self.index, journey_id, moment)
            for user_id in users:
                with unit_of_work(self.engine) as uow:
                    due.run_user(uow.session, self.index, user_id, moment)
            with unit_of_work(self.engine) as uow:
                schedules.fire_due(uow.session, self.index, moment)
            self.clock = moment
        self.clock = max(self.clock, until)

    def _ingest(self, item: TimelineItem) -> None:
        try:
            calls = parse_single(item.call, item.call["type"], 0)
        except (InvalidRequest, KeyError) as exc:
            message = exc.message if isinstance(exc, InvalidRequest) else str(exc)
            raise TimelineError(f"line {item.line}: {message}") from None
        with unit_of_work(self.engine) as uow:
            rows = event_rows(self.source_id, calls, item.at)
            events = [Event(**row) for row in rows]
            uow.session.add_all(events)
            uow.session.flush()
            process_events(uow.session, [e.id for e in events], self.index, now=item.at)
        with unit_of_work(self.engine) as uow:  # schedules start counting for a new timezone
            schedules.fire_due(uow.session, self.index, item.at)

    def _add_device(self, item: TimelineItem) -> None:
        with unit_of_work(self.engine) as uow:
            user = uow.session.scalar(select(User).where(User.user_id == item.call["userId"]))
            if user is None:
                raise TimelineError(f"line {item.line}: a device for a user not seen yet")
            uow.session.add(
                Device(
                    profile_id=user.id,
                    platform=str(item.call.get("platform")),
                    token=str(item.call.get("token")),
                    created_at=item.at,
                )
            )

    def _result(self) -> Result:
        with unit_of_work(self.engine) as uow:
            session = uow.session
            messages = {m.id: m for m in session.scalars(select(Message))}
            outcomes = []
            for d in session.scalars(select(Decision).order_by(Decision.at, Decision.id)):
                message = messages.get(d.message_id) if d.message_id else None
                outcomes.append(
                    Outcome(
                        at=d.at,
                        outcome=d.outcome,
                        rule=d.rule_id,
                        rule_version=d.rule_version,
                        reason=d.reason,
                        channel=message.channel if message else None,
                        template=message.template if message else None,
                        send_at=message.send_at if message else None,
                    )
                )
            stage = session.scalar(select(User.stage).order_by(User.id).limit(1))
        return Result(outcomes, stage)


def simulate(
    ruleset: RuleSet,
    calls: Iterable[dict[str, Any]],
    *,
    user_id: str = "simulated-user",
    start: dt.datetime | None = None,
    run_for: dt.timedelta = dt.timedelta(days=30),
) -> Result:
    start = start or dt.datetime.now(dt.UTC).replace(microsecond=0)
    timeline = read_timeline(calls, user_id, start)
    last = timeline[-1].at if timeline else start
    simulation = Simulation(ruleset)
    try:
        return simulation.run(timeline, last + run_for)
    finally:
        simulation.close()
