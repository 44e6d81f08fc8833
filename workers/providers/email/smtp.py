"""The SMTP provider: hands each email to a mail server (your relay, Postfix, any ESP's SMTP).

Options (providers file, or LIFELINE_SMTP_<OPTION> for the account named `smtp`):
  host (LIFELINE_SMTP_HOST, required), port (LIFELINE_SMTP_PORT, default 587),
  username / password (LIFELINE_SMTP_USERNAME, LIFELINE_SMTP_PASSWORD: AUTH when set),
  starttls (LIFELINE_SMTP_STARTTLS: true requires STARTTLS, false never upgrades; default
  true on port 587, elsewhere upgrade when the server offers it),
  use_tls (LIFELINE_SMTP_USE_TLS: implicit TLS, default true on port 465),
  ca_file (LIFELINE_SMTP_CA_FILE: PEM certificates to trust instead of the system's, for a
  private relay with its own CA or a self-signed certificate; the host name is still checked),
  timeout (LIFELINE_SMTP_TIMEOUT, seconds, default 30), from (LIFELINE_SMTP_FROM, else
  LIFELINE_EMAIL_FROM).

Errors: 4xx replies, connection failures and timeouts are retryable; 5xx replies are permanent
with the server's reply text, except a refused recipient whose enhanced status code says the
mailbox does not exist (5.1.1 bad mailbox, 5.1.6 moved without forwarding, 5.1.10 null MX),
which is address_gone. SMTP has no idempotency key, so a send cut off after DATA may arrive
twice when retried; SMTP reports nothing back, so this provider has no webhook.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from service.delivery.providers import Account, Outgoing, ProviderConfigError, ProviderError, Sent
from service.kit.settings import Settings

DEFAULT_PORT = 587
DEFAULT_TIMEOUT = 30.0

# Bodies are encoded under RFC 2045's limits (7-bit safe, 76-character lines), so no server
# needs 8BITMIME. Headers are written with the 998-character line limit of RFC 5322: a long
# List-Unsubscribe (it carries a token) stays one plain-ASCII line, never encoded-words.
BODY_POLICY = policy.SMTP.clone(max_line_length=76, cte_type="7bit")
WIRE_POLICY = policy.SMTP.clone(max_line_length=998)

GONE_REPLIES = frozenset({550, 551, 553})
ENHANCED_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")
GONE_STATUSES = frozenset({"5.1.1", "5.1.6", "5.1.10"})


def build_email(message: Outgoing, sender: str, message_id: str | None = None) -> EmailMessage:
    """The complete MIME message: text and HTML alternatives, with the message's own headers
    (List-Unsubscribe, List-Unsubscribe-Post) as real mail headers. Amazon SES sends this
    same message as raw content."""
    email = EmailMessage(policy=BODY_POLICY)
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.content.get("subject", "")
    email["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    if message_id:
        email["Message-ID"] = message_id
    for name, value in message.headers.items():
        email[name] = value
    email.set_content(message.content.get("text", ""))
    if message.content.get("html"):
        email.add_alternative(message.content["html"], subtype="html")
    return email


def wire_bytes(email: EmailMessage) -> bytes:
    return email.as_bytes(policy=WIRE_POLICY)


def new_message_id(message: Outgoing, sender: str) -> str:
    """Ours, not the server's: known before the send, so it is what `Sent` reports."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<lifeline.{message.message_id}.{secrets.token_hex(8)}@{domain}>"


