"""The Segment-compatible tracking endpoints: /v1/identify, /v1/track, ..., /v1/batch."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request

from service.ingest.deps import Ingestion, ingestion
from service.ingest.schemas import (
    CALL_TYPES,
    MAX_REQUEST_BYTES,
    BatchEnvelope,
    Call,
    InvalidRequest,
    parse_batch,
    parse_single,
)
from service.ingest.service import event_rows
from service.kit.db import utcnow
from service.kit.http import JSON

router = APIRouter(prefix="/v1", tags=["tracking"])

OK = JSON({"success": True})


async def _read_body(request: Request) -> bytes:
    """The request body, decompressed, refusing anything over the 500 KB limit."""
    too_large = InvalidRequest(
        413, f"request body exceeds the limit of {MAX_REQUEST_BYTES} bytes (500 KB)"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, MAX_REQUEST_BYTES + 1)
        except zlib.error:
            raise InvalidRequest(400, "the body is not valid gzip") from None
        if len(body) > MAX_REQUEST_BYTES:
            raise too_large
    elif encoding != "identity":
        raise InvalidRequest(415, f"unsupported Content-Encoding {encoding!r}; use gzip")
    return body


def _load_json(body: bytes) -> Any:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(400, f"the body is not valid JSON: {exc}") from None
    if b"\\u0000" in body:  # a byte search first, so the usual body pays nothing more
        _refuse_nul(payload)
    return payload


def _refuse_nul(payload: Any) -> None:
    """PostgreSQL keeps no NUL character in text or JSON: that is the client's error, not a 5xx."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(payload, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, dict):
            stack.extend((item, (*loc, key)) for key, item in value.items())
            bad = next((key for key in value if "\x00" in key), None)
        elif isinstance(value, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(value))
            bad = None
        else:
            bad = "" if isinstance(value, str) and "\x00" in value else None
        if bad is None:
            continue
        loc = (*loc, bad) if bad else loc
        entry: dict[str, Any] = {}
        if len(loc) > 1 and loc[0] == "batch" and isinstance(loc[1], int):
            entry["index"], loc = loc[1], loc[2:]
        entry["field"] = ".".join(str(part) for part in loc) or None
        entry["message"] = "text may not contain the NUL character (\\u0000)"
        where = f"batch[{entry['index']}]." if "index" in entry else ""
        raise InvalidRequest(400, f"{where}{entry['field']}: {entry['message']}", [entry])


async def _accept(
    ingest: Ingestion, calls: list[Call], source_id: int, envelope: BatchEnvelope | None = None
) -> JSON:
    """Commit the new events, answer 200, and hand them to the workers (see dispatch.py)."""
    new_ids = await ingest.writer.insert(event_rows(source_id, calls, utcnow(), envelope))
    ingest.dispatcher.add(new_ids)
    return OK


@router.post("/batch", summary="Send many calls in one request (what Segment's libraries use)")
async def batch(request: Request) -> JSON:
    ingest = ingestion(request)
    source_id = await ingest.source_id(request)
    payload = _load_json(await _read_body(request))
    items = payload.get("batch") if isinstance(payload, dict) else None
    sizes = [len(orjson.dumps(item)) for item in items] if isinstance(items, list) else []
    envelope, calls = parse_batch(payload, sizes)
    return await _accept(ingest, calls, source_id, envelope)


def _single_endpoint(call_type: str) -> Any:
    async def endpoint(request: Request) -> JSON:
        ingest = ingestion(request)
        source_id = await ingest.source_id(request)
        body = await _read_body(request)
        calls = parse_single(_load_json(body), call_type, len(body))
        return await _accept(ingest, calls, source_id)

    endpoint.__name__ = call_type
    return endpoint


for _call_type in CALL_TYPES:
    router.add_api_route(
        f"/{_call_type}",
        _single_endpoint(_call_type),
        methods=["POST"],
        summary=f"Send one {_call_type} call",
    )
