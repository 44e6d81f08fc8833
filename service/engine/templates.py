"""Message templates: rules/templates/<name>.yaml, one section per channel, written in Liquid.

A template names what a message says on each channel it can go out on; `locales` holds whole
channel sections in other languages. Every Liquid string is parsed when the folder is loaded and
its variables are checked against what a message is rendered with, so a typo such as
`{{ usr.name }}` is a load error with its file:line:column, not a half-rendered message.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar

from liquid import BoundTemplate, Environment, FalsyStrictUndefined
from liquid.exceptions import LiquidError, UndefinedError
from pydantic import ConfigDict, Field, model_validator

from service.engine.staff_format import CHANNELS
from service.engine.yamlsource import Document, Located, Path_
from service.kit.staff_format import Strict

LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


class EmailSection(Strict):
    subject: str
    html: str = Field(description="the HTML body; values put into it are HTML-escaped")
    text: str | None = Field(default=None, description="plain-text body for mail clients")


class SmsSection(Strict):
    body: str


class PushSection(Strict):
    title: str
    body: str
    data: dict[str, str] = Field(
        default_factory=dict, description="extra key/value pairs passed to the app"
    )
    deep_link: str | None = Field(default=None, description="where a tap takes the user")


Section = EmailSection | SmsSection | PushSection


class LocaleSections(Strict):
    """The message in one other language: whole channel sections, replacing the default ones."""

    email: EmailSection | None = None
    sms: SmsSection | None = None
    push: PushSection | None = None


Locale = Annotated[str, Field(pattern=LOCALE_PATTERN)]


class Template(Strict):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, title="Lifeline message template"
    )

    description: str | None = None
    email: EmailSection | None = None
    sms: SmsSection | None = None
    push: PushSection | None = None
    locales: dict[Locale, LocaleSections] = Field(
        default_factory=dict,
        description="per language or language-region (e.g. zh, zh-CN): channel sections that "
        "replace the default ones for users with that locale",
    )

    @model_validator(mode="after")
    def _sections(self) -> Template:
        if not self.channels():
            raise ValueError("a template needs at least one of: email, sms, push")
        return self

    def channels(self) -> list[str]:
        return [c for c in CHANNELS if getattr(self, c) is not None]

    def section(self, channel: str, locale: str | None = None) -> Section | None:
        """The section for `channel` in `locale`: exact (zh-CN), then language (zh), then the
        default section."""
        for candidate in _locale_candidates(locale):
            for key, sections in self.locales.items():
                if key.lower() == candidate:
                    found: Section | None = getattr(sections, channel)
                    if found is not None:
                        return found
        default: Section | None = getattr(self, channel, None)
        return default


def _locale_candidates(locale: str | None) -> list[str]:
    if not locale:
        return []
    exact = locale.replace("_", "-").lower()
    language = exact.split("-")[0]
    return [exact] if language == exact else [exact, language]


# --- Liquid --------------------------------------------------------------------------------


class _Undefined(FalsyStrictUndefined):
    """Strict: printing a missing value raises. `{% if user.traits.x %}` is simply false and
    `{{ user.traits.x | default: "there" }}` gives the default, so templates can guard."""

    force_liquid_default = True


class _Environment(Environment):
    """No loader (templates cannot include files) and bounded work per render."""

    loop_iteration_limit: ClassVar[int | None] = 10_000
    output_stream_limit: ClassVar[int | None] = 1_000_000
    local_namespace_limit: ClassVar[int | None] = 100_000


_PLAIN = _Environment(undefined=_Undefined)
_HTML = _Environment(undefined=_Undefined, autoescape=True)
_FORBIDDEN_TAGS = ("include", "render")

ANY = "*"
# What a message is rendered with: root variable -> its fields (ANY: free-form below that).
VARIABLES: dict[str, dict[str, str | None]] = {
    "user": {
        "user_id": None,
        "email": None,
        "phone": None,
        "traits": ANY,
        "stage": None,
        "timezone": None,
        "locale": None,
    },
    "event": {"name": None, "properties": ANY},
    "links": {"unsubscribe": None, "preferences": None},
    "message": {"id": None},
}
# Liquid's own properties of any value, e.g. {{ user.email.size }}.
_BUILTIN_PROPERTIES = ("size", "first", "last")


@functools.lru_cache(maxsize=4096)
def _compile(source: str, html: bool) -> BoundTemplate:
    return (_HTML if html else _PLAIN).from_string(source)


class RenderError(Exception):
    """A message cannot be rendered; nothing of it is used."""


def render(
    template: Template, channel: str, locale: str | None, context: Mapping[str, object]
) -> dict[str, str]:
    """Render every field of the channel's section, or raise RenderError naming the missing
    variable. Push `data` entries come back as `data.<key>`."""
    section = template.section(channel, locale)
    if section is None:
        raise RenderError(f"the template has no {channel} section")
    rendered: dict[str, str] = {}
    for field, source in _section_strings(section):
        try:
            rendered[field] = _compile(source, field == "html").render(**context)
        except UndefinedError as exc:
            raise RenderError(
                f"{channel}.{field}: {exc.message}; for a value that may be missing, give a "
                'fallback such as {{ user.traits.first_name | default: "there" }}'
            ) from None
        except LiquidError as exc:
            raise RenderError(f"{channel}.{field}: {exc.message}") from None
    return rendered


def _section_strings(section: Section) -> Iterator[tuple[str, str]]:
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, str):
            yield name, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield f"{name}.{key}", item


def _strings(data: Any) -> Iterator[tuple[Path_, str]]:
    """Every Liquid string of a template file, by its path in the YAML document. Read from the
    data, not the model, so a template with a schema error still gets its Liquid checked."""
    if not isinstance(data, dict):
        return
    places: list[tuple[Path_, Any]] = [((), data)]
    if isinstance(data.get("locales"), dict):
        places += [(("locales", k), v) for k, v in data["locales"].items()]
    for base, sections in places:
        if not isinstance(sections, dict):
            continue
        for channel, section_type in _SECTIONS.items():
            section = sections.get(channel)
            if not isinstance(section, dict):
                continue
            for name in section_type.model_fields:
                value = section.get(name)
                if isinstance(value, str):
                    yield (*base, channel, name), value
                elif isinstance(value, dict):
                    for key, item in value.items():
                        if isinstance(item, str):
                            yield (*base, channel, name, key), item


_SECTIONS: dict[str, type[Strict]] = {
    "email": EmailSection,
    "sms": SmsSection,
    "push": PushSection,
}


def check_template(doc: Document) -> list[tuple[Located, str]]:
    """What the schema cannot say: each locale section has a default to fall back to, and the
    syntax, variables, filters and tags of every Liquid string. Located in the template's file."""
    problems: list[tuple[Located, str]] = []
    data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    locales = data.get("locales")
    for locale, sections in locales.items() if isinstance(locales, dict) else ():
        for channel in CHANNELS:
            if isinstance(sections, dict) and channel in sections and channel not in data:
                problems.append(
                    (
                        doc.locate(("locales", locale, channel), key=True),
                        f"locales.{locale} has a {channel} section but the template has no "
                        f"default {channel} section for users in other languages",
                    )
                )
    for path, source in _strings(doc.data):

        def at(index: int, path: Path_ = path) -> Located:
            return doc.locate_in_string(path, index)

        try:
            bound = _compile(source, path[-2:] == ("email", "html"))
        except LiquidError as exc:
            index = exc.token.start_index if exc.token is not None else -1
            where = at(index) if index >= 0 else doc.locate(path)
            problems.append((where, f"template syntax error: {_syntax_message(exc)}"))
            continue
        analysis = bound.analyze(include_partials=False)
        for variables in analysis.globals.values():
            reported: set[str] = set()
            for variable in variables:
                message = _unknown_variable(variable.segments)
                if message and str(variable) not in reported:
                    reported.add(str(variable))
                    problems.append((at(variable.span.index), message))
        for name, spans in analysis.filters.items():
            if name not in _PLAIN.filters:
                problems.append(
                    (
                        at(spans[0].index),
                        f"unknown filter {name!r}{_did_you_mean(name, _PLAIN.filters)}",
                    )
                )
        for name in _FORBIDDEN_TAGS:
            for span in analysis.tags.get(name, []):
                problems.append(
                    (
                        at(span.index),
                        f"{{% {name} %}} is not allowed: a template cannot include other files",
                    )
                )
    return problems


def _syntax_message(exc: LiquidError) -> str:
    unclosed = re.match(r"expected tag end(\w+)", str(exc.message))
    if unclosed:
        tag = unclosed.group(1)
        return f"{{% {tag} %}} is never closed: add {{% end{tag} %}}"
    return str(exc.message)


def _unknown_variable(segments: list[Any]) -> str | None:
    root = str(segments[0])
    if root not in VARIABLES:
        dotted = ".".join(str(s) for s in segments if not isinstance(s, list))
        return (
            f"unknown variable {dotted!r}{_did_you_mean(root, VARIABLES)}: templates can use "
            + ", ".join(VARIABLES)
        )
    fields = VARIABLES[root]
    if len(segments) < 2 or isinstance(segments[1], list):
        return None
    name = segments[1]
    if isinstance(name, str) and name in fields:
        if fields[name] == ANY or len(segments) < 3 or segments[2] in _BUILTIN_PROPERTIES:
            return None
        return f"{root}.{name} has no field {segments[2]!r}"
    guess = _did_you_mean(str(name), fields, prefix=f"{root}.")
    return f"unknown variable '{root}.{name}'{guess}: {root} has " + ", ".join(fields)


def _did_you_mean(word: str, choices: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""
