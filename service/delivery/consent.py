"""Consent: who asked not to get which messages, and which addresses get nothing at all.

Subscriptions belong to a profile, per channel and topic (a rule's category), with '*' for
every topic of a channel; no row means subscribed. Suppressions belong to an address,
whoever it belongs to. Transactional messages (receipts, password resets) ignore
subscriptions and unsubscribes, but not hard bounces, complaints or an operator's block.

Everything here is synchronous: the worker calls it inside its claim, the API through
`AsyncSession.run_sync`, so both apply exactly the same rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.kit.db import insert_ignoring_conflicts
from service.models import Device, Subscription, Suppression, User
from service.users.profile import normalise_email, normalise_phone

CHANNELS = ("email", "sms", "push")
TOPICS = ("acquisition", "activation", "retention", "recall")  # the rules' categories
ALL_TOPICS = "*"
SUPPRESSIBLE = ("email", "sms")  # push tokens are disabled on the device instead
REASONS = ("unsubscribe", "hard_bounce", "complaint", "admin")
BLOCKS_TRANSACTIONAL = frozenset({"hard_bounce", "complaint", "admin"})


class InvalidAddress(ValueError):
    pass


def normalise_address(channel: str, address: str) -> str:
    """The form an address is stored and looked up in: email lower-cased, phone E.164."""
    if channel == "email":
        email = normalise_email(address)
        if email is None:
            raise InvalidAddress(f"not an email address: {address!r}")
        return email.lower()
    if channel == "sms":
        phone, _ = normalise_phone(address, {})
        if phone is None:
            raise InvalidAddress(f"not a phone number in international format: {address!r}")
        return phone
    raise InvalidAddress(f"{channel} addresses are not suppressed (only {SUPPRESSIBLE})")


def _normalised_or_none(channel: str, address: str) -> str | None:
    try:
        return normalise_address(channel, address)
    except InvalidAddress:
        return None


# --- Checks, right before sending ----------------------------------------------------------


@dataclass
class Snapshot:
    """What the checks before sending need to know about consent, read for a whole batch of
    messages at once: one query for the profiles' subscriptions, one for the addresses'
    suppressions."""

    said_no: dict[tuple[int, str], set[str]]  # (profile, channel) -> topics it said no to
    suppressions: dict[tuple[str, str], str]  # (channel, normalised address) -> reason

    @classmethod
    def load(
        cls,
        session: Session,
        profile_ids: Iterable[int],
        addresses: Iterable[tuple[str, str]],
    ) -> Snapshot:
        said_no: dict[tuple[int, str], set[str]] = {}
        if profile_ids := set(profile_ids):
            rows = session.execute(
                select(Subscription.profile_id, Subscription.channel, Subscription.topic).where(
                    Subscription.profile_id.in_(profile_ids), Subscription.subscribed.is_(False)
                )
            )
            for profile_id, channel, topic in rows:
                said_no.setdefault((profile_id, channel), set()).add(topic)
        wanted = {
            (channel, normalised)
            for channel, address in addresses
            if channel in SUPPRESSIBLE
            and (normalised := _normalised_or_none(channel, address)) is not None
        }
        suppressions: dict[tuple[str, str], str] = {}
        for channel in {channel for channel, _ in wanted}:
            listed = [address for c, address in wanted if c == channel]
            found = session.execute(
                select(Suppression.address, Suppression.reason).where(
                    Suppression.channel == channel, Suppression.address.in_(listed)
                )
            )
            suppressions.update(((channel, address), reason) for address, reason in found)
        return cls(said_no, suppressions)

    def may_send(self, profile_id: int, channel: str, topic: str) -> str | None:
        """Why the profile must not get a marketing message on `channel` about `topic`; None
        when it may."""
        said_no = self.said_no.get((profile_id, channel), set())
        if ALL_TOPICS in said_no:
            return f"unsubscribed from {channel} (all topics)"
        if topic in said_no:
            return f"unsubscribed from {channel}: {topic}"
        return None

    def suppressed(self, channel: str, address: str, transactional: bool = False) -> str | None:
        """Why nothing may go to this address; None when it may. A transactional message
        passes an address suppressed only because its owner unsubscribed."""
        normalised = _normalised_or_none(channel, address) if channel in SUPPRESSIBLE else None
        reason = self.suppressions.get((channel, normalised)) if normalised else None
        if reason is None or (transactional and reason not in BLOCKS_TRANSACTIONAL):
            return None
        return f"{channel} address suppressed: {reason.replace('_', ' ')}"


# --- Changes --------------------------------------------------------------------------------


def subscriptions(session: Session, profile_id: int) -> list[Subscription]:
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.profile_id == profile_id)
            .order_by(Subscription.channel, Subscription.topic)
        )
    )


def profile_address(user: User, channel: str) -> str | None:
    """The profile's own address on a suppressible channel, normalised."""
    value = {"email": user.email, "sms": user.phone}.get(channel)
    return _normalised_or_none(channel, value) if value else None


