"""Checking a rules folder: each kind of mistake staff make is reported at its exact
file:line:column with a message they can act on, and a folder with any mistake never loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engine.loader import RuleSet, RulesInvalid, load_rules
from service.engine.rules_folder import RuleError
from tests.helpers.rules import MINIMAL, copy_minimal, errors, write

# A valid one-rule file; tests replace one line of it. Line 6 is the step.
RULE = """
rules:
  - id: r
    category: recall
    trigger: {event: Signed Up}
    steps:
      - send: {channel: push, template: nudge}
"""


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return copy_minimal(tmp_path, monkeypatch)


def rule_file(rules: Path, old: str, new: str, name: str = "extra.yaml") -> None:
    assert old in RULE
    write(rules, name, RULE.replace(old, new))


# --- a valid folder --------------------------------------------------------------------------


def test_the_minimal_folder_loads_with_versions() -> None:
    ruleset = load_rules(MINIMAL)

    assert [r.id for r in ruleset.rules] == ["welcome", "cart-reminder"]
    assert ruleset.rules[0].file == str(MINIMAL / "onboarding.yaml")
    assert sorted(ruleset.templates) == ["nudge", "welcome"]
    assert ruleset.lifecycle.activation.event == "Product Used"
    assert ruleset.policy.caps[1].channel == "sms"
    assert {"Signed Up", "Email Opened", "lifecycle.stage_changed"} <= ruleset.events
    assert len(ruleset.version) == 64
    assert all(len(r.version) == 12 for r in ruleset.rules)
    assert load_rules(MINIMAL).version == ruleset.version


def test_versions_follow_the_content(rules: Path) -> None:
    before = load_rules(rules)
    template = rules / "templates" / "nudge.yaml"
    template.write_text(template.read_text().replace("Still there?", "Still here?"))
    after_template = load_rules(rules)
    onboarding = rules / "onboarding.yaml"
    onboarding.write_text(onboarding.read_text().replace("wait: 2d", "wait: 3d"))
    after_rule = load_rules(rules)

    assert after_template.version != before.version
    assert [r.version for r in after_template.rules] == [r.version for r in before.rules]
    assert after_rule.version != after_template.version
    assert version(after_rule, "welcome") != version(before, "welcome")
    assert version(after_rule, "cart-reminder") == version(before, "cart-reminder")


def version(ruleset: RuleSet, rule_id: str) -> str:
    loaded = ruleset.rule(rule_id)
    assert loaded is not None
    return loaded.version


def test_disabled_rules_are_checked_but_not_loaded(rules: Path) -> None:
    disabled = RULE.replace("    category: recall\n", "    category: recall\n    enabled: false\n")
    write(rules, "extra.yaml", disabled)
    assert [r.id for r in load_rules(rules).rules] == ["welcome", "cart-reminder"]

    write(rules, "extra.yaml", disabled.replace("template: nudge", "template: nudgee"))
    assert errors(rules) == [
        "rules/extra.yaml:7:41: unknown template 'nudgee' (did you mean 'nudge'?): templates "
        "are the files in rules/templates/"
    ]


def test_rule_error_prints_as_file_line_column_message() -> None:
    assert str(RuleError("rules/a.yaml", 3, 7, "oops")) == "rules/a.yaml:3:7: oops"


# --- YAML and schema -------------------------------------------------------------------------


def test_yaml_syntax(rules: Path) -> None:
    rule_file(rules, "category: recall", "category: recall\n    description: Note: new users")
    assert errors(rules) == [
        "rules/extra.yaml:4:22: YAML syntax: mapping values are not allowed here "
        "(a value that contains ': ' must be in quotes)"
    ]


def test_duplicate_key(rules: Path) -> None:
    rule_file(rules, "category: recall", "category: recall\n    category: retention")
    assert errors(rules) == ["rules/extra.yaml:4:5: duplicate key 'category' (first on line 3)"]


def test_missing_field_names_what_it_is_for(rules: Path) -> None:
    rule_file(rules, "    category: recall\n", "")
    assert errors(rules) == [
        "rules/extra.yaml:2:5: missing 'category': which part of the lifecycle this rule "
        "serves (for reports)"
    ]


def test_unknown_field_did_you_mean(rules: Path) -> None:
    rule_file(rules, "template: nudge", "tempalte: nudge")
    assert errors(rules) == [
        "rules/extra.yaml:6:31: unknown field 'tempalte' (did you mean 'template'?)"
    ]


def test_unknown_field_inside_a_condition_lists_that_conditions_fields(rules: Path) -> None:
    rule_file(rules, "    steps:", "    when: {trait: plan, eq: free, plan: pro}\n    steps:")
    assert errors(rules) == [
        "rules/extra.yaml:5:35: unknown field 'plan': allowed here are property, trait, user, "
        "eq, ne, lt, lte, gt, gte, in, not_in, contains, exists, matches"
    ]


def test_unknown_step_kind(rules: Path) -> None:
    rule_file(rules, "- send: {channel: push, template: nudge}", "- sned: {channel: push}")
    assert errors(rules) == [
        "rules/extra.yaml:6:9: unknown step 'sned' (did you mean 'send'?): a step is one of "
        "send, wait, wait_for, if, exit"
    ]


def test_unknown_value_did_you_mean(rules: Path) -> None:
    rule_file(rules, "category: recall", "category: recal")
    assert errors(rules) == [
        "rules/extra.yaml:3:15: unknown value 'recal' (did you mean 'recall'?): expected one of "
        "acquisition, activation, retention, recall"
    ]


def test_wrong_kind_of_value(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - send: {channel: push, template: 5}\n      - exit: no",
    )
    assert errors(rules) == [
        "rules/extra.yaml:6:41: expected text or a mapping (name: value), not 5",
        "rules/extra.yaml:7:15: expected text, not false (put it in quotes)",
    ]


def test_bad_rule_id(rules: Path) -> None:
    rule_file(rules, "id: r", "id: Welcome Email")
    assert errors(rules) == [
        "rules/extra.yaml:2:9: rule id 'Welcome Email' may only use lower-case letters, "
        "digits, - and _, starting with a letter or digit, e.g. welcome-email"
    ]


def test_bad_durations(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - wait: 2x\n      - send: {channel: push, template: nudge}\n"
        "    goal: {event: Product Used, within: 7}",
    )
    assert errors(rules) == [
        "rules/extra.yaml:6:15: bad duration '2x': write a number and a unit (m, h, d or w), "
        "e.g. 30m, 24h, 2d",
        "rules/extra.yaml:8:41: bad duration 7: write a number and a unit (m, h, d or w), "
        "e.g. 30m, 24h, 2d",
    ]


def test_a_schema_error_does_not_hide_the_problems_next_to_it(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - wait: 2 days\n      - send: {channel: push, template: nudg}",
    )
    assert errors(rules) == [
        "rules/extra.yaml:6:15: bad duration '2 days': write a number and a unit (m, h, d or w), "
        "e.g. 30m, 24h, 2d",
        "rules/extra.yaml:7:41: unknown template 'nudg' (did you mean 'nudge'?): templates are "
        "the files in rules/templates/",
    ]


def test_not_a_rule_file(rules: Path) -> None:
    write(rules, "extra.yaml", "rule:\n  - id: r\n")
    assert errors(rules) == ["rules/extra.yaml:1:1: unknown field 'rule' (did you mean 'rules'?)"]


# --- across files ----------------------------------------------------------------------------


def test_duplicate_rule_id_points_at_the_second(rules: Path) -> None:
    rule_file(rules, "id: r", "id: welcome", name="zz.yaml")
    assert errors(rules) == [
        "rules/zz.yaml:2:9: duplicate rule id 'welcome': already used at rules/onboarding.yaml:3:9"
    ]


def test_unknown_template(rules: Path) -> None:
    rule_file(rules, "template: nudge", "template: welcom")
    assert errors(rules) == [
        "rules/extra.yaml:6:41: unknown template 'welcom' (did you mean 'welcome'?): templates "
        "are the files in rules/templates/"
    ]


def test_template_without_the_channel_sent_on(rules: Path) -> None:
    rule_file(rules, "{channel: push, template: nudge}", "{channel: sms, template: welcome}")
    assert errors(rules) == [
        "rules/extra.yaml:6:40: template 'welcome' has no sms section, but this step sends it "
        "by sms"
    ]


def test_template_without_a_fallback_channel(rules: Path) -> None:
    rule_file(rules, "template: nudge}", "template: welcome, fallback: [sms]}")
    assert errors(rules) == [
        "rules/extra.yaml:6:61: template 'welcome' has no sms section, needed for the fallback "
        "to sms"
    ]


def test_unknown_channel(rules: Path) -> None:
    rule_file(rules, "channel: push", "channel: emial")
    assert errors(rules) == [
        "rules/extra.yaml:6:25: unknown channel 'emial' (did you mean 'email'?): channels are "
        "email, sms, push"
    ]


def test_fallback_repeating_a_channel(rules: Path) -> None:
    rule_file(rules, "template: nudge}", "template: nudge, fallback: [sms, push, sms]}")
    assert errors(rules) == [
        "rules/extra.yaml:6:64: fallback lists push, the channel this step already sends on",
        "rules/extra.yaml:6:70: fallback lists sms twice",
    ]


STAGES = "new, activated, engaged, at_risk, churned, recalled"


def test_unknown_stages_in_a_stage_trigger(rules: Path) -> None:
    rule_file(rules, "{event: Signed Up}", "{stage_changed: {to: at-risk, from: engagd}}")
    assert errors(rules) == [
        "rules/extra.yaml:4:35: unknown stage 'at-risk' (did you mean 'at_risk'?): the stages "
        f"in rules/lifecycle.yaml are {STAGES}",
        "rules/extra.yaml:4:50: unknown stage 'engagd' (did you mean 'engaged'?): the stages "
        f"in rules/lifecycle.yaml are {STAGES}",
    ]


def test_unknown_stages_in_conditions(rules: Path) -> None:
    rule_file(
        rules,
        "    steps:\n      - send: {channel: push, template: nudge}",
        "    when: {user: stage, in: [new, actived]}\n"
        "    steps:\n"
        "      - if: {not: {user: stage, eq: Churned}}\n"
        "        then: [{send: {channel: push, template: nudge}}]",
    )
    assert errors(rules) == [
        "rules/extra.yaml:5:35: unknown stage 'actived' (did you mean 'activated'?): the stages "
        f"in rules/lifecycle.yaml are {STAGES}",
        "rules/extra.yaml:7:37: unknown stage 'Churned' (did you mean 'churned'?): the stages "
        f"in rules/lifecycle.yaml are {STAGES}",
    ]


def test_renamed_stages_are_the_names_to_use(rules: Path) -> None:
    lifecycle = rules / "lifecycle.yaml"
    lifecycle.write_text(lifecycle.read_text() + "stages: {at_risk: dormant}\n")
    rule_file(rules, "{event: Signed Up}", "{stage_changed: {to: at_risk}}")
    assert errors(rules) == [
        "rules/extra.yaml:4:35: unknown stage 'at_risk': the stages in rules/lifecycle.yaml are "
        "new, activated, engaged, dormant, churned, recalled"
    ]


def test_unknown_events_everywhere_they_are_named(rules: Path) -> None:
    write(
        rules,
        "extra.yaml",
        """
        rules:
          - id: r
            category: recall
            trigger: {event: Signed up}
            when: {count: {event: Order Complete, within: 30d}, gte: 1}
            steps:
              - wait_for: {event: App Opened, timeout: 1d}
                on_timeout: [{send: {channel: push, template: nudge}}]
            goal: {event: Product used, within: 7d}
            exit_on: [Unsubscribe]
        """,
    )
    lifecycle = rules / "lifecycle.yaml"
    lifecycle.write_text(
        lifecycle.read_text().replace(
            "event: Product Used\nengagement", "event: Product Usage\nengagement"
        )
    )
    catalog = "must be listed in rules/events.yaml"
    assert errors(rules) == [
        "rules/extra.yaml:4:22: unknown event 'Signed up' (did you mean 'Signed Up'?): event "
        f"names {catalog}",
        "rules/extra.yaml:5:27: unknown event 'Order Complete' (did you mean 'Order "
        f"Completed'?): event names {catalog}",
        "rules/extra.yaml:7:27: unknown event 'App Opened' (did you mean 'Application "
        f"Opened'?): event names {catalog}",
        "rules/extra.yaml:9:19: unknown event 'Product used' (did you mean 'Product Used'?): "
        f"event names {catalog}",
        "rules/extra.yaml:10:15: unknown event 'Unsubscribe' (did you mean 'Unsubscribed'?): "
        f"event names {catalog}",
        "rules/lifecycle.yaml:3:10: unknown event 'Product Usage' (did you mean 'Product "
        f"Used'?): event names {catalog}",
    ]


def test_internal_events_need_no_listing(rules: Path) -> None:
    rule_file(rules, "{event: Signed Up}", "{event: Email Opened}")
    assert load_rules(rules).rule("r") is not None


def test_event_listed_twice(rules: Path) -> None:
    events = rules / "events.yaml"
    events.write_text(events.read_text() + "  - Signed Up\n")
    assert errors(rules) == ["rules/events.yaml:8:5: 'Signed Up' is listed twice"]


# --- the shape of a journey ------------------------------------------------------------------


def test_step_after_exit_never_runs(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - exit\n      - send: {channel: push, template: nudge}",
    )
    assert errors(rules) == [
        "rules/extra.yaml:7:9: this step can never run: the journey ends at the exit on line 6"
    ]


def test_step_after_an_if_that_exits_both_ways_never_runs(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - if: {trait: vip, eq: true}\n"
        "        then: [{send: {channel: push, template: nudge}}, exit]\n"
        "        else: [{exit: not vip}]\n"
        "      - send: {channel: push, template: nudge}",
    )
    assert errors(rules) == [
        "rules/extra.yaml:9:9: this step can never run: both then and else of the if on line 6 "
        "end with exit"
    ]


def test_step_after_a_wait_for_that_exits_both_ways_never_runs(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - wait_for: {event: Order Completed, timeout: 1d}\n"
        "        on_event: [exit]\n"
        "        on_timeout:\n"
        "          - if: {trait: vip, eq: true}\n"
        "            then: [exit]\n"
        "            else: [exit]\n"
        "      - send: {channel: push, template: nudge}",
    )
    assert errors(rules) == [
        "rules/extra.yaml:12:9: this step can never run: both on_event and on_timeout of the "
        "wait_for on line 6 end with exit"
    ]


def test_steps_after_a_branch_that_may_continue_are_fine(rules: Path) -> None:
    rule_file(
        rules,
        "      - send: {channel: push, template: nudge}",
        "      - if: {trait: vip, eq: true}\n"
        "        then: [exit]\n"
        "      - wait_for: {event: Order Completed, timeout: 1d}\n"
        "        on_event: [exit]\n"
        "      - send: {channel: push, template: nudge}",
    )
    assert load_rules(rules).rule("r") is not None


def test_variant_templates_must_name_exactly_the_variants(rules: Path) -> None:
    rule_file(
        rules,
        "    steps:\n      - send: {channel: push, template: nudge}",
        "    variants: [{id: short, weight: 1}, {id: long, weight: 1}]\n"
        "    steps:\n"
        "      - send: {channel: push, template: {short: nudge, lnog: welcome}}",
    )
    assert errors(rules) == [
        "rules/extra.yaml:7:41: no template for variant 'long'",
        "rules/extra.yaml:7:56: 'lnog' is not a variant of this rule (did you mean 'long'?): "
        "its variants are short, long",
    ]


def test_variant_ids_are_unique(rules: Path) -> None:
    rule_file(
        rules,
        "    steps:",
        "    variants:\n      - {id: a, weight: 1}\n      - {id: a, weight: 2}\n    steps:",
    )
    assert errors(rules) == ["rules/extra.yaml:7:14: variant id 'a' is used twice"]


def test_variant_templates_without_variants(rules: Path) -> None:
    rule_file(rules, "template: nudge", "template: {a: nudge, b: welcome}")
    assert errors(rules) == [
        "rules/extra.yaml:6:41: a template per variant needs variants, and this rule has none: "
        "give one template name or add variants to the rule"
    ]


def test_key_needs_an_event_trigger(rules: Path) -> None:
    rule_file(rules, "{event: Signed Up}", "{inactive_for: 14d}\n    key: cart_id")
    assert errors(rules) == [
        "rules/extra.yaml:5:5: key only works with an event trigger: it names a property of the "
        "triggering event, and this rule is triggered by inactive_for"
    ]


# --- the folder ------------------------------------------------------------------------------


def test_required_files(rules: Path) -> None:
    (rules / "lifecycle.yaml").unlink()
    (rules / "events.yaml").unlink()
    assert errors(rules) == [
        "rules/events.yaml:1:1: missing file: the event catalog listing every event name the "
        "product sends (events.yaml)",
        "rules/lifecycle.yaml:1:1: missing file: the lifecycle stages and their thresholds "
        "(lifecycle.yaml)",
    ]


def test_yml_files_are_not_silently_ignored(rules: Path) -> None:
    write(rules, "extra.yml", RULE)
    assert errors(rules) == [
        "rules/extra.yml:1:1: rename this file to end in .yaml: it is not read"
    ]


def test_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert errors(Path("nowhere")) == ["nowhere:1:1: no such rules folder"]


def test_all_errors_sorted_and_nothing_loads(rules: Path) -> None:
    rule_file(rules, "template: nudge", "template: nope", name="b.yaml")
    write(rules, "a.yaml", RULE.replace("id: r", "id: other").replace("recall", "recal"))
    policy = rules / "policy.yaml"
    policy.write_text(policy.read_text().replace("channel: sms", "channel: sns"))

    with pytest.raises(RulesInvalid) as raised:
        load_rules(rules)

    assert [str(e) for e in raised.value.errors] == [
        "rules/a.yaml:3:15: unknown value 'recal' (did you mean 'recall'?): expected one of "
        "acquisition, activation, retention, recall",
        "rules/b.yaml:6:41: unknown template 'nope': templates are the files in rules/templates/",
        "rules/policy.yaml:4:32: unknown channel 'sns' (did you mean 'sms'?): channels are "
        "email, sms, push",
    ]
    assert str(raised.value).startswith("3 errors in the rules:\nrules/a.yaml:3:15: ")
