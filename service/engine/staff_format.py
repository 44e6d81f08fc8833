"""The rule format: what operations staff write in rules/*.yaml (and the event catalog they
write in rules/events.yaml, which the rules' event names are checked against).

Every model forbids unknown fields, so a typo is an error (with a did-you-mean) rather than a
silently ignored line. The JSON Schema in rules/ is generated from these models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from service.kit.staff_format import Duration, Strict

CHANNELS = ("email", "sms", "push")
Channel = Literal["email", "sms", "push"]


def _percent(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        return float(value.strip()[:-1])
    return value


Percent = Annotated[
    float,
    BeforeValidator(_percent),
    Field(ge=0, le=100),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}]}
    ),
]


# --- Conditions ------------------------------------------------------------------------------

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains", "exists", "matches")
USER_FIELDS = ("stage", "email", "phone", "timezone", "locale", "user_id")


class Comparison(Strict):
    """Compare one value: an event property, a user trait, or a profile field."""

    property_: str | None = Field(
        default=None, alias="property", description="dotted path in the event's properties"
    )
    trait: str | None = Field(default=None, description="dotted path in the user's traits")
    user: Literal["stage", "email", "phone", "timezone", "locale", "user_id"] | None = Field(
        default=None, description="a profile field"
    )
    eq: Any = None
    ne: Any = None
    lt: float | str | None = None
    lte: float | str | None = None
    gt: float | str | None = None
    gte: float | str | None = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    contains: Any = None
    exists: bool | None = None
    matches: str | None = Field(default=None, description="a regular expression")

    @model_validator(mode="after")
    def _one_subject_one_operator(self) -> Comparison:
        subjects = [s for s in ("property_", "trait", "user") if getattr(self, s) is not None]
        if len(subjects) != 1:
            raise ValueError("say what to compare with exactly one of: property, trait, user")
        operators = [o for o in OPERATORS if o in self.operators_set()]
        if len(operators) != 1:
            raise ValueError("use exactly one operator: " + ", ".join(OPERATORS))
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: not a valid regular expression: {exc}") from None
        # Resolved once here: conditions are evaluated on every event.
        self._operator = operators[0]
        self._operand = getattr(self, "in_" if self._operator == "in" else self._operator)
        return self

    _operator: str = PrivateAttr(default="")
    _operand: Any = PrivateAttr(default=None)

    def operators_set(self) -> set[str]:
        fields = self.model_fields_set
        return {("in" if f == "in_" else f) for f in fields} & set(OPERATORS)

    @property
    def operator(self) -> str:
        return self._operator

    @property
    def operand(self) -> Any:
        return self._operand


class EventCount(Strict):
    event: str = Field(description="event name to count")
    within: Duration | None = Field(default=None, description="only events this recent")
    where: Condition | None = Field(default=None, description="only events matching this")


class Count(Strict):
    """How many times the user did something, compared with a number."""

    count: EventCount
    eq: int | None = None
    ne: int | None = None
    lt: int | None = None
    lte: int | None = None
    gt: int | None = None
    gte: int | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Count:
        if len(self.operators()) != 1:
            raise ValueError("compare the count with exactly one of: eq, ne, lt, lte, gt, gte")
        return self

    def operators(self) -> list[str]:
        return [o for o in ("eq", "ne", "lt", "lte", "gt", "gte") if getattr(self, o) is not None]


class FirstTime(Strict):
    """True when the triggering event is the user's first event of that name."""

    first_time: bool


class SinceFirstSeen(Strict):
    more_than: Duration | None = None
    less_than: Duration | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> SinceFirstSeen:
        if (self.more_than is None) == (self.less_than is None):
            raise ValueError("give exactly one of more_than, less_than")
        return self


class FirstSeen(Strict):
    """Time since the user was first seen."""

    first_seen: SinceFirstSeen


class All(Strict):
    all: list[Condition] = Field(min_length=1)


class Any_(Strict):
    any: list[Condition] = Field(min_length=1)


