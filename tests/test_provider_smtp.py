"""The SMTP provider against a real SMTP server (aiosmtpd on 127.0.0.1): what the recipient's
server receives, STARTTLS with AUTH, and how each kind of refusal is classified."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.delivery.accounts import load_provider
from service.delivery.providers import Account, Outgoing, ProviderConfigError, ProviderError
from service.kit.settings import Settings
from workers.providers.email.smtp import Smtp, smtp

UNSUBSCRIBE = "<https://lifeline.example/v1/unsubscribe/" + "t0k3n" * 60 + ">"
MESSAGE = Outgoing(
    42,
    "email",
    "ada@example.com",
    {"subject": "Welcome, Ada ✓", "html": "<p>Hi Ada ✓</p>", "text": "Hi Ada ✓"},
    {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    idempotency_key="lifeline-message-42",
)
SENDER = "Lifeline <hello@news.example.org>"


@dataclass
class Recorder:
    """An aiosmtpd handler: keeps what it accepted, or answers with a chosen refusal."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[Envelope] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(envelope)
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    """Starts an SMTP server with the given handler and options; returns its port."""
    started: list[Controller] = []

    def start(handler: Recorder, **options: Any) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


def provider(port: int, **options: str) -> Smtp:
    account = Account("smtp", "smtp", {"host": "127.0.0.1", "port": str(port), **options})
    return smtp(account, Settings(email_from=SENDER))


