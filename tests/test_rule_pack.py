"""The shipped rule pack is valid and its own rule tests pass (as `lifeline rules test`)."""

from __future__ import annotations

from pathlib import Path

from service.engine.loader import load_rules
from service.processing.ruletests import load_tests, run_test

PACK = Path(__file__).resolve().parent.parent / "rules"


def test_the_shipped_pack_loads_and_every_rule_has_tests() -> None:
    ruleset = load_rules(PACK)
    tests, errors = load_tests(PACK / "tests")
    assert errors == []
    assert len(ruleset.rules) >= 8
    tested = " ".join(t.name + str(t.expect.model_dump()) for _, t in tests)
    untested = [r.id for r in ruleset.rules if r.id not in tested]
    assert untested == []


def test_the_shipped_pack_passes_its_rule_tests() -> None:
    ruleset = load_rules(PACK)
    tests, _ = load_tests(PACK / "tests")
    failures = [
        f"{outcome.file}: {outcome.name}: {outcome.failures}"
        for outcome in (run_test(ruleset, test, file) for file, test in tests)
        if not outcome.passed
    ]
    assert failures == []
    assert len(tests) >= 30
