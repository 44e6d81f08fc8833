"""What an event means for the journeys a user is already in: a goal reached (converted, and
the journey ends), an exit_on event (it ends), or the event a wait_for step waits for (it goes
on)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.engine import conditions, program, staff_format
from service.engine.decisions import end_journey, record
from service.engine.facts import Trigger, user_facts
from service.engine.index import CompiledRule, RuleIndex
from service.engine.steps import advance
from service.engine.versions import rule_for
from service.models import Journey, User


def journeys_see(
    session: Session,
    index: RuleIndex,
    user: User,
    trigger: Trigger,
    at: dt.datetime,
    now: dt.datetime,
) -> None:
    """Goals, exits and waits of the user's journeys that this event (a tracked event, or
    Lifeline's own lifecycle.stage_changed) answers; `at` is when it happened."""
    for journey in _journeys_an_event_may_answer(session, user, at):
        compiled = rule_for(session, index, journey)
        if compiled is None:
            if journey.ended_at is None:
                end_journey(session, user, journey, now, "rule removed from the rule set")
            continue
        facts = conditions.Facts(now, user_facts(user), trigger.properties, trigger.name)
        if _reaches_goal(compiled.rule.goal, journey, trigger, at, facts):
            _convert(session, user, journey, trigger, at, now)
        elif journey.ended_at is not None:
            continue
        elif trigger.name in compiled.rule.exit_on:
            end_journey(session, user, journey, now, f"exit_on {trigger.name!r}")
        elif _is_awaited(compiled, journey, trigger, facts):
            journey.waiting_for = journey.wake_at = None
            journey.pc += 1
            record(
                session,
                user,
                now,
                "event_came",
                f"{trigger.name!r} came",
                journey=journey,
                event_id=trigger.event_id,
            )
            advance(session, index, compiled, journey, user, now)


def _journeys_an_event_may_answer(session: Session, user: User, at: dt.datetime) -> list[Journey]:
    """The user's running journeys, and ended ones whose goal an event at `at` may still reach."""
    # Journeys are flushed when they are created; their later in-memory changes (pc, end)
    # are what journeys_see reads. So no flush of the whole session is needed first, which
    # would write the batch's users and events one event at a time.
    with session.no_autoflush:
        return list(
            session.scalars(
                select(Journey)
                .where(
                    Journey.profile_id == user.id,
                    or_(
                        Journey.ended_at.is_(None),
                        (Journey.converted_at.is_(None)) & (Journey.goal_deadline >= at),
                    ),
                )
                .order_by(Journey.id)
            )
        )


def _reaches_goal(
    goal: staff_format.Goal | None,
    journey: Journey,
    trigger: Trigger,
    at: dt.datetime,
    facts: conditions.Facts,
) -> bool:
    return (
        goal is not None
        and journey.converted_at is None
        and trigger.name == goal.event
        and journey.goal_deadline is not None
        and at <= journey.goal_deadline
        and (goal.where is None or conditions.evaluate(goal.where, facts))
    )


def _convert(
    session: Session,
    user: User,
    journey: Journey,
    trigger: Trigger,
    at: dt.datetime,
    now: dt.datetime,
) -> None:
    """The journey's goal was reached at `at`; a journey still running ends there."""
    journey.converted_at = at
    record(
        session,
        user,
        now,
        "converted",
        f"goal {trigger.name!r} reached",
        journey=journey,
        event_id=trigger.event_id,
    )
    if journey.ended_at is None:
        end_journey(session, user, journey, now, "goal reached")


def _is_awaited(
    compiled: CompiledRule, journey: Journey, trigger: Trigger, facts: conditions.Facts
) -> bool:
    """Whether the journey waits for this event (and it matches what the wait asks for)."""
    step = compiled.program[journey.pc]
    return (
        isinstance(step, program.WaitFor)
        and journey.waiting_for == trigger.name
        and _wait_matches(step.spec, journey, facts)
    )


def _wait_matches(
    spec: staff_format.WaitForSpec, journey: Journey, facts: conditions.Facts
) -> bool:
    if spec.match is not None:
        expected = conditions.lookup(journey.trigger_properties or {}, spec.match)
        if (
            expected is conditions.MISSING
            or conditions.lookup(facts.properties, spec.match) != expected
        ):
            return False
    return spec.where is None or conditions.evaluate(spec.where, facts)
