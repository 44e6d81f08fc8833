"""Sources and their write keys. A key is shown once, at creation; only its hash is stored."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from starlette.requests import Request

from service.kit.db import utcnow
from service.models import Source

KEY_PREFIX = "ll_"


class SourceError(Exception):
    pass


def hash_key(key: str) -> str:
    # Write keys are 192 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedSource:
    name: str
    write_key: str


def create_source(session: Session, name: str) -> CreatedSource:
    name = name.strip()
    if not name or len(name) > 100:
        raise SourceError("a source name is 1 to 100 characters")
    if session.scalar(select(Source.id).where(Source.name == name)) is not None:
        raise SourceError(f"a source named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    session.add(Source(name=name, key_hash=hash_key(key), key_prefix=key[:8], created_at=utcnow()))
    session.flush()
    return CreatedSource(name=name, write_key=key)


def list_sources(session: Session) -> list[Source]:
    return list(session.scalars(select(Source).order_by(Source.name)))


def revoke_source(session: Session, name: str) -> None:
    result = session.execute(
        update(Source)
        .where(Source.name == name, Source.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        exists = session.scalar(select(Source.id).where(Source.name == name))
        raise SourceError(
            f"source {name!r} is already revoked" if exists else f"no source named {name!r}"
        )


class SourceCache:
    """Write key hash -> source id, for `ttl` seconds, so most requests skip the lookup."""

    MAX_ENTRIES = 10_000

    def __init__(self, engine: AsyncEngine, ttl: float):
        self.engine = engine
        self.ttl = ttl
        self._entries: dict[str, tuple[int | None, float]] = {}

    async def source_id(self, key: str) -> int | None:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.engine.connect() as conn:
            source_id = await conn.scalar(
                select(Source.id).where(Source.key_hash == digest, Source.revoked_at.is_(None))
            )
        if self.ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = (source_id, now + self.ttl)
        return source_id


def write_key(request: Request) -> str | None:
    """Segment's libraries send the write key as the Basic username; Bearer is accepted too."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None
