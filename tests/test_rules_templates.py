"""Message templates: every Liquid string is checked when the folder loads (errors located in
the template file), and rendering is strict: a missing value fails the whole message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.engine.loader import RulesInvalid, load_template_folder
from service.engine.templates import RenderError, Template, render
from tests.helpers.rules import MINIMAL, copy_minimal, errors, write


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return copy_minimal(tmp_path, monkeypatch)


def template_errors(rules: Path, text: str) -> list[str]:
    write(rules, "templates/extra.yaml", text)
    return errors(rules)


def context(**traits: Any) -> dict[str, Any]:
    return {
        "user": {"user_id": "u1", "email": "ann@example.com", "traits": traits, "stage": "new"},
        "event": {"name": "Signed Up", "properties": {"plan": "pro"}},
        "links": {"unsubscribe": "https://x.test/u?a=1&b=2", "preferences": "https://x.test/p"},
        "message": {"id": "m1"},
    }


def test_load_templates_of_a_folder() -> None:
    found = load_template_folder(MINIMAL / "templates")
    assert sorted(found) == ["nudge", "welcome"]
    assert found["nudge"].channels() == ["sms", "push"]


def test_load_templates_raises_with_every_problem(rules: Path) -> None:
    write(rules, "templates/extra.yaml", "sms: {body: '{{ usr }}'}\npush: {title: '{{ x }}'}\n")
    with pytest.raises(RulesInvalid) as raised:
        load_template_folder(rules / "templates")
    assert [str(e) for e in raised.value.errors] == [
        "rules/templates/extra.yaml:1:17: unknown variable 'usr' (did you mean 'user'?): "
        "templates can use user, event, links, message",
        "rules/templates/extra.yaml:2:7: missing 'body'",
        "rules/templates/extra.yaml:2:19: unknown variable 'x': templates can use user, event, "
        "links, message",
    ]


def test_unknown_root_variable(rules: Path) -> None:
    assert template_errors(rules, "sms:\n  body: 'Hi {{ usr.name }}'\n") == [
        "rules/templates/extra.yaml:2:16: unknown variable 'usr.name' (did you mean 'user'?): "
        "templates can use user, event, links, message"
    ]


def test_unknown_fields_of_user_event_and_links(rules: Path) -> None:
    text = """
    email:
      subject: "{{ user.emial }}"
      html: |
        <p>Hello</p>
        <p>{{ event.props.plan }} <a href="{{ links.unsubscibe }}">x</a></p>
    """
    assert template_errors(rules, text) == [
        "rules/templates/extra.yaml:2:16: unknown variable 'user.emial' (did you mean "
        "'user.email'?): user has user_id, email, phone, traits, stage, timezone, locale",
        "rules/templates/extra.yaml:5:11: unknown variable 'event.props' (did you mean "
        "'event.properties'?): event has name, properties",
        "rules/templates/extra.yaml:5:43: unknown variable 'links.unsubscibe' (did you mean "
        "'links.unsubscribe'?): links has unsubscribe, preferences",
    ]


def test_free_form_traits_locals_and_builtin_properties_are_fine(rules: Path) -> None:
    text = """
    sms:
      body: >
        {% assign name = user.traits.first_name | default: "there" %}Hi {{ name }},
        {% for item in event.properties.items %}{{ item.title }}{% endfor %}
        {{ user.email.size }} {{ message.id }}
    """
    write(rules, "templates/extra.yaml", text)
    assert "extra" in load_template_folder(rules / "templates")


def test_field_below_a_plain_value(rules: Path) -> None:
    assert template_errors(rules, "sms: {body: '{{ user.email.domain }}'}\n") == [
        "rules/templates/extra.yaml:1:17: user.email has no field 'domain'"
    ]


def test_liquid_syntax_errors(rules: Path) -> None:
    text = """
    sms:
      body: "{% if user.traits.vip %}VIP"
    push:
      title: Hi
      body: |
        line one
        {% frobnicate %}
    """
    assert template_errors(rules, text) == [
        "rules/templates/extra.yaml:2:9: template syntax error: {% if %} is never closed: add "
        "{% endif %}",
        "rules/templates/extra.yaml:7:8: template syntax error: unexpected tag 'frobnicate'",
    ]


def test_problems_in_folded_text_point_at_their_line(rules: Path) -> None:
    text = """
    sms:
      body: >
        Hello there,
        your code is {{ event.properties.code | upcase | trunc: 6 }}
    """
    assert template_errors(rules, text) == [
        "rules/templates/extra.yaml:4:54: unknown filter 'trunc' (did you mean 'truncate'?)"
    ]


def test_unknown_filter(rules: Path) -> None:
    assert template_errors(rules, "sms: {body: '{{ user.email | upcas }}'}\n") == [
        "rules/templates/extra.yaml:1:30: unknown filter 'upcas' (did you mean 'upcase'?)"
    ]


def test_templates_cannot_include_files(rules: Path) -> None:
    assert template_errors(rules, "sms: {body: '{% include \"secrets\" %}'}\n") == [
        "rules/templates/extra.yaml:1:17: {% include %} is not allowed: a template cannot "
        "include other files"
    ]


def test_locales(rules: Path) -> None:
    text = """
    sms: {body: Hi}
    locales:
      zh_CN:
        sms: {body: 你好}
      de:
        push: {title: Hallo, body: Hallo}
    """
    assert template_errors(rules, text) == [
        "rules/templates/extra.yaml:3:3: 'zh_CN' is not a locale: write a language such as zh, "
        "or zh-CN",
        "rules/templates/extra.yaml:6:5: locales.de has a push section but the template has no "
        "default push section for users in other languages",
    ]


def test_schema_and_liquid_problems_are_both_reported(rules: Path) -> None:
    text = "sms:\n  body: '{{ usr }}'\n  txt: hi\n"
    assert template_errors(rules, text) == [
        "rules/templates/extra.yaml:2:13: unknown variable 'usr' (did you mean 'user'?): "
        "templates can use user, event, links, message",
        "rules/templates/extra.yaml:3:3: unknown field 'txt': allowed here are body",
    ]


def test_a_template_needs_a_channel(rules: Path) -> None:
    assert template_errors(rules, "description: nothing yet\n") == [
        "rules/templates/extra.yaml:1:1: a template needs at least one of: email, sms, push"
    ]


# --- rendering -------------------------------------------------------------------------------

WELCOME = load_template_folder(MINIMAL / "templates")["welcome"]
NUDGE = load_template_folder(MINIMAL / "templates")["nudge"]


def test_render_email_escapes_html_only() -> None:
    rendered = render(WELCOME, "email", None, context(first_name="<b>Ann</b>"))
    assert rendered == {
        "subject": "Welcome, <b>Ann</b>",
        "html": '<p>Hi &lt;b&gt;Ann&lt;/b&gt;,</p>\n<p><a href="https://x.test/u?a=1&amp;b=2">'
        "Unsubscribe</a></p>\n",
        "text": "Hi <b>Ann</b>",
    }


def test_render_default_filter_for_missing_values() -> None:
    assert render(WELCOME, "email", None, context())["subject"] == "Welcome, there"


def test_render_push_data_and_deep_link() -> None:
    assert render(NUDGE, "push", None, context()) == {
        "title": "Still there?",
        "body": "Your cart is waiting",
        "data.screen": "cart",
        "deep_link": "app://cart",
    }


@pytest.mark.parametrize(
    ("locale", "subject"),
    [
        ("zh-CN", "欢迎, Ann"),
        ("zh_cn", "欢迎, Ann"),  # as some apps send it
        ("zh", "Welcome, Ann"),  # only zh-CN is written: plain zh falls back to the default
        ("de-DE", "Welcome, Ann"),
        (None, "Welcome, Ann"),
    ],
)
def test_render_locale_fallback(locale: str | None, subject: str) -> None:
    assert render(WELCOME, "email", locale, context(first_name="Ann"))["subject"] == subject


def test_render_language_section_serves_regional_locales() -> None:
    template = Template.model_validate(
        {"sms": {"body": "Hi"}, "locales": {"pt": {"sms": {"body": "Olá"}}}}
    )
    assert render(template, "sms", "pt-BR", context()) == {"body": "Olá"}


def test_render_missing_variable_fails_the_whole_message() -> None:
    template = Template.model_validate(
        {"email": {"subject": "Hi", "html": "<p>{{ user.traits.first_name }}</p>"}}
    )
    with pytest.raises(RenderError) as raised:
        render(template, "email", None, context())
    assert str(raised.value) == (
        "email.html: user.traits.first_name is undefined; for a value that may be missing, "
        'give a fallback such as {{ user.traits.first_name | default: "there" }}'
    )


def test_render_if_on_a_missing_trait_is_false() -> None:
    template = Template.model_validate(
        {"sms": {"body": "{% if user.traits.vip %}VIP {% endif %}offer"}}
    )
    assert render(template, "sms", None, context()) == {"body": "offer"}


def test_render_channel_without_section() -> None:
    with pytest.raises(RenderError, match="the template has no sms section"):
        render(WELCOME, "sms", None, context())
