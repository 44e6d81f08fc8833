"""Push devices that backends register for their users: checked tokens, one row per token.

A token identifies an app installation (iOS, Android) or a browser's push subscription (web),
not a person: when someone logs out and another person logs in on the same phone, the backend
registers the same token for the new user and the device moves to them, so the first person
gets no more pushes there. A web subscription is stored as compact JSON
`{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}` and is the same device as any other
subscription with its endpoint (browsers may renew the keys).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.db import utcnow
from service.models import Device, User

Platform = Literal["ios", "android", "web"]
MAX_TOKEN = 4096  # the Device.token column
APNS_TOKEN = re.compile(r"^[0-9a-f]{64,200}$")
P256DH_BYTES = 65  # an uncompressed P-256 point (RFC 8291)
AUTH_BYTES = 16


class InvalidToken(ValueError):
    """A token that cannot be a device of its platform; the message says what is wrong."""


def normalise_token(platform: str, token: object) -> str:
    """The token as stored: APNs hex lower-cased, FCM as given, a web subscription (an object,
    or its JSON text) as compact JSON of endpoint and keys only."""
    if platform == "web":
        return _web_subscription(token)
    if not isinstance(token, str):
        raise InvalidToken(f"a {platform} token is a string")
    if platform == "ios":
        hex_token = token.strip().lower()
        if not APNS_TOKEN.match(hex_token):
            raise InvalidToken("an APNs device token is 64 to 200 hexadecimal characters")
        return hex_token
    if (
        not token
        or len(token) > MAX_TOKEN
        or any(c.isspace() or not c.isprintable() for c in token)
    ):
        raise InvalidToken(
            f"an FCM registration token is 1 to {MAX_TOKEN} characters, with no spaces"
        )
    return token


def _web_subscription(token: object) -> str:
    if isinstance(token, str):
        try:
            token = json.loads(token)
        except ValueError:
            raise InvalidToken(
                "a web token is the browser's PushSubscription: "
                '{"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}'
            ) from None
    if not isinstance(token, dict):
        raise InvalidToken("a web token is a PushSubscription object: endpoint and keys")
    unknown = set(token) - {"endpoint", "keys", "expirationTime"}
    if unknown:
        raise InvalidToken(f"unknown PushSubscription fields: {', '.join(sorted(unknown))}")
    endpoint = _endpoint(token.get("endpoint"))
    keys = token.get("keys")
    if not isinstance(keys, dict):
        raise InvalidToken("keys: the subscription's p256dh and auth keys are missing")
    p256dh = _base64url(keys.get("p256dh"), "keys.p256dh", P256DH_BYTES)
    auth = _base64url(keys.get("auth"), "keys.auth", AUTH_BYTES)
    stored = json.dumps(
        {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}, separators=(",", ":")
    )
    if len(stored) > MAX_TOKEN:
        raise InvalidToken("the subscription is too long")
    return stored


def _endpoint(value: object) -> str:
    """The push service's URL. Only a public https host: the worker posts to this URL, and
    it comes from a browser, so it must not point at the worker's own network."""
    if not isinstance(value, str) or not value:
        raise InvalidToken("endpoint: the push service URL is missing")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        raise InvalidToken("endpoint: not a URL") from None
    if parts.scheme != "https" or not host:
        raise InvalidToken("endpoint: must be an https:// URL")
    if host == "localhost" or "." not in host or _is_ip(host):
        raise InvalidToken("endpoint: must name a push service by its public host name")
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _base64url(value: object, name: str, size: int) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", value):
        raise InvalidToken(f"{name}: must be base64url text")
    text = value.rstrip("=")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken(f"{name}: must be base64url text") from None
    if len(decoded) != size:
        raise InvalidToken(f"{name}: must encode {size} bytes, not {len(decoded)}")
    return text


def hint(device: Device) -> str:
    """Enough to tell a user's devices apart, not enough to send to one."""
    if device.platform == "web":
        return urlsplit(json.loads(device.token)["endpoint"]).hostname or ""
    return "…" + device.token[-6:]


def _same_device(platform: str, token: str) -> Any:
    """The condition that finds a token's existing rows: for web, by endpoint."""
    if platform == "web":
        endpoint = json.loads(token)["endpoint"]
        prefix = json.dumps({"endpoint": endpoint}, separators=(",", ":"))[:-1] + ","
        return (Device.platform == "web") & Device.token.startswith(prefix, autoescape=True)
    return (Device.platform == platform) & (Device.token == token)


async def register(
    session: AsyncSession, user: User, platform: str, token: str
) -> tuple[Device, bool]:
    """The user's device for the (normalised) token, and whether it is new. An existing row
    is re-enabled and takes the newest keys; one of another user's moves to this user."""
    now = utcnow()
    rows = list(
        await session.scalars(
            select(Device)
            .where(_same_device(platform, token))
            .order_by(Device.id)
            .with_for_update()
        )
    )
    if not rows:
        device = Device(profile_id=user.id, platform=platform, token=token, created_at=now)
        session.add(device)
        await session.flush()
        return device, True
    device, *duplicates = rows
    for duplicate in duplicates:
        await session.delete(duplicate)
    if device.profile_id != user.id:
        device.profile_id, device.created_at = user.id, now
    device.token, device.disabled_at = token, None
    await session.flush()
    return device, False


async def devices(session: AsyncSession, profile_id: int) -> list[Device]:
    rows = await session.scalars(
        select(Device).where(Device.profile_id == profile_id).order_by(Device.id.desc())
    )
    return list(rows)


async def remove(session: AsyncSession, profile_id: int, device_id: int) -> bool:
    result = await session.execute(
        delete(Device).where(Device.id == device_id, Device.profile_id == profile_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def remove_token(session: AsyncSession, profile_id: int, platform: str, token: str) -> bool:
    result = await session.execute(
        delete(Device).where(Device.profile_id == profile_id, _same_device(platform, token))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
