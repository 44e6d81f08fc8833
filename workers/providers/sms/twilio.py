"""Twilio Programmable Messaging: SMS through Twilio's REST API, with delivery reports from
its status callbacks.

Options (an account named `twilio` reads them from LIFELINE_TWILIO_<OPTION>):
- `account_sid` (LIFELINE_TWILIO_ACCOUNT_SID) and `auth_token` (LIFELINE_TWILIO_AUTH_TOKEN):
  HTTP basic auth for sending, and the key Twilio signs its callbacks with.
- `from` (LIFELINE_TWILIO_FROM): the sending number or alphanumeric sender id, and/or
  `messaging_service_sid` (LIFELINE_TWILIO_MESSAGING_SERVICE_SID): a Messaging Service, which
  picks a sender from its pool. At least one of the two.
- `base_url` (LIFELINE_TWILIO_BASE_URL): default https://api.twilio.com; `timeout`.

Errors: HTTP 408, 429 (honouring Retry-After), 5xx and timeouts are retryable. Twilio error
21610 (the recipient replied STOP to this sender) is address_gone: delivery records the
opt-out. 21211 (not a valid number), 21614 (not a mobile number) and every other Twilio error
are permanent, with Twilio's code and message.

Status callbacks: every message asks Twilio to POST its status to
{LIFELINE_PUBLIC_URL}/v1/webhooks/{account}?lifeline_message_id={id}. A callback counts only
with an X-Twilio-Signature equal to base64(HMAC-SHA1(auth token, the URL Twilio called + each
POST parameter's name and value, sorted by name)). `delivered` is reported as delivered;
`undelivered` and `failed` as failed with Twilio's ErrorCode, except 21610 (opted out), which
is reported as unsubscribed; queued, accepted, sending and sent are progress, not results.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    Report,
    ReportStatus,
    Sent,
    WebhookRejected,
    WebhookResult,
)
from service.kit.settings import Settings
from workers.providers.common import setting
from workers.providers.http import base_url, call, client_for, fail, json_body

DEFAULT_BASE_URL = "https://api.twilio.com"
OPTED_OUT = 21610  # "Attempt to send to unsubscribed recipient": the person replied STOP
ERROR_NAMES = {
    21610: "recipient opted out with STOP",
    30003: "unreachable destination handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown error",
}
DEFAULT_PORTS = {"http": 80, "https": 443}


class Twilio:
    # Twilio's Messages API takes no idempotency key: a send repeated after an unknown outcome
    # (a timeout, a worker killed mid-call) may reach the person twice.
    idempotent = False
    channel = "sms"

    def __init__(
        self,
        name: str,
        account_sid: str,
        auth_token: str,
        *,
        sender: str | None,
        messaging_service_sid: str | None,
        callback_base: str,
        base: str = DEFAULT_BASE_URL,
        client: httpx.Client | None = None,
    ):
        self.name = name
        self.url = f"{base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = httpx.BasicAuth(account_sid, auth_token)
        self.signing_key = auth_token.encode()
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.callback_base = callback_base
        self.client = client or httpx.Client(timeout=10.0)

    def status_callback(self, message_id: int) -> str:
        return f"{self.callback_base}?lifeline_message_id={message_id}"

    def send(self, message: Outgoing) -> Sent:
        form = {
            "To": message.to,
            "Body": message.content["body"],
            "StatusCallback": self.status_callback(message.message_id),
        }
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.sender:
            form["From"] = self.sender
        response = call(self.client, "POST", self.url, data=form, auth=self.auth)
        if not response.is_success:
            raise _error(response)
        body = json_body(response)
        sid = body.get("sid") if isinstance(body, dict) else None
        return Sent(provider_message_id=str(sid) if sid else None)

    def verify_webhook(self, request: Inbound) -> None:
        given = request.headers.get("x-twilio-signature", "").encode()
        if not given:
            raise WebhookRejected("no X-Twilio-Signature header")
        params = sorted(request.form().items())
        # Like Twilio's own validators, accept the URL with and without its port: Twilio's
        # signatures are not consistent about the port.
        for url in _url_variants(request.url):
            signed = url + "".join(name + value for name, value in params)
            digest = hmac.new(self.signing_key, signed.encode(), hashlib.sha1).digest()
            if hmac.compare_digest(base64.b64encode(digest), given):
                return
        raise WebhookRejected("X-Twilio-Signature does not match")

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        form = request.form()
        sid = form.get("MessageSid") or form.get("SmsSid")
        status = form.get("MessageStatus") or form.get("SmsStatus")
        if not sid or not status:
            raise ValueError("not a Twilio status callback: no MessageSid or MessageStatus")
        kind: ReportStatus
        if status == "delivered":
            kind = "delivered"
            detail = None
        elif status in ("undelivered", "failed"):
            code = form.get("ErrorCode", "")
            kind = "unsubscribed" if code == str(OPTED_OUT) else "failed"
            detail = f"{status}: Twilio error {code or 'unknown'}"
            if code.isdigit() and int(code) in ERROR_NAMES:
                detail += f" ({ERROR_NAMES[int(code)]})"
        else:
            return WebhookResult()
        report = Report(
            # Twilio sends no event id, and a message reaches each status at most once, so the
            # pair names this event and a retried callback repeats it.
            event_id=f"{sid}:{status}",
            status=kind,
            at=dt.datetime.now(dt.UTC),  # a status callback carries no event time
            message_id=_message_id(request.url),
            provider_message_id=sid,
            address=form.get("To") or None,
            detail=detail,
        )
        return WebhookResult(reports=[report])


def _error(response: httpx.Response) -> ProviderError:
    body = json_body(response)
    if not isinstance(body, dict) or body.get("code") is None:
        return fail(response)
    reason = f"Twilio error {body['code']}: {body.get('message', '')}"
    if body["code"] == OPTED_OUT:
        return ProviderError("address_gone", f"HTTP {response.status_code}: {reason}")
    return fail(response, reason)


def _url_variants(url: str) -> list[str]:
    """The URL as called, and without its port or with the scheme's default port."""
    parts = urlsplit(url)
    if parts.port is not None:
        return [url, urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))]
    if parts.scheme in DEFAULT_PORTS:
        netloc = f"{parts.netloc}:{DEFAULT_PORTS[parts.scheme]}"
        return [url, urlunsplit(parts._replace(netloc=netloc))]
    return [url]


def _message_id(url: str) -> int | None:
    found = parse_qs(urlsplit(url).query).get("lifeline_message_id", [""])[0]
    return int(found) if found.isdigit() else None


def twilio(account: Account, settings: Settings) -> Twilio:
    account_sid = account.require("account_sid")
    auth_token = account.require("auth_token")
    sender = account.get("from")
    messaging_service_sid = account.get("messaging_service_sid")
    if not sender and not messaging_service_sid:
        raise ProviderConfigError(
            f"provider account {account.name!r} ({account.provider}) needs a sender: set "
            f"{setting(account, 'from')} or {setting(account, 'messaging_service_sid')}"
        )
    return Twilio(
        account.name,
        account_sid,
        auth_token,
        sender=sender,
        messaging_service_sid=messaging_service_sid,
        callback_base=f"{settings.public_url.rstrip('/')}/v1/webhooks/{account.name}",
        base=base_url(account, DEFAULT_BASE_URL),
        client=client_for(account),
    )