class Smtp:
    # SMTP has no idempotency key: a retry after a lost reply to DATA can deliver twice.
    idempotent = False

    def __init__(
        self,
        host: str,
        *,
        port: int = DEFAULT_PORT,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool | None = None,
        use_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.name = "smtp"
        self.channel = "email"
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.use_tls = use_tls
        self.tls_context = tls_context
        self.timeout = timeout

    def send(self, message: Outgoing) -> Sent:
        message_id = new_message_id(message, self.sender)
        data = wire_bytes(build_email(message, self.sender, message_id))
        # Called from Dramatiq worker threads, which have no event loop: asyncio.run gives
        # each call a fresh loop in the calling thread and closes it afterwards (cancelling
        # leftovers, shutting down async generators), so no loop, socket or task is shared
        # between threads, which asyncio does not allow, or outlives the send.
        try:
            asyncio.run(self._send(data, message.to))
        except aiosmtplib.SMTPException as exc:
            raise classify(exc) from exc
        except ssl.SSLCertVerificationError as exc:
            raise untrusted(exc) from exc
        except OSError as exc:
            raise ProviderError("retryable", f"{type(exc).__name__}: {exc}") from exc
        return Sent(provider_message_id=message_id)

    async def _send(self, data: bytes, recipient: str) -> None:
        await aiosmtplib.send(
            data,
            sender=parseaddr(self.sender)[1],
            recipients=[recipient],
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            start_tls=self.starttls,
            use_tls=self.use_tls,
            tls_context=self.tls_context,
            timeout=self.timeout,
        )


def classify(exc: aiosmtplib.SMTPException) -> ProviderError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return classify(exc.recipients[0])
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reason = f"SMTP {exc.code}: {' '.join(exc.message.split())}"
        if exc.code < 500:
            return ProviderError("retryable", reason)
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and mailbox_gone(exc.code, exc.message):
            return ProviderError("address_gone", reason)
        return ProviderError("permanent", reason)
    if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
        return untrusted(exc.__cause__)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError):
        return ProviderError("retryable", f"{type(exc).__name__}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return ProviderError("retryable", f"timed out: {exc}")
    # SMTPNotSupported and the like: the server lacks what the account asks for (STARTTLS,
    # AUTH), which no retry changes.
    return ProviderError("permanent", f"{type(exc).__name__}: {exc}")


def mailbox_gone(code: int, reply: str) -> bool:
    found = ENHANCED_STATUS.match(reply)
    return code in GONE_REPLIES and found is not None and found[1] in GONE_STATUSES


def untrusted(exc: ssl.SSLCertVerificationError) -> ProviderError:
    return ProviderError(
        "permanent",
        f"the SMTP server's TLS certificate is not trusted ({exc.verify_message}); a private "
        "relay's CA goes in option ca_file",
    )


def _flag(account: Account, key: str) -> bool | None:
    value = account.get(key)
    if value is None:
        return None
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ProviderConfigError(f"provider account {account.name!r}: {key} must be true or false")


def _number(account: Account, key: str, default: float) -> float:
    value = account.get(key)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise ProviderConfigError(
            f"provider account {account.name!r}: {key} must be a number"
        ) from None


def smtp(account: Account, settings: Settings) -> Smtp:
    port = int(_number(account, "port", DEFAULT_PORT))
    use_tls = _flag(account, "use_tls")
    use_tls = port == 465 if use_tls is None else use_tls
    starttls = _flag(account, "starttls")
    if starttls is None and not use_tls:
        starttls = True if port == 587 else None
    if use_tls and starttls:
        raise ProviderConfigError(
            f"provider account {account.name!r}: use_tls (implicit TLS) and starttls exclude "
            "each other"
        )
    ca_file = account.get("ca_file")
    try:
        tls_context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    except OSError as exc:
        raise ProviderConfigError(
            f"provider account {account.name!r}: ca_file {ca_file}: {exc.strerror or exc}"
        ) from None
    provider = Smtp(
        account.require("host"),
        port=port,
        sender=account.get("from", settings.email_from) or settings.email_from,
        username=account.get("username"),
        password=account.get("password"),
        starttls=False if use_tls else starttls,
        use_tls=use_tls,
        tls_context=tls_context,
        timeout=_number(account, "timeout", DEFAULT_TIMEOUT),
    )
    provider.name = account.name
    return provider
