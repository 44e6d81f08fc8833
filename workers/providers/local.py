"""The local provider: writes each message into an outbox folder instead of sending it.

Email becomes a complete .eml file with all its headers; SMS and push become JSON. The file
is named after the message, so writing it again changes nothing: the provider is idempotent.
"""

from __future__ import annotations

import json
import os
import tempfile
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from service.delivery.providers import Account, Outgoing, Sent
from service.kit.settings import Settings


class LocalOutbox:
    idempotent = True

    def __init__(
        self, channel: str, outbox_dir: Path, sender: str = "Lifeline <noreply@localhost>"
    ):
        self.name = f"local-{channel}"
        self.channel = channel
        self.outbox = outbox_dir
        self.sender = sender

    def send(self, message: Outgoing) -> Sent:
        self.outbox.mkdir(parents=True, exist_ok=True)
        suffix = "eml" if message.channel == "email" else "json"
        path = self.outbox / f"{message.message_id:010d}-{message.channel}.{suffix}"
        if path.exists():
            return Sent(provider_message_id=path.name)
        data = self._email(message) if message.channel == "email" else self._json(message)
        # Write to a temporary name and rename: a reader never sees half a message.
        with tempfile.NamedTemporaryFile(dir=self.outbox, delete=False) as temporary:
            temporary.write(data)
        os.replace(temporary.name, path)
        return Sent(provider_message_id=path.name)

    def _email(self, message: Outgoing) -> bytes:
        # Long headers (List-Unsubscribe carries a token) stay plain ASCII, not encoded-words.
        email = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.content.get("subject", "")
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = make_msgid(idstring=str(message.message_id), domain="lifeline.local")
        for name, value in message.headers.items():
            email[name] = value
        email.set_content(message.content.get("text", ""))
        if message.content.get("html"):
            email.add_alternative(message.content["html"], subtype="html")
        return bytes(email)

    def _json(self, message: Outgoing) -> bytes:
        body = {
            "message_id": message.message_id,
            "channel": message.channel,
            "to": message.to,
            **message.content,
        }
        return json.dumps(body, ensure_ascii=False, indent=2).encode()


def local(channel: str, account: Account, settings: Settings) -> LocalOutbox:
    """Option `outbox_dir`, else LIFELINE_OUTBOX_DIR; email's From is option `from`, else
    LIFELINE_EMAIL_FROM."""
    outbox = Path(account.get("outbox_dir") or settings.outbox_dir)
    provider = LocalOutbox(channel, outbox, account.get("from", settings.email_from) or "")
    provider.name = account.name
    return provider


def local_email(account: Account, settings: Settings) -> LocalOutbox:
    return local("email", account, settings)


def local_sms(account: Account, settings: Settings) -> LocalOutbox:
    return local("sms", account, settings)


def local_push(account: Account, settings: Settings) -> LocalOutbox:
    return local("push", account, settings)
