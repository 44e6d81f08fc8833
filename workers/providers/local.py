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

from service.delivery.providers import Outgoing, Sent
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


def local_email(settings: Settings) -> LocalOutbox:
    return LocalOutbox("email", settings.outbox_dir)


def local_sms(settings: Settings) -> LocalOutbox:
    return LocalOutbox("sms", settings.outbox_dir)


def local_push(settings: Settings) -> LocalOutbox:
    return LocalOutbox("push", settings.outbox_dir)
