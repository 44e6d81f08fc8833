"""Scheduled rules: a cron expression read in each user's own timezone.

Users are grouped by timezone; for each scheduled rule and timezone, `schedule_runs` keeps
when it last fired. A tick fires every (rule, timezone) whose next cron time has passed, for
the users of that timezone only. A rule seen for the first time starts from now: it does not
fire for times before it was loaded.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.engine import entry
from service.engine.facts import Trigger
from service.engine.index import CompiledRule, RuleIndex
from service.models import ScheduleRun, User


def next_fire(cron: str, after: dt.datetime, timezone: str) -> dt.datetime:
    local = after.astimezone(zoneinfo.ZoneInfo(timezone))
    fire: dt.datetime = croniter(cron, local).get_next(dt.datetime)
    return fire.astimezone(dt.UTC)


def timezones(session: Session, index: RuleIndex) -> list[str]:
    zone = func.coalesce(User.timezone, index.policy.default_timezone)
    return list(session.scalars(select(zone).where(User.erased_at.is_(None)).distinct()))


def _run_for(
    session: Session, compiled: CompiledRule, timezone: str, now: dt.datetime
) -> ScheduleRun | None:
    """The schedule's state for this timezone, locked; created (fired as of now) when new."""
    cron = compiled.rule.trigger.schedule.cron  # type: ignore[union-attr]
    run = session.scalar(
        select(ScheduleRun)
        .where(ScheduleRun.rule_id == compiled.id, ScheduleRun.timezone == timezone)
        .with_for_update(skip_locked=True)
    )
    if run is None:
        run = ScheduleRun(rule_id=compiled.id, timezone=timezone, cron=cron, last_fired_at=now)
        session.add(run)
        session.flush()
        return None
    if run.cron != cron:  # the schedule changed: start again from now
        run.cron, run.last_fired_at = cron, now
        return None
    return run


def due_moment(session: Session, index: RuleIndex, now: dt.datetime) -> dt.datetime | None:
    """The next time any schedule fires (for the simulator's virtual clock)."""
    moments = []
    for compiled in index.on_schedule:
        cron = compiled.rule.trigger.schedule.cron  # type: ignore[union-attr]
        for timezone in timezones(session, index):
            run = session.get(ScheduleRun, (compiled.id, timezone))
            after = run.last_fired_at if run and run.cron == cron else now
            moments.append(next_fire(cron, after, timezone))
    return min(moments) if moments else None


def fire_due(session: Session, index: RuleIndex, now: dt.datetime) -> int:
    """Enter the users of every (scheduled rule, timezone) whose cron time has come."""
    entered = 0
    for compiled in index.on_schedule:
        for timezone in timezones(session, index):
            run = _run_for(session, compiled, timezone, now)
            if run is None:
                continue
            fire = next_fire(run.cron, run.last_fired_at, timezone)
            if fire > now:
                continue
            run.last_fired_at = fire
            in_zone = func.coalesce(User.timezone, index.policy.default_timezone) == timezone
            users = session.scalars(
                select(User).where(in_zone, User.erased_at.is_(None)).order_by(User.id)
            )
            trigger = Trigger(
                "schedule",
                {"cron": run.cron, "timezone": timezone},
                None,
                f"schedule {run.cron!r} ({timezone})",
            )
            for user in list(users):
                if entry.try_enter(session, index, compiled, user, fire, trigger, budget=None):
                    entered += 1
    return entered