class Not(Strict):
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return type(value).__name__
    if not isinstance(value, dict):
        return None
    for key, kind in (
        ("all", "All"),
        ("any", "Any_"),
        ("not", "Not"),
        ("count", "Count"),
        ("first_time", "FirstTime"),
        ("first_seen", "FirstSeen"),
    ):
        if key in value:
            return kind
    return "Comparison"


Condition = Annotated[
    Annotated[Comparison, Tag("Comparison")]
    | Annotated[Count, Tag("Count")]
    | Annotated[FirstTime, Tag("FirstTime")]
    | Annotated[FirstSeen, Tag("FirstSeen")]
    | Annotated[All, Tag("All")]
    | Annotated[Any_, Tag("Any_")]
    | Annotated[Not, Tag("Not")],
    Discriminator(
        _condition_kind,
        custom_error_type="invalid_condition",
        custom_error_message="a condition is a mapping: "
        "{property|trait|user: ..., <operator>: ...}, {count: ...}, {first_time: ...}, "
        "{first_seen: ...}, {all: [...]}, {any: [...]} or {not: ...}",
    ),
]


# --- Triggers --------------------------------------------------------------------------------


class StageChange(Strict):
    to: str | None = Field(default=None, description="the stage entered")
    from_: str | None = Field(default=None, alias="from", description="the stage left")


class Schedule(Strict):
    cron: str = Field(description="cron expression, in the user's own timezone, e.g. '0 9 * * MON'")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value


