"""Which rules an event sets off, and whether the user qualifies: the engine's hot path.

Rules are indexed by trigger (RuleIndex.by_event), so an event only meets the rules that
name it; the cost of an event does not grow with rules that cannot apply.
"""

from __future__ import annotations

from service.engine import conditions
from service.engine.index import CompiledRule, RuleIndex


def refusal(compiled: CompiledRule, facts: conditions.Facts) -> str | None:
    """Why the user does not qualify for the rule now, or None when they do."""
    if compiled.where is not None and not compiled.where(facts):
        return "the event does not match the trigger's where"
    if compiled.when is not None and not compiled.when(facts):
        return "the user does not meet the rule's when"
    return None


def qualifying(index: RuleIndex, event_name: str, facts: conditions.Facts) -> list[CompiledRule]:
    """The rules `event_name` triggers whose conditions the user meets, by priority."""
    return [c for c in index.triggered_by_event(event_name) if refusal(c, facts) is None]
