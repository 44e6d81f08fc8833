"""Rule versions: each version a journey entered with is stored once, so a journey goes on with
the rule as it was when it entered, even after the rule changed or a worker restarted."""

from __future__ import annotations

import datetime as dt
import weakref

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.engine import staff_format
from service.engine.index import CompiledRule, RuleIndex, compile_rule
from service.kit.db import insert_ignoring_conflicts
from service.models import Journey, RuleVersion

# Rule versions known to be stored, by database: each is written once, not at every entry.
_stored_versions: weakref.WeakKeyDictionary[Engine, set[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)
VERSIONS_SAVED = "lifeline.rule-versions-saved"  # in this transaction, known once it commits


@event.listens_for(Session, "after_rollback")
def _versions_not_stored(session: Session) -> None:
    session.info.pop(VERSIONS_SAVED, None)


@event.listens_for(Session, "after_commit")
def _versions_stored(session: Session) -> None:
    saved = session.info.pop(VERSIONS_SAVED, None)
    if saved:
        engine = session.get_bind()
        if isinstance(engine, Engine):
            _stored_versions.setdefault(engine, set()).update(saved)


def save_version(session: Session, compiled: CompiledRule, now: dt.datetime) -> None:
    engine = session.get_bind()
    key = (compiled.id, compiled.version)
    if isinstance(engine, Engine) and key in _stored_versions.get(engine, ()):
        return
    session.info.setdefault(VERSIONS_SAVED, set()).add(key)
    statement = insert_ignoring_conflicts(
        RuleVersion.__table__, session.get_bind().dialect.name, ["rule_id", "version"]
    )
    session.execute(
        statement,
        [
            {
                "rule_id": compiled.id,
                "version": compiled.version,
                "definition": compiled.rule.model_dump(
                    mode="json", by_alias=True, exclude_unset=True
                ),
                "first_loaded_at": now,
            }
        ],
    )


_versions: dict[tuple[str, str], CompiledRule] = {}


def rule_for(session: Session, index: RuleIndex, journey: Journey) -> CompiledRule | None:
    """The rule version a journey entered with; None when its rule left the rule set."""
    current = index.rules.get(journey.rule_id)
    if current is None:
        return None
    if current.version == journey.rule_version:
        return current
    key = (journey.rule_id, journey.rule_version)
    if key not in _versions:
        definition = session.scalar(
            select(RuleVersion.definition).where(
                RuleVersion.rule_id == journey.rule_id, RuleVersion.version == journey.rule_version
            )
        )
        if definition is None:
            return None
        _versions[key] = compile_rule(
            staff_format.Rule.model_validate(definition), journey.rule_version
        )
    return _versions[key]
