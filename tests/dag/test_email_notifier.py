"""The customer e-mail through Airflow's SMTP provider, against a real SMTP server on loopback.

aiosmtpd listens on 127.0.0.1 (a free port) and asks for a login; the Airflow connection
``telegence_smtp`` comes from ``AIRFLOW_CONN_TELEGENCE_SMTP`` (JSON form), plain SMTP (the
provider's ``disable_tls`` / ``disable_ssl`` extras).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from smtp_server import SENDER, SMTP_LOGIN, SMTP_PASSWORD, Mailbox, _connection

from telegence_activation.domain.report import StepTime, build_report
from telegence_activation.notifiers.email import (
    EMAIL_CONN_ID,
    BulkChangeEmailNotifier,
    email_skip_reason,
    email_subject,
    recipients_of,
    send_bulk_change_email,
)

# Plain SMTP with a login is what this loopback test wants; aiosmtpd warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
# A customer name that is HTML and a Jinja expression naming the connection's password.
HOSTILE_NAME = "<script>alert(1)</script> {{ conn.telegence_smtp.password }}"


def _report(customer_name: str = HOSTILE_NAME, status: str = "ERROR", **bulk_change: Any) -> dict[str, Any]:
    return build_report(
        bulk_change={
            "id": 42,
            "service_provider_id": 1,
            "customer_name": customer_name,
            "status": status,
            **bulk_change,
        },
        by_status_step=[("PROCESSED", "Done", 448), ("ERROR", "ActivateDevice", 2)],
        failures=[("ERROR", "HTTP 422: <b>SIM</b> not eligible {{ 7 * 7 }}", 2)],
        ips_assigned=30,
        static_ip_requested=30,
        step_times=[StepTime("ActivateDevice", T0, T0 + timedelta(seconds=40))],
        generated_at=T0 + timedelta(minutes=3),
    )


BULK_CHANGE = {"id": 42, "notify_to": "ops@acme.example", "customer_name": HOSTILE_NAME}


def _html(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, message
    return str(part.get_content())  # type: ignore[attr-defined]


def test_the_summary_arrives_with_to_subject_counts_and_escaped_content(mailbox: Mailbox) -> None:
    send_bulk_change_email(_report(), BULK_CHANGE, smtp_conn_id=EMAIL_CONN_ID)

    assert mailbox.logins == [(SMTP_LOGIN, SMTP_PASSWORD)]  # the connection's login was used
    assert len(mailbox.messages) == 1
    mail_from, rcpt_tos, message = mailbox.messages[0]
    assert mail_from == SENDER and rcpt_tos == ["ops@acme.example"]
    assert message["To"] == "ops@acme.example"
    assert message["From"] == SENDER
    assert message["Subject"] == "Bulk change 42: ERROR \u2014 448 of 450 lines activated"
    assert message["X-Telegence-Bulk-Change"] == "42"
    html = _html(message)
    for count in ("450", "448", "30"):  # devices, activated, static IPs
        assert f">{count}</td>" in html, count
    assert "needs a correction" in html  # the failure class in the customer's words
    # Hostile content is escaped, and a Jinja expression is text, never evaluated.
    assert "<script>" not in html and "<b>SIM</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;SIM&lt;/b&gt; not eligible {{ 7 * 7 }}" in html
    assert "{{ conn.telegence_smtp.password }}" in html
    # No secret anywhere in what was sent.
    assert SMTP_PASSWORD not in message.as_string()
    assert SMTP_LOGIN not in message.as_string()


def test_used_as_an_airflow_notifier_nothing_is_rendered_as_a_template(mailbox: Mailbox) -> None:
    """``notifier(context)`` is how Airflow calls a notifier (it renders template fields first)."""
    notifier = BulkChangeEmailNotifier(
        report=_report(), bulk_change=BULK_CHANGE, from_email="noreply@telegence.example", is_update=True
    )
    notifier({})  # type: ignore[arg-type]

    _from, _to, message = mailbox.messages[-1]
    assert message["From"] == "noreply@telegence.example"  # the sender given wins over the connection's
    assert message["Subject"].startswith("Update: Bulk change 42: ERROR")
    html = _html(message)
    assert "{{ conn.telegence_smtp.password }}" in html and "{{ 7 * 7 }}" in html
    assert "49" not in html
    assert SMTP_PASSWORD not in message.as_string()
    assert "Update:" in html


def test_several_recipients_and_a_cancelled_bulk_change(mailbox: Mailbox) -> None:
    report = _report(
        customer_name="ACME IoT",
        status="CANCELLED",
        cancel_requested_at=T0,
        cancelled_by="ops-jane",
        cancel_reason="customer asked",
    )
    send_bulk_change_email(report, {"notify_to": "ops@acme.example; it@acme.example"})
    _from, rcpt_tos, message = mailbox.messages[-1]
    assert rcpt_tos == ["ops@acme.example", "it@acme.example"]
    assert message["Subject"].startswith("Bulk change 42: CANCELLED")
    assert "customer asked" in _html(message)


def test_without_the_connection_nothing_is_sent_and_the_reason_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    monkeypatch.delenv("AIRFLOW_CONN_TELEGENCE_SMTP", raising=False)
    assert email_skip_reason(BULK_CHANGE) == "no connection telegence_smtp configured"
    with pytest.raises(AirflowNotFoundException):
        send_bulk_change_email(_report(), BULK_CHANGE)


def test_a_missing_or_forged_address_is_refused_before_anything_is_sent(mailbox: Mailbox) -> None:
    assert email_skip_reason(BULK_CHANGE) is None
    assert email_skip_reason({"notify_to": None}) == "the bulk change has no notify_to address"
    forged = "ops@acme.example\r\nBcc: thief@evil.example"
    reason = email_skip_reason({"notify_to": forged})
    assert reason is not None and reason.startswith("notify_to is not an e-mail address")
    with pytest.raises(ValueError):
        send_bulk_change_email(_report(), {"notify_to": forged})
    with pytest.raises(ValueError):
        recipients_of("Jane <jane@acme.example>")
    assert mailbox.messages == []


def test_a_server_that_refuses_the_login_raises(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = json.loads(_connection(mailbox.port))
    wrong["password"] = "not-the-password"
    monkeypatch.setenv("AIRFLOW_CONN_TELEGENCE_SMTP", json.dumps(wrong))
    with pytest.raises(Exception, match=r"535|[Aa]uthentication"):
        send_bulk_change_email(_report(), BULK_CHANGE)
    assert mailbox.messages == []


def test_the_subject_counts_lines_whose_outcome_is_unknown() -> None:
    report = build_report(
        bulk_change={"id": 9, "service_provider_id": 1, "status": "ERROR"},
        by_status_step=[("PROCESSED", "Done", 1000), ("ERROR", "ActivateDevice", 3)],
        failures=[("ERROR", "outcome unknown: the activation answer was lost", 3)],
        ips_assigned=0,
        static_ip_requested=0,
        step_times=[],
        generated_at=T0,
    )
    assert (
        email_subject(report)
        == "Bulk change 9: ERROR \u2014 1,000 of 1,003 lines activated, 3 outcome unknown"
    )
