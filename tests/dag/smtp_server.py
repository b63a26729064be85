"""A real SMTP server on loopback for tests (aiosmtpd), as the fixture ``mailbox``: it asks for a
login and keeps what it accepted; the Airflow connection ``telegence_smtp`` points at it."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest

SMTP_LOGIN = "telegence-mailer"
# Distinctive, so that a leak into the message is unmistakable.
SMTP_PASSWORD = "SMTP-S3CRET-pw-91c2"
SENDER = "bulk-activation@telegence.example"


@dataclass
class Mailbox:
    """What the SMTP server accepted, and the logins it saw."""

    port: int
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connection(port: int, **extra: Any) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "login": SMTP_LOGIN,
            "password": SMTP_PASSWORD,
            "extra": {
                "disable_tls": True,
                "disable_ssl": True,
                "from_email": SENDER,
                "timeout": 10,
                "retry_limit": 0,
                **extra,
            },
        }
    )


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that requires a login; connection telegence_smtp."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(_free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
            return "250 Message accepted for delivery"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            box.logins.append((data.login.decode(), data.password.decode()))
            ok = (data.login.decode(), data.password.decode()) == (SMTP_LOGIN, SMTP_PASSWORD)
            return AuthResult(success=ok, handled=False)  # not handled: the server answers 235 / 535
        return AuthResult(success=False, handled=False)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SMTP", _connection(box.port))
    try:
        yield box
    finally:
        controller.stop()