def received_email(handler: Recorder) -> EmailMessage:
    (envelope,) = handler.received
    parsed = message_from_bytes(envelope.original_content or b"", policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def failure(adapter: Smtp) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        adapter.send(MESSAGE)
    return raised.value


def test_the_recipient_server_gets_the_whole_message(serve: Callable[..., int]) -> None:
    handler = Recorder()
    adapter = provider(serve(handler), starttls="false")

    sent = adapter.send(MESSAGE)

    (envelope,) = handler.received
    assert (envelope.mail_from, envelope.rcpt_tos) == ("hello@news.example.org", [MESSAGE.to])
    email = received_email(handler)
    assert email["From"] == SENDER
    assert email["To"] == "ada@example.com"
    assert email["Subject"] == "Welcome, Ada ✓"
    assert email["Message-ID"] == sent.provider_message_id
    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith("<lifeline.42.")
    assert sent.provider_message_id.endswith("@news.example.org>")
    sent_at = dt.datetime.now(dt.UTC) - email["Date"].datetime
    assert dt.timedelta(0) <= sent_at < dt.timedelta(minutes=1)
    assert email["List-Unsubscribe"] == UNSUBSCRIBE
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email.get_content_type() == "multipart/alternative"
    text, html = email.iter_parts()
    assert (text.get_content_type(), text.get_content().strip()) == ("text/plain", "Hi Ada ✓")
    assert (html.get_content_type(), html.get_content().strip()) == ("text/html", "<p>Hi Ada ✓</p>")


def test_long_headers_stay_one_line_and_the_message_is_7bit(serve: Callable[..., int]) -> None:
    handler = Recorder()
    provider(serve(handler), starttls="false").send(MESSAGE)

    raw = handler.received[0].original_content or b""
    assert f"List-Unsubscribe: {UNSUBSCRIBE}\r\n".encode() in raw
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_each_send_has_its_own_message_id(serve: Callable[..., int]) -> None:
    adapter = provider(serve(Recorder()), starttls="false")
    assert adapter.send(MESSAGE).provider_message_id != adapter.send(MESSAGE).provider_message_id


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, as a private relay has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def only(login: bytes, password: bytes) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (login, password)
        return AuthResult(success=ok, handled=False)

    return authenticate


@pytest.fixture
def relay(serve: Callable[..., int], certificate: tuple[Path, Path]) -> tuple[Recorder, int]:
    """A relay that accepts mail only after STARTTLS and AUTH."""
    handler = Recorder()
    port = serve(
        handler,
        tls_context=server_tls(certificate),
        require_starttls=True,
        authenticator=only(b"lifeline", b"s3cret"),
        auth_required=True,
    )
    return handler, port


def test_starttls_and_auth_with_a_private_ca(
    relay: tuple[Recorder, int], certificate: tuple[Path, Path]
) -> None:
    handler, port = relay
    adapter = provider(
        port, starttls="true", username="lifeline", password="s3cret", ca_file=str(certificate[0])
    )
    adapter.send(MESSAGE)
    assert received_email(handler)["Subject"] == "Welcome, Ada ✓"


def test_a_wrong_password_is_permanent_and_not_echoed(
    relay: tuple[Recorder, int], certificate: tuple[Path, Path]
) -> None:
    handler, port = relay
    adapter = provider(
        port, starttls="true", username="lifeline", password="wrong!", ca_file=str(certificate[0])
    )
    error = failure(adapter)
    assert (error.kind, error.reason.split(":")[0]) == ("permanent", "SMTP 535")
    assert "wrong!" not in error.reason
    assert handler.received == []


def test_an_untrusted_certificate_is_refused_before_any_password_is_sent(
    relay: tuple[Recorder, int],
) -> None:
    handler, port = relay
    error = failure(provider(port, starttls="true", username="lifeline", password="s3cret"))
    assert error.kind == "permanent"
    assert "not trusted" in error.reason and "ca_file" in error.reason
    assert handler.received == []


def test_without_starttls_the_relay_refuses_and_nothing_is_sent(
    relay: tuple[Recorder, int],
) -> None:
    handler, port = relay
    error = failure(provider(port, starttls="false"))
    assert error.kind == "permanent"
    assert handler.received == []


def test_implicit_tls(serve: Callable[..., int], certificate: tuple[Path, Path]) -> None:
    handler = Recorder()
    port = serve(handler, ssl_context=server_tls(certificate))
    provider(port, use_tls="true", ca_file=str(certificate[0])).send(MESSAGE)
    assert received_email(handler)["To"] == "ada@example.com"


@pytest.mark.parametrize(
    ("rcpt_reply", "data_reply", "kind", "reason"),
    [
        ("451 4.3.0 try again later", None, "retryable", "SMTP 451: 4.3.0 try again later"),
        (
            "550 5.1.1 <ada@example.com>: Recipient address rejected: User unknown",
            None,
            "address_gone",
            "SMTP 550: 5.1.1 <ada@example.com>: Recipient address rejected: User unknown",
        ),
        ("553 5.1.10 null MX", None, "address_gone", "SMTP 553: 5.1.10 null MX"),
        ("550 5.7.1 relaying denied", None, "permanent", "SMTP 550: 5.7.1 relaying denied"),
        ("552 5.2.2 mailbox full", None, "permanent", "SMTP 552: 5.2.2 mailbox full"),
        (None, "554 5.7.1 message rejected as spam", "permanent", "SMTP 554: 5.7.1 message "),
        (None, "451 4.7.1 greylisted", "retryable", "SMTP 451: 4.7.1 greylisted"),
    ],
)
def test_refusals_are_classified_by_reply_code_and_enhanced_status(
    serve: Callable[..., int],
    rcpt_reply: str | None,
    data_reply: str | None,
    kind: str,
    reason: str,
) -> None:
    handler = Recorder(rcpt_reply=rcpt_reply, data_reply=data_reply)
    error = failure(provider(serve(handler), starttls="false"))
    assert error.kind == kind
    assert error.reason.startswith(reason)


def test_a_server_that_is_down_is_retryable() -> None:
    error = failure(provider(free_port(), starttls="false"))
    assert error.kind == "retryable"


def test_a_server_that_never_answers_times_out_as_retryable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        error = failure(provider(silent.getsockname()[1], starttls="false", timeout="0.3"))
    assert error.kind == "retryable"
    assert "timed out" in error.reason.lower()


def test_tls_defaults_follow_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_SMTP_HOST", "mail.example.org")
    submission = load_provider("smtp", Settings())
    assert isinstance(submission, Smtp)
    assert (submission.port, submission.starttls, submission.use_tls) == (587, True, False)
    assert submission.idempotent is False

    monkeypatch.setenv("LIFELINE_SMTP_PORT", "465")
    implicit = load_provider("smtp", Settings())
    assert isinstance(implicit, Smtp)
    assert (implicit.starttls, implicit.use_tls) == (False, True)

    monkeypatch.setenv("LIFELINE_SMTP_PORT", "25")
    relay = load_provider("smtp", Settings())
    assert isinstance(relay, Smtp)
    assert (relay.starttls, relay.use_tls) == (None, False)


def test_configuration_mistakes_are_reported_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderConfigError, match="LIFELINE_SMTP_HOST"):
        load_provider("smtp", Settings())
    conflicting = Account("smtp", "smtp", {"host": "h", "use_tls": "true", "starttls": "true"})
    with pytest.raises(ProviderConfigError, match="exclude each other"):
        smtp(conflicting, Settings())
    with pytest.raises(ProviderConfigError, match="ca_file"):
        smtp(Account("smtp", "smtp", {"host": "h", "ca_file": "/nonexistent.pem"}), Settings())