def set_subscription(
    session: Session,
    user: User,
    channel: str,
    topic: str,
    subscribed: bool,
    source: str,
    now: dt.datetime,
) -> Subscription:
    """Record what the person (or a backend for them) said. Leaving a whole channel also
    suppresses the profile's address there; joining it again lifts that suppression, but not
    one from a bounce, a complaint or an operator."""
    statement = insert_ignoring_conflicts(
        Subscription.__table__,
        session.get_bind().dialect.name,
        ["profile_id", "channel", "topic"],
    )
    values = {"profile_id": user.id, "channel": channel, "topic": topic}
    session.execute(
        statement, [{**values, "subscribed": subscribed, "source": source, "updated_at": now}]
    )
    row = session.scalars(select(Subscription).filter_by(**values).with_for_update()).one()
    row.subscribed, row.source, row.updated_at = subscribed, source, now
    address = profile_address(user, channel) if topic == ALL_TOPICS else None
    if address is not None:
        if subscribed:
            lift(session, channel, address, only="unsubscribe")
        else:
            suppress(session, channel, address, "unsubscribe", now)
    return row


def suppress(
    session: Session, channel: str, address: str, reason: str, now: dt.datetime
) -> Suppression:
    """Add the address to the suppression list. An address already there keeps its row; its
    reason changes only to one that also stops transactional messages."""
    normalised = normalise_address(channel, address)
    statement = insert_ignoring_conflicts(
        Suppression.__table__, session.get_bind().dialect.name, ["channel", "address"]
    )
    session.execute(
        statement,
        [{"channel": channel, "address": normalised, "reason": reason, "created_at": now}],
    )
    row = session.scalars(
        select(Suppression)
        .where(Suppression.channel == channel, Suppression.address == normalised)
        .with_for_update()
    ).one()
    if reason in BLOCKS_TRANSACTIONAL and row.reason not in BLOCKS_TRANSACTIONAL:
        row.reason, row.created_at = reason, now
    return row


def lift(session: Session, channel: str, address: str, only: str | None = None) -> bool:
    """Take the address off the list (only if suppressed for `only`, when given); whether it
    was there."""
    row = session.scalar(
        select(Suppression)
        .where(
            Suppression.channel == channel,
            Suppression.address == normalise_address(channel, address),
        )
        .with_for_update()
    )
    if row is None or (only is not None and row.reason != only):
        return False
    session.delete(row)
    return True


def address_gone(
    session: Session, channel: str, address: str, user: User | None, now: dt.datetime
) -> str:
    """Act on a provider's word that an address is gone: a push device is disabled, an email
    address suppressed as a hard bounce, and a phone whose owner opted out at the provider
    (Twilio 21610, STOP) unsubscribed from SMS. What was done, for the status history."""
    if channel == "push":
        session.execute(
            update(Device)
            .where(Device.token == address, Device.disabled_at.is_(None))
            .values(disabled_at=now)
        )
        return "the device was disabled"
    if channel == "sms":
        if user is not None and profile_address(user, "sms") == _normalised_or_none("sms", address):
            set_subscription(session, user, "sms", ALL_TOPICS, False, "provider", now)
            return "the user was unsubscribed from SMS"
        if _normalised_or_none("sms", address) is None:
            return "the number is not valid, nothing suppressed"
        suppress(session, "sms", address, "unsubscribe", now)
        return "the number was suppressed"
    if _normalised_or_none(channel, address) is None:
        return "the address is not valid, nothing suppressed"
    suppress(session, channel, address, "hard_bounce", now)
    return "the address was suppressed"


def merge_subscriptions(session: Session, old_id: int, into_id: int) -> None:
    """Before a profile merge moves `old_id`'s rows to `into_id`: where both profiles said
    something about the same channel and topic, the later statement stays."""
    kept = {
        (row.channel, row.topic): row
        for row in session.scalars(
            select(Subscription).where(Subscription.profile_id == into_id).with_for_update()
        )
    }
    for row in session.scalars(
        select(Subscription).where(Subscription.profile_id == old_id).with_for_update()
    ):
        other = kept.get((row.channel, row.topic))
        if other is None:
            continue
        session.delete(other if row.updated_at > other.updated_at else row)
    session.flush()
