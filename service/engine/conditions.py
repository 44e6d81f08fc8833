"""Evaluating conditions against the facts about one user and (optionally) one event."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from service.engine import staff_format

MISSING = object()


def lookup(data: Any, path: str) -> Any:
    """A dotted path into nested mappings (and list indexes); MISSING when absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


@dataclass
class Facts:
    """What a condition may look at. `count` and `first_time` query history on demand."""

    now: dt.datetime
    user: dict[str, Any]  # user_id, email, phone, timezone, locale, stage, traits, first_seen_at
    properties: dict[str, Any] = field(default_factory=dict)
    event_name: str | None = None
    count: Callable[[staff_format.EventCount], int] = lambda _spec: 0
    first_time: Callable[[], bool] = lambda: False


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _ordered(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Operands for <, >: numbers with numbers, strings with strings; else not comparable."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    if isinstance(a, str) and isinstance(b, numbers):
        try:
            return float(a), b
        except ValueError:
            return None
    return None


def compare(value: Any, operator: str, operand: Any) -> bool:
    if operator == "exists":
        return (value is not MISSING and value is not None) == bool(operand)
    if value is MISSING:
        return operator in ("ne", "not_in")
    if operator == "eq":
        return bool(value == operand)
    if operator == "ne":
        return bool(value != operand)
    if operator == "in":
        return value in operand
    if operator == "not_in":
        return value not in operand
    if operator == "contains":
        if isinstance(value, str):
            return isinstance(operand, str) and operand in value
        return isinstance(value, list | dict) and operand in value
    if operator == "matches":
        return isinstance(value, str) and _regex(operand).search(value) is not None
    pair = _ordered(value, operand)
    if pair is None:
        return False
    a, b = pair
    return bool({"lt": a < b, "lte": a <= b, "gt": a > b, "gte": a >= b}[operator])


def evaluate(condition: Any, facts: Facts) -> bool:
    if isinstance(condition, staff_format.All):
        return all(evaluate(c, facts) for c in condition.all)
    if isinstance(condition, staff_format.Any_):
        return any(evaluate(c, facts) for c in condition.any)
    if isinstance(condition, staff_format.Not):
        return not evaluate(condition.not_, facts)
    if isinstance(condition, staff_format.Comparison):
        return compare(_subject(condition, facts), condition.operator, condition.operand)
    if isinstance(condition, staff_format.Count):
        [operator] = condition.operators()
        return compare(facts.count(condition.count), operator, getattr(condition, operator))
    if isinstance(condition, staff_format.FirstTime):
        return facts.first_time() == condition.first_time
    if isinstance(condition, staff_format.FirstSeen):
        first_seen = facts.user.get("first_seen_at")
        if first_seen is None:
            return False
        age: dt.timedelta = facts.now - first_seen
        bound = condition.first_seen
        if bound.more_than is not None:
            return age > bound.more_than
        assert bound.less_than is not None
        return age < bound.less_than
    raise TypeError(f"not a condition: {condition!r}")


def _subject(condition: staff_format.Comparison, facts: Facts) -> Any:
    if condition.property_ is not None:
        return lookup(facts.properties, condition.property_)
    if condition.trait is not None:
        return lookup(facts.user.get("traits") or {}, condition.trait)
    assert condition.user is not None
    return facts.user.get(condition.user, MISSING)


def needs_history(condition: Any) -> bool:
    """Whether evaluating needs database queries (counts, first time)."""
    if isinstance(condition, staff_format.All):
        return any(needs_history(c) for c in condition.all)
    if isinstance(condition, staff_format.Any_):
        return any(needs_history(c) for c in condition.any)
    if isinstance(condition, staff_format.Not):
        return needs_history(condition.not_)
    return isinstance(condition, staff_format.Count | staff_format.FirstTime)


Predicate = Callable[[Facts], bool]


def _getter(condition: staff_format.Comparison) -> Callable[[Facts], Any]:
    if condition.property_ is not None:
        parts = condition.property_.split(".")
        if len(parts) == 1:
            key = parts[0]
            return lambda facts: facts.properties.get(key, MISSING)
        path = condition.property_
        return lambda facts: lookup(facts.properties, path)
    if condition.trait is not None:
        path = condition.trait
        return lambda facts: lookup(facts.user.get("traits") or {}, path)
    field_name = str(condition.user)
    return lambda facts: facts.user.get(field_name, MISSING)


def compile_condition(condition: Any) -> Predicate:
    """A condition turned into a function once, at load, so each event only runs it."""
    if isinstance(condition, staff_format.All):
        parts = [compile_condition(c) for c in condition.all]
        return lambda facts: all(p(facts) for p in parts)
    if isinstance(condition, staff_format.Any_):
        parts = [compile_condition(c) for c in condition.any]
        return lambda facts: any(p(facts) for p in parts)
    if isinstance(condition, staff_format.Not):
        inner = compile_condition(condition.not_)
        return lambda facts: not inner(facts)
    if isinstance(condition, staff_format.Comparison):
        get, operator, operand = _getter(condition), condition.operator, condition.operand
        if operator == "eq":
            return lambda facts: get(facts) == operand
        if operator == "in":
            return lambda facts: (value := get(facts)) is not MISSING and value in operand
        return lambda facts: compare(get(facts), operator, operand)
    return lambda facts: evaluate(condition, facts)