class Trigger(Strict):
    """What starts the rule: exactly one of event, stage_changed, inactive_for, schedule."""

    event: str | None = Field(default=None, description="an event name, e.g. 'Signed Up'")
    where: Condition | None = Field(default=None, description="conditions on that event")
    stage_changed: StageChange | None = None
    inactive_for: Duration | None = Field(default=None, description="no activity for this long")
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        kinds = [
            k
            for k in ("event", "stage_changed", "inactive_for", "schedule")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a trigger is exactly one of: event, stage_changed, inactive_for, schedule"
            )
        if self.where is not None and self.event is None:
            raise ValueError("where: only an event trigger has conditions on its event")
        return self

    @property
    def kind(self) -> str:
        for k in ("event", "stage_changed", "inactive_for", "schedule"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated trigger without a kind")


# --- Steps -----------------------------------------------------------------------------------


class Track(Strict):
    """Which of an email's opens and clicks Lifeline records itself, through its own links."""

    clicks: bool = Field(default=False, description="links go through Lifeline, which counts")
    opens: bool = Field(default=False, description="an invisible image counts the opens")

    @staticmethod
    def of(value: bool | Track | None) -> Track:
        if isinstance(value, Track):
            return value
        return Track(clicks=bool(value), opens=bool(value))


TemplateRef = Annotated[
    str | dict[str, str],
    Field(description="a template name, or a mapping of variant id to template name"),
]


class SendSpec(Strict):
    channel: Channel
    template: TemplateRef
    fallback: list[Channel] = Field(
        default_factory=list, description="channels to try in order when this one cannot be used"
    )
    to: str | None = Field(
        default=None,
        description="send to an address in the event instead of the user's own, "
        "e.g. properties.invitee_email (for people who are not users yet)",
    )
    track: bool | Track | None = Field(
        default=None,
        description="email only: true (opens and clicks), false, or {clicks, opens}; "
        "overrides the rule's track",
    )


class Send(Strict):
    send: SendSpec


_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WaitSpec(Strict):
    for_: Duration | None = Field(default=None, alias="for")
    until: str | None = Field(default=None, description="a local time of day, HH:MM")

    @model_validator(mode="after")
    def _one(self) -> WaitSpec:
        if (self.for_ is None) == (self.until is None):
            raise ValueError("wait: give either a duration (for) or a time of day (until)")
        if self.until is not None and not _TIME_OF_DAY.match(self.until):
            raise ValueError(f"until: {self.until!r} is not a time of day such as 09:00")
        return self


class Wait(Strict):
    wait: Annotated[
        WaitSpec,
        BeforeValidator(
            lambda v: v if isinstance(v, dict | BaseModel) else {"for": v},
            json_schema_input_type=Duration | WaitSpec,
        ),
    ]


class WaitForSpec(Strict):
    event: str
    timeout: Duration
    match: str | None = Field(
        default=None,
        description="a property that must be equal on both events, e.g. cart_id",
    )
    where: Condition | None = None


class WaitFor(Strict):
    wait_for: WaitForSpec
    on_event: list[Step] = Field(default_factory=list, description="steps when the event came")
    on_timeout: list[Step] = Field(default_factory=list, description="steps when it did not")


class Branch(Strict):
    if_: Condition = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class Exit(Strict):
    exit: str = Field(description="why the journey ends here")


def _bare_exit(value: Any) -> Any:
    """`- exit` on its own is short for `- exit: done`."""
    return {"exit": "done"} if value == "exit" else value


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return type(value).__name__
    if value == "exit":
        return "Exit"
    if isinstance(value, dict):
        for key, kind in (
            ("send", "Send"),
            ("wait_for", "WaitFor"),
            ("wait", "Wait"),
            ("if", "Branch"),
            ("exit", "Exit"),
        ):
            if key in value:
                return kind
    return None


Step = Annotated[
    Annotated[Send, Tag("Send")]
    | Annotated[Wait, Tag("Wait")]
    | Annotated[WaitFor, Tag("WaitFor")]
    | Annotated[Branch, Tag("Branch")]
    | Annotated[
        Exit,
        BeforeValidator(_bare_exit, json_schema_input_type=Literal["exit"] | Exit),
        Tag("Exit"),
    ],
    Discriminator(
        _step_kind,
        custom_error_type="invalid_step",
        custom_error_message="a step is one of: send, wait, wait_for, if, exit",
    ),
]


# --- Rules -----------------------------------------------------------------------------------


class Entry(Strict):
    once_per: Duration


class Goal(Strict):
    event: str
    within: Duration
    where: Condition | None = None


class Variant(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    weight: float = Field(gt=0)


class Rule(Strict):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        max_length=100,
        description="unique, lower-case: letters, digits, - and _",
    )
    description: str | None = None
    category: Literal["acquisition", "activation", "retention", "recall"] = Field(
        description="which part of the lifecycle this rule serves (for reports)"
    )
    enabled: bool = True
    trigger: Trigger
    when: Condition | None = Field(default=None, description="who qualifies")
    entry: Literal["once", "every_time"] | Entry = Field(
        default="once", description="once ever, every_time, or {once_per: 30d}"
    )
    key: str | None = Field(
        default=None,
        description="an event property; one active journey per user per value (e.g. cart_id)",
    )
    priority: int = Field(default=0, description="higher goes first when rules compete")
    transactional: bool = Field(
        default=False, description="bypasses frequency caps and quiet hours; use sparingly"
    )
    holdout: Percent = Field(default=0, description="share of users kept out, for measuring")
    variants: list[Variant] = Field(default_factory=list)
    goal: Goal | None = None
    track: bool | Track = Field(
        default=False,
        description="record opens and clicks of the rule's emails: true for both, or "
        "{clicks, opens}; a send step's own track overrides it",
    )
    exit_on: list[str] = Field(default_factory=list, description="events that end the journey")
    steps: list[Step] = Field(min_length=1)


class RuleFile(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, title="Lifeline rules")

    rules: list[Rule] = Field(default_factory=list)


class EventCatalog(Strict):
    """rules/events.yaml: the tracking plan. Rules may only use events listed here."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Lifeline event catalog")

    events: list[str] = Field(
        default_factory=list, description="every event name the product sends, spelled exactly"
    )


for _model in (EventCount, All, Any_, Not, Trigger, WaitFor, Branch, Goal, Rule, RuleFile):
    _model.model_rebuild()
