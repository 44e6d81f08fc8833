"""Running a journey's steps: sends, waits (for a time, until a local time of day, for an
event) and branches, from where the journey stands until it waits or ends."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from service.engine import conditions, policy, program, staff_format
from service.engine.decisions import end_journey, record
from service.engine.facts import Trigger, facts_for
from service.engine.index import CompiledRule, RuleIndex
from service.engine.planning import plan_message
from service.engine.versions import rule_for
from service.kit.durations import format_duration
from service.models import Journey, User


def advance(
    session: Session,
    index: RuleIndex,
    compiled: CompiledRule,
    journey: Journey,
    user: User,
    now: dt.datetime,
) -> None:
    """Run the journey's steps from where it stands until it waits or ends."""
    # Conditions of `if` steps see the journey's trigger: first_time asks about its event name.
    name = compiled.rule.trigger.event or compiled.rule.trigger.kind
    trigger = Trigger(name, journey.trigger_properties or {}, journey.trigger_event_id)
    while journey.ended_at is None:
        step = compiled.program[journey.pc]
        if isinstance(step, program.Send):
            plan_message(session, index, compiled, journey, user, step.spec, now)
            journey.pc += 1
        elif isinstance(step, program.Wait):
            journey.wake_at = _wake_time(step.spec, user, index, now)
            return
        elif isinstance(step, program.WaitFor):
            journey.waiting_for = step.spec.event
            journey.wake_at = now + step.spec.timeout
            return
        elif isinstance(step, program.If):
            passed = conditions.evaluate(step.condition, facts_for(session, user, now, trigger))
            journey.pc = journey.pc + 1 if passed else step.otherwise
        elif isinstance(step, program.Jump):
            journey.pc = step.target
        elif isinstance(step, program.Exit):
            end_journey(session, user, journey, now, f"exit: {step.reason}")
        else:
            end_journey(session, user, journey, now, "completed")


def wake(
    session: Session, index: RuleIndex, journey: Journey, user: User, now: dt.datetime
) -> None:
    """A journey's wait is over (a delay ran out, or a wait_for timed out)."""
    if user.erased_at is not None:  # the person asked to be forgotten while it waited
        end_journey(session, user, journey, now, "the user was erased")
        return
    compiled = rule_for(session, index, journey)
    if compiled is None:
        end_journey(session, user, journey, now, "rule removed from the rule set")
        return
    step = compiled.program[journey.pc]
    journey.wake_at = None
    if isinstance(step, program.WaitFor):
        journey.waiting_for = None
        journey.pc = step.on_timeout
        record(
            session,
            user,
            now,
            "timed_out",
            f"{step.spec.event!r} did not come within {format_duration(step.spec.timeout)}",
            journey=journey,
        )
    else:
        journey.pc += 1
    advance(session, index, compiled, journey, user, now)


def _wake_time(
    spec: staff_format.WaitSpec, user: User, index: RuleIndex, now: dt.datetime
) -> dt.datetime:
    if spec.for_ is not None:
        return now + spec.for_
    assert spec.until is not None
    zone = policy.user_zone(index.policy, user.timezone)
    return policy.next_local_time(now.astimezone(zone).replace(tzinfo=None), spec.until, zone)
