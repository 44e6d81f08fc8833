"""Rule matching benchmark: microseconds per event for 10, 100 and 1,000 rules, 5 matching.

Each event meets the rule index (rules are indexed by the event that triggers them) and the
conditions of the rules it triggers are evaluated against the user and the event, as the
engine does for every processed event. The other rules trigger on other events, each with
conditions of its own, so a rule set that grew without an index would show here.

    .venv/bin/python bench/rules.py [--events 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from service.engine import conditions, staff_format
from service.engine.index import RuleIndex
from service.engine.matching import qualifying
from service.engine.policy import Policy
from service.lifecycle.staff_format import Lifecycle

MATCHING = 5
EVENT = "Order Completed"


def rule(i: int, event: str) -> staff_format.Rule:
    return staff_format.Rule.model_validate(
        {
            "id": f"rule-{i}",
            "category": "retention",
            "priority": i % 7,
            "trigger": {
                "event": event,
                "where": {
                    "all": [
                        {"property": "total", "gte": 10},
                        {"property": "currency", "in": ["USD", "EUR", "CNY"]},
                    ]
                },
            },
            "when": {
                "any": [
                    {"trait": "plan", "in": ["pro", "team"]},
                    {"not": {"user": "stage", "eq": "churned"}},
                ]
            },
            "steps": [{"send": {"channel": "email", "template": "thanks"}}],
        }
    )


def build(total: int) -> RuleIndex:
    rules = [rule(i, EVENT) for i in range(MATCHING)]
    rules += [rule(i, f"Other Event {i % 250}") for i in range(MATCHING, total)]
    lifecycle = Lifecycle.model_validate(
        {
            "activation": {"event": "Product Used"},
            "engagement": {"event": "Product Used", "at_least": 3, "within": "7d"},
            "at_risk_after": "7d",
            "churned_after": "30d",
        }
    )
    return RuleIndex.build([(r, f"v{r.id}") for r in rules], lifecycle, Policy())


def measure(index: RuleIndex, events: int) -> float:
    now = dt.datetime.now(dt.UTC)
    user = {"user_id": "u1", "stage": "engaged", "traits": {"plan": "pro"}, "first_seen_at": now}
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for n in range(events):
            facts = conditions.Facts(now, user, {"total": 20 + n % 50, "currency": "USD"}, EVENT)
            matched = qualifying(index, EVENT, facts)
        samples.append((time.perf_counter() - started) / events * 1e6)
        assert len(matched) == MATCHING
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    results = {total: measure(build(total), args.events) for total in (10, 100, 1000)}
    print(f"{'rules':>6} {'matching':>9} {'us/event':>9}")
    for total, micros in results.items():
        print(f"{total:>6} {MATCHING:>9} {micros:>9.2f}")
    print(
        f"\n1,000 rules cost {results[1000] / results[10]:.2f}x what 10 rules cost "
        f"(target: at most 2x; at most 50 us per event)"
    )


if __name__ == "__main__":
    main()
