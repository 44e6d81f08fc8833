"""Lifeline's own open and click tracking, for emails whose rule asks for it (`track`) and
whose provider tracks nothing itself.

When a message is claimed, its HTML links go through Lifeline's click URL (links.CLICK_PATH)
and an invisible image at its open URL (links.OPEN_PATH) is added before `</body>`. Links to
Lifeline's own pages (unsubscribe, preferences) stay direct, as do mailto:, tel: and #anchors.

A click token is signed and carries the message id and the target URL itself, so the redirect
depends on nothing that can change after sending (a template edited, a rule set reloaded, a
person erased, the database down), and a URL that is not the signed one is refused: the link
cannot be used as an open redirect. Tokens do not expire: a link in a year-old email still
leads where it said. They are itsdangerous URLSafeSerializer tokens signed with a key derived
from LIFELINE_SECRET_KEY for clicks only or opens only (each its own salt), so no tracking
token is ever a valid unsubscribe token, nor an open's a click's, or the other way round.

A hit becomes a delivery report of the account `lifeline` (service.delivery.receipts), which
moves the status forward and puts "Email Opened" / "Email Link Clicked" on the person's
timeline. Reports are idempotent by event id: one open per message and one click per message
and URL, so mail clients that load images again, and people who click a link twice, do not
flood the timeline or start a rule twice.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html
import json
import re
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy.orm import Session

from service.delivery.links import click_url, open_url
from service.delivery.providers import Report
from service.engine import program
from service.engine.index import RuleIndex
from service.engine.staff_format import Track
from service.engine.versions import rule_for
from service.models import Journey, Message

ACCOUNT = "lifeline"  # the delivery reports' account: Lifeline itself, not a provider
CLICK_SALT = "lifeline.tracking.click"
OPEN_SALT = "lifeline.tracking.open"
# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# <a ...> and <area ...> tags; attribute values may hold ">".
_LINK_TAG = re.compile(r"""<(?:a|area)\b(?:[^>"']|"[^"]*"|'[^']*')*>""", re.IGNORECASE)
_HREF = re.compile(r"""(?<=\s)(href\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_WEB = re.compile(r"^https?://", re.IGNORECASE)


@dataclass(frozen=True)
class Hit:
    message_id: int
    url: str | None = None  # a click's target; None for an open

    @property
    def kind(self) -> str:
        return "open" if self.url is None else "click"


def _serializer(key: bytes, click: bool) -> URLSafeSerializer:
    salt = CLICK_SALT if click else OPEN_SALT
    return URLSafeSerializer(key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})


def sign(key: bytes, hit: Hit) -> str:
    claims: dict[str, object] = {"m": hit.message_id}
    if hit.url is not None:
        claims["u"] = hit.url
    return _serializer(key, click=hit.url is not None).dumps(claims)


def verify(key: bytes, token: str, click: bool) -> Hit | None:
    """The hit a genuine token stands for (a click's has a web URL, an open's none); None for
    anything else."""
    try:
        claims = _serializer(key, click).loads(token)
    except BadData:
        return _verify_legacy(key, token, click)
    return _of_kind(Hit(claims["m"], claims.get("u")), click)


def _of_kind(hit: Hit, click: bool) -> Hit | None:
    """The hit if it is of the kind asked for: only a web URL is ever a click's target."""
    if click != (isinstance(hit.url, str) and bool(_WEB.match(hit.url))):
        return None
    return hit


def _verify_legacy(key: bytes, token: str, click: bool) -> Hit | None:
    """`verify` for tokens of the format before itsdangerous: base64url(JSON claims) "."
    base64url(HMAC-SHA256 of the JSON with a key derived for tracking). It exists for the links
    in emails sent before the change; tracking tokens never expire, so it stays for as long as
    such an email may still be opened or clicked (tests/legacy_tokens.py mints them)."""
    try:
        payload_text, signature_text = token.split(".", 1)
        payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
        signature = base64.urlsafe_b64decode(signature_text + "=" * (-len(signature_text) % 4))
    except (ValueError, UnicodeEncodeError):
        return None
    tracking_key = hmac.new(key, b"lifeline tracking links", hashlib.sha256).digest()
    expected = hmac.new(tracking_key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = json.loads(payload)
        hit = Hit(int(claims["m"]), claims.get("u"))
    except (ValueError, KeyError, TypeError):
        return None
    return _of_kind(hit, click)


def rewrite(markup: str, public_url: str, key: bytes, message_id: int, track: Track) -> str:
    """The email's HTML with its web links through Lifeline (clicks) and the image that
    counts opens (opens)."""
    own = f"{public_url}/v1/"

    def link(match: re.Match[str]) -> str:
        quoted, single, bare = match.group(2, 3, 4)
        url = html.unescape(next(v for v in (quoted, single, bare) if v is not None)).strip()
        if not _WEB.match(url) or url.startswith(own):
            return match.group(0)
        tracked = click_url(public_url, sign(key, Hit(message_id, url)))
        return f'{match.group(1)}"{tracked}"'

    if track.clicks:
        markup = _LINK_TAG.sub(lambda tag: _HREF.sub(link, tag.group(0), count=1), markup)
    if track.opens:
        src = open_url(public_url, sign(key, Hit(message_id)))
        pixel = (
            f'<img src="{src}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">'
        )
        ends = list(_BODY_END.finditer(markup))
        at = ends[-1].start() if ends else len(markup)
        markup = markup[:at] + pixel + markup[at:]
    return markup


def tracking_of(session: Session, index: RuleIndex, message: Message) -> Track:
    """What the send step that made the message asks for (its own `track`, else its rule's),
    in the rule version the message was made by."""
    journey = session.get(Journey, message.journey_id) if message.journey_id else None
    compiled = rule_for(session, index, journey) if journey is not None else None
    if compiled is None or message.step is None or not 0 <= message.step < len(compiled.program):
        return Track()
    step = compiled.program[message.step]
    if not isinstance(step, program.Send):
        return Track()
    return Track.of(step.spec.track if step.spec.track is not None else compiled.rule.track)


def track_email(
    session: Session,
    index: RuleIndex,
    message: Message,
    content: dict[str, str],
    public_url: str,
    key: bytes,
) -> None:
    """At render time: rewrite a claimed email's HTML for the tracking its rule asks for."""
    if message.channel != "email" or not content.get("html"):
        return
    track = tracking_of(session, index, message)
    if track.clicks or track.opens:
        content["html"] = rewrite(content["html"], public_url, key, message.id, track)


def report(hit: Hit, at: dt.datetime) -> Report:
    """The delivery report of a hit. The event id makes a message's first open, and its first
    click on each URL, the only ones recorded."""
    if hit.url is None:
        return Report(
            event_id=f"open:{hit.message_id}", status="opened", at=at, message_id=hit.message_id
        )
    digest = hashlib.sha256(hit.url.encode()).hexdigest()[:32]
    return Report(
        event_id=f"click:{hit.message_id}:{digest}",
        status="clicked",
        at=at,
        message_id=hit.message_id,
        url=hit.url,
    )
