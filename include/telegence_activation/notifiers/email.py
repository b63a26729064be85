"""BulkChangeEmailNotifier: e-mail the customer the outcome of a bulk change (SMTP provider).

Configured by an ``smtp`` connection (default ``telegence_smtp``): ``host``, ``port``, ``login`` /
``password`` when the server wants them; extras ``from_email`` (the sender, unless the notifier is
given one), ``disable_tls`` (no STARTTLS), ``disable_ssl`` (plain SMTP instead of SMTP over SSL:
the provider's default is SSL), ``timeout`` (30 s), ``retry_limit`` (5). See docs/operations.md.

The message is built from the report only (counts, failure classes and reasons, which the hook
has already redacted): no connection, header or credential ever goes into it. Its subject and
body are **not** Jinja templates: a customer name or carrier reason like ``{{ conn... }}`` is sent
as text (escaped), never rendered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from telegence_activation.domain.report_html import render_summary_html, title_of

if TYPE_CHECKING:
    from airflow.sdk import Context

EMAIL_CONN_ID = "telegence_smtp"
# One address: no spaces, no control characters, no display name, no header syntax.
_ADDRESS = re.compile(r"^[^@\s<>\"',;:()\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def email_subject(report: Mapping[str, Any], *, is_update: bool = False) -> str:
    """``Bulk change 42: PROCESSED — 448 of 450 lines activated`` (``Update: `` in front of an update)."""
    subject = title_of(report)
    if report.get("outcome_unknown"):
        subject += f", {report['outcome_unknown']:,} outcome unknown"
    return f"Update: {subject}" if is_update else subject


def recipients_of(notify_to: str | None) -> list[str]:
    """The bulk change's ``notify_to`` as a list of addresses (``,`` or ``;`` between several).

    :raises ValueError: when it is empty or any part is not a plain e-mail address (which also
        keeps line breaks and header syntax out of the message's headers).
    """
    parts = [p.strip() for p in re.split(r"[,;]", notify_to or "") if p.strip()]
    if not parts:
        raise ValueError("the bulk change has no notify_to address")
    bad = [p for p in parts if not _ADDRESS.match(p)]
    if bad:
        raise ValueError(f"notify_to is not an e-mail address: {bad[0][:80]!r}")
    return parts


def email_skip_reason(bulk_change: Mapping[str, Any], *, smtp_conn_id: str = EMAIL_CONN_ID) -> str | None:
    """Why no e-mail can be sent for this bulk change (record the notification SKIPPED with it), or
    None when it can: the connection exists and ``notify_to`` holds valid addresses."""
    try:
        BaseHook.get_connection(smtp_conn_id)
    except AirflowNotFoundException:
        return f"no connection {smtp_conn_id} configured"
    try:
        recipients_of(bulk_change.get("notify_to"))
    except ValueError as exc:
        return str(exc)
    return None


class BulkChangeEmailNotifier(SmtpNotifier):
    """The bulk change's summary by e-mail to its ``notify_to`` address(es).

    :param report: the report ``build_report`` made (the body is ``render_summary_html`` of it).
    :param bulk_change: the bulk change row (``notify_to``; its id and status come from the report).
    :param smtp_conn_id: the smtp connection.
    :param from_email: the sender; None takes the connection's ``from_email`` extra.
    :param is_update: this outcome replaces one the customer was told before.
    """

    def __init__(
        self,
        *,
        report: Mapping[str, Any],
        bulk_change: Mapping[str, Any],
        smtp_conn_id: str = EMAIL_CONN_ID,
        from_email: str | None = None,
        is_update: bool = False,
    ) -> None:
        super().__init__(
            to=recipients_of(bulk_change.get("notify_to")),
            from_email=from_email,
            subject=email_subject(report, is_update=is_update),
            html_content=render_summary_html(report, is_update=is_update),
            smtp_conn_id=smtp_conn_id,
            custom_headers={"X-Telegence-Bulk-Change": str(int(report["bulk_change_id"]))},
        )

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render nothing: the subject, body and recipients hold customer data, never a template
        (a customer name ``{{ conn.x.password }}`` must be sent as it is, not evaluated)."""

    def notify(self, context: Context) -> None:
        """Send the e-mail. Checks the connection first: a missing one raises
        ``AirflowNotFoundException`` before anything is sent (the provider would say only
        "SMTP connection is not found.")."""
        BaseHook.get_connection(self.smtp_conn_id)
        super().notify(context)


def send_bulk_change_email(
    report: Mapping[str, Any],
    bulk_change: Mapping[str, Any],
    *,
    smtp_conn_id: str = EMAIL_CONN_ID,
    from_email: str | None = None,
    is_update: bool = False,
    context: Context | None = None,
) -> None:
    """E-mail the summary of ``report`` to the bulk change's ``notify_to``.

    :raises AirflowNotFoundException: the connection does not exist (nothing sent).
    :raises ValueError: ``notify_to`` is empty or not an address, or no sender is configured
        (nothing sent).
    :raises Exception: what the SMTP server or the network answered (smtplib errors, OSError,
        AirflowException "Unable to connect to smtp server") after the provider's retries.
    """
    notifier = BulkChangeEmailNotifier(
        report=report,
        bulk_change=bulk_change,
        smtp_conn_id=smtp_conn_id,
        from_email=from_email,
        is_update=is_update,
    )
    notifier.notify(context if context is not None else {})
