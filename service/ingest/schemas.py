"""The Segment HTTP Tracking API payloads, validated field by field.

Field names are Segment's. Fields Segment's libraries add that Lifeline does not use
(`_metadata`, `channel`, `version`, ...) are accepted and ignored, as Segment does.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_MESSAGE_ID_CHARS = 100


def _id_to_str(value: Any) -> Any:
    """Segment accepts numeric ids and stores them as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


# asyncpg writes the first and last datetimes as -infinity and infinity, which no reader takes
# back, and 0001-01-01T00:00+01:00 is no datetime at all in UTC: accept a day short of either end.
_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(days=1)


def _storable_instant(value: dt.datetime) -> dt.datetime:
    try:
        utc = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or not _EARLIEST <= utc <= _LATEST:
        raise ValueError("time out of range: 0001-01-02 to 9999-12-30 in UTC")
    return value


Id = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=200)]
Timestamp = Annotated[dt.datetime, AfterValidator(_storable_instant)]


class Call(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str

    user_id: Id | None = Field(default=None, alias="userId")
    anonymous_id: Id | None = Field(default=None, alias="anonymousId")
    message_id: str | None = Field(
        default=None, alias="messageId", min_length=1, max_length=MAX_MESSAGE_ID_CHARS
    )
    timestamp: Timestamp | None = None
    sent_at: Timestamp | None = Field(default=None, alias="sentAt")
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _needs_identity(self) -> Call:
        if self.user_id is None and self.anonymous_id is None:
            raise PydanticCustomError(
                "missing_identity", "userId or anonymousId is required", {"field": "userId"}
            )
        self.timestamp = _aware(self.timestamp)
        self.sent_at = _aware(self.sent_at)
        return self


class Identify(Call):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _traits_from_context(self) -> Identify:
        """RudderStack's libraries send an identify's traits in context.traits only."""
        if self.traits is None and self.context and isinstance(self.context.get("traits"), dict):
            self.traits = self.context["traits"]
        return self


class Track(Call):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] | None = None


class Page(Call):
    type: Literal["page"] = "page"
    name: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] | None = None


class Screen(Call):
    type: Literal["screen"] = "screen"
    name: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] | None = None


class Group(Call):
    type: Literal["group"] = "group"
    group_id: Id = Field(alias="groupId")
    traits: dict[str, Any] | None = None


class Alias(Call):
    type: Literal["alias"] = "alias"
    previous_id: Id = Field(alias="previousId")
    user_id: Id = Field(alias="userId")


AnyCall = Annotated[Identify | Track | Page | Screen | Group | Alias, Field(discriminator="type")]
CALL_TYPES: dict[str, type[Call]] = {
    "identify": Identify,
    "track": Track,
    "page": Page,
    "screen": Screen,
    "group": Group,
    "alias": Alias,
}

_batch_adapter: TypeAdapter[list[AnyCall]] = TypeAdapter(list[AnyCall])


class BatchEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sent_at: Timestamp | None = Field(default=None, alias="sentAt")
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class InvalidRequest(Exception):
    """A client error, with the batch index and field of each problem."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        # `code` and `message` as well: RudderStack's library reads those two from any error.
        code = {401: "unauthorized", 413: "too_large"}.get(self.status, "invalid_request")
        return {
            "success": False,
            "error": self.message,
            "errors": self.errors,
            "code": code,
            "message": self.message,
        }


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(part)
    return ".".join(parts)


def _describe(exc: ValidationError, *, in_batch: bool) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        entry: dict[str, Any] = {}
        if in_batch and loc and isinstance(loc[0], int):
            entry["index"] = loc[0]
            loc = loc[1:]
        if loc and loc[0] in CALL_TYPES:  # the discriminator's tag is not a field
            loc = loc[1:]
        if err["type"] == "missing_identity":
            loc = ("userId",)
        message = err["msg"]
        if err["type"] == "union_tag_invalid":
            loc = ("type",)
            message = f"unknown type {err['input'].get('type')!r}; expected one of " + ", ".join(
                CALL_TYPES
            )
        elif err["type"] == "union_tag_not_found":
            loc = ("type",)
            message = "type is required: one of " + ", ".join(CALL_TYPES)
        entry["field"] = _field_path(loc) or None
        entry["message"] = message
        errors.append(entry)
    return errors


def _summary(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    where = f"batch[{first['index']}]" if "index" in first else ""
    if first.get("field"):
        where = f"{where}.{first['field']}" if where else first["field"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['message']}{more}" if where else first["message"] + more


def _check_event_sizes(items: list[Any], sizes: list[int], in_batch: bool) -> None:
    errors = [
        {
            **({"index": i} if in_batch else {}),
            "field": None,
            "message": f"event is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB)",
        }
        for i, size in enumerate(sizes)
        if size > MAX_EVENT_BYTES
    ]
    if errors:
        raise InvalidRequest(400, "event too large: " + _summary(errors), errors)


def parse_single(payload: Any, call_type: str, size: int) -> list[Call]:
    """Validate the body of /v1/{identify,track,...}."""
    if not isinstance(payload, dict):
        raise InvalidRequest(400, "the body must be a JSON object")
    _check_event_sizes([payload], [size], in_batch=False)
    try:
        return [CALL_TYPES[call_type].model_validate({**payload, "type": call_type})]
    except ValidationError as exc:
        errors = _describe(exc, in_batch=False)
        raise InvalidRequest(400, _summary(errors), errors) from None


def parse_batch(payload: Any, item_sizes: list[int]) -> tuple[BatchEnvelope, list[Call]]:
    """Validate the body of /v1/batch; `item_sizes` are the serialized sizes of its items."""
    if not isinstance(payload, dict):
        raise InvalidRequest(400, "the body must be a JSON object")
    batch = payload.get("batch")
    if not isinstance(batch, list):
        error = {"field": "batch", "message": "batch must be a list of events"}
        raise InvalidRequest(400, "batch: batch must be a list of events", [error])
    _check_event_sizes(batch, item_sizes, in_batch=True)
    try:
        envelope = BatchEnvelope.model_validate(payload)
    except ValidationError as exc:
        errors = _describe(exc, in_batch=False)
        raise InvalidRequest(400, _summary(errors), errors) from None
    try:
        calls: list[Call] = list(_batch_adapter.validate_python(batch))
    except ValidationError as exc:
        errors = _describe(exc, in_batch=True)
        raise InvalidRequest(400, _summary(errors), errors) from None
    return envelope, calls
