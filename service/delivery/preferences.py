"""What the signed links in messages do: unsubscribe in one click, and the preference page.

A link's token names the profile, the channel, the topic (the rule's category) and the message
it came in. Whoever holds the link may change that profile's subscriptions, and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.delivery import consent
from service.delivery.consent import ALL_TOPICS, CHANNELS, SUPPRESSIBLE, TOPICS
from service.delivery.links import LinkClaims
from service.delivery.service import set_status
from service.models import Message, MessageStatus, User

Preferences = dict[tuple[str, str], bool]  # (channel, topic or '*') -> subscribed


@dataclass(frozen=True)
class Unsubscribed:
    channel: str
    topic: str  # ALL_TOPICS: every message on the channel


def _message(session: Session, claims: LinkClaims) -> Message | None:
    if claims.message_id is None:
        return None
    return session.get(Message, claims.message_id, with_for_update=True)


def _profile(session: Session, claims: LinkClaims, message: Message | None) -> User | None:
    """The link's profile; after a merge, the profile its message moved to. None when the
    person was erased or the profile is gone."""
    user = session.get(User, claims.profile_id)
    if user is None and message is not None and message.profile_id is not None:
        user = session.get(User, message.profile_id)
    if user is None or user.erased_at is not None or claims.channel not in CHANNELS:
        return None
    return user


def unsubscribe(
    session: Session, claims: LinkClaims, everything: bool, now: dt.datetime
) -> Unsubscribed | None:
    """Unsubscribe from the link's topic (or from the whole channel). A message sent to an
    address that is not the profile's own (an invitation) suppresses that address instead:
    the person who clicked is its recipient, not the profile. None: nothing to unsubscribe."""
    message = _message(session, claims)
    if message is not None and message.to_address:
        # An address that does not read as one could not have been sent to either.
        if message.channel in SUPPRESSIBLE:
            with contextlib.suppress(consent.InvalidAddress):
                consent.suppress(session, message.channel, message.to_address, "unsubscribe", now)
        result = Unsubscribed(message.channel, ALL_TOPICS)
    else:
        user = _profile(session, claims, message)
        if user is None:
            return None
        topic = ALL_TOPICS if everything or claims.topic not in TOPICS else claims.topic
        consent.set_subscription(
            session, user, claims.channel, topic, False, "unsubscribe_link", now
        )
        result = Unsubscribed(claims.channel, topic)
    if message is not None and MessageStatus(message.status).can_move_to(
        MessageStatus.UNSUBSCRIBED
    ):
        scope = "all topics" if result.topic == ALL_TOPICS else result.topic
        set_status(
            session,
            message,
            MessageStatus.UNSUBSCRIBED,
            now,
            f"unsubscribed through its link ({scope})",
        )
    return result


def current(session: Session, claims: LinkClaims) -> Preferences | None:
    user = _profile(session, claims, _message(session, claims))
    return None if user is None else _state(session, user)


def save(
    session: Session, claims: LinkClaims, wanted: set[tuple[str, str]], now: dt.datetime
) -> Preferences | None:
    """Store the page's checkboxes (`wanted`: the checked ones); only changes are written,
    so each row keeps the source and time of the person's last real decision."""
    user = _profile(session, claims, _message(session, claims))
    if user is None:
        return None
    for (channel, topic), subscribed in _state(session, user).items():
        if ((channel, topic) in wanted) != subscribed:
            consent.set_subscription(
                session, user, channel, topic, not subscribed, "preference_page", now
            )
    return _state(session, user)


def _state(session: Session, user: User) -> Preferences:
    state = {(channel, topic): True for channel in CHANNELS for topic in (ALL_TOPICS, *TOPICS)}
    for row in consent.subscriptions(session, user.id):
        if (row.channel, row.topic) in state:
            state[(row.channel, row.topic)] = row.subscribed
    return state
