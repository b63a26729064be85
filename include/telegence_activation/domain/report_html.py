"""The summary report of a bulk change as HTML: a full page, and a short e-mail body.

Pure (no Airflow): both take the report dict ``domain.report.build_report`` produces. The page is
self-contained (inline CSS, no script, no external asset), readable in a browser on a laptop or
saved as a file. Every value that comes from the report (customer name, carrier reasons, hints,
who cancelled and why...) is escaped with ``html.escape``; nothing in a report can add markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from telegence_activation.domain.report import is_outcome_unknown, omitted_reasons

# Plain words for the status of a bulk change.
STATUS_WORDS = {
    "PROCESSED": "every line activated",
    "ERROR": "finished with failures",
    "CANCELLED": "cancelled",
    "PROCESSING": "in progress",
}
_STATUS_COLOURS = {"PROCESSED": "#1a7f37", "ERROR": "#b42318", "CANCELLED": "#57606a"}
_CLASS_WORDS = {
    "retryable": "retryable (retry-failed sends them again)",
    "permanent": "permanent (fix the data, then retry-failed --all)",
    "needs_person": "needs a person (configuration, ownership, address ranges)",
    "unknown": "unknown to the error catalogue",
}

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: #f6f8fa; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.meta { color: #57606a; margin: 0 0 16px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600;
         font-size: 14px; vertical-align: middle; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 16px;
        min-width: 130px; }
.card .n { font-size: 26px; font-weight: 700; }
.card .l { color: #57606a; font-size: 13px; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: #eaeef2; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.reason { word-break: break-word; }
.none { color: #57606a; font-style: italic; }
.notice { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 8px; padding: 10px 16px; }
ul.plain { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 30px;
           margin: 0; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def esc(value: Any) -> str:
    """A value as escaped HTML text (None shows as a dash)."""
    if value is None:
        return "\u2014"
    return html.escape(str(value), quote=True)


def _count(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return esc(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = ()) -> str:
    """An HTML table; columns whose index is in ``numeric`` are right-aligned counts."""
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i in numeric:
                cells.append(f'<td class="num">{_count(cell)}</td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return '<p class="none">none</p>'
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(section_id: str, title: str, content: str) -> str:
    return f'<section id="{section_id}"><h2>{esc(title)}</h2>{content}</section>'


def _status_badge(status: Any) -> str:
    colour = _STATUS_COLOURS.get(str(status), "#9a6700")
    return f'<span class="badge" style="background:{colour}">{esc(status)}</span>'


def _cancellation_html(cancellation: Mapping[str, Any] | None) -> str:
    if not cancellation:
        return '<p class="none">not cancelled</p>'
    return (
        '<div class="notice">Cancelled at '
        f"<strong>{esc(cancellation.get('requested_at'))}</strong> by "
        f"<strong>{esc(cancellation.get('by'))}</strong>: {esc(cancellation.get('reason'))}</div>"
    )


def _plain_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def title_of(report: Mapping[str, Any]) -> str:
    """``Bulk change 42: PROCESSED — 448 of 450 lines activated`` (plain text, not escaped)."""
    return (
        f"Bulk change {report.get('bulk_change_id')}: {report.get('status')} \u2014 "
        f"{_plain_count(report.get('succeeded', 0))} of {_plain_count(report.get('devices', 0))} lines activated"
    )


def render_report_html(report: Mapping[str, Any]) -> str:
    """The whole report as one self-contained HTML page (inline CSS, no script, no external asset).

    Sections (each a ``<section id=...>``, present even when empty): ``summary``, ``cancellation``,
    ``by-status``, ``by-status-and-step``, ``failures-by-class``, ``failures-by-reason``,
    ``unknown-answers``, ``static-ip``, ``carrier-writes``, ``steps``.
    """
    status = report.get("status")
    cards = [
        ("devices", report.get("devices", 0)),
        ("activated", report.get("succeeded", 0)),
        ("failed", report.get("failed", 0)),
        ("outcome unknown", report.get("outcome_unknown", 0)),
        ("cancelled", report.get("cancelled", 0)),
    ]
    summary = (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="n">{_count(n)}</div><div class="l">{esc(label)}</div></div>'
            for label, n in cards
        )
        + "</div>"
    )
    if report.get("outcome_unknown"):
        summary += (
            '<p class="notice">Lines with an <strong>unknown outcome</strong> are not failed: the carrier '
            "may have taken them (its answer was lost). <code>retry-failed</code> reconciles them and never "
            "activates a line twice.</p>"
        )
    failures = report.get("failures_by_reason") or []
    static_ip = report.get("static_ip") or {}
    reserved_unused = static_ip.get("reserved_not_used") or []
    unknown_answers = report.get("unknown_answers") or []
    sections = [
        _section("summary", "Summary", summary),
        _section("cancellation", "Cancellation", _cancellation_html(report.get("cancellation"))),
        _section(
            "by-status",
            "Devices by status",
            _table(["status", "devices"], (report.get("by_status") or {}).items(), numeric=[1]),
        ),
        _section(
            "by-status-and-step",
            "Devices by status and step",
            _table(
                ["status", "step", "devices"],
                (
                    (r.get("status"), r.get("step"), r.get("devices"))
                    for r in report.get("by_status_and_step") or []
                ),
                numeric=[2],
            ),
        ),
        _section(
            "failures-by-class",
            "Failures by class",
            _table(
                ["class", "meaning", "devices"],
                (
                    (cls, _CLASS_WORDS.get(str(cls), ""), n)
                    for cls, n in (report.get("failures_by_class") or {}).items()
                ),
                numeric=[2],
            ),
        ),
        _section(
            "failures-by-reason",
            "Failures by reason",
            _table(
                ["status", "reason", "devices", "class", "key", "what to do"],
                (
                    (
                        f.get("status"),
                        f.get("reason"),
                        f.get("devices"),
                        f.get("class"),
                        f.get("key"),
                        f.get("hint"),
                    )
                    for f in failures
                ),
                numeric=[2],
            )
            + _omitted_reasons_html(report),
        ),
        _section(
            "unknown-answers",
            "Answers the error catalogue does not know",
            (
                '<ul class="plain">' + "".join(f"<li>{esc(a)}</li>" for a in unknown_answers) + "</ul>"
                if unknown_answers
                else '<p class="none">none</p>'
            ),
        ),
        _section(
            "static-ip",
            "Static IP addresses",
            _table(
                ["requested", "assigned", "reserved but not used"],
                [(static_ip.get("requested", 0), static_ip.get("assigned", 0), len(reserved_unused))],
                numeric=[0, 1, 2],
            )
            + (
                "<p>Reserved but not used: "
                + ", ".join(f"<code>{esc(a)}</code>" for a in reserved_unused)
                + "</p>"
                if reserved_unused
                else ""
            ),
        ),
        _section(
            "carrier-writes",
            "Carrier writes by outcome",
            _table(["outcome", "writes"], (report.get("carrier_writes") or {}).items(), numeric=[1])
            + '<p class="meta">ANSWERED: the carrier answered; NO_ANSWER: timeout or dropped connection; '
            "SENT: the answer was never recorded.</p>",
        ),
        _section(
            "steps",
            "Time per step",
            _table(
                ["step", "started", "finished", "seconds"],
                (
                    (s.get("step"), s.get("started_at"), s.get("finished_at"), s.get("seconds"))
                    for s in report.get("steps") or []
                ),
                numeric=[3],
            ),
        ),
    ]
    title = title_of(report)
    customer = report.get("customer_name")
    meta = (
        f"Customer <strong>{esc(customer)}</strong> \u00b7 service provider {esc(report.get('service_provider_id'))}"
        f" \u00b7 generated {esc(report.get('generated_at'))}"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>Bulk change {esc(report.get('bulk_change_id'))} {_status_badge(status)}</h1>"
        f'<p class="meta">{meta}</p>' + "".join(sections) + "</main></body></html>\n"
    )


# ---------------------------------------------------------------------------------------- e-mail body

# The classes in the customer's words (the operator's hints stay in the full report).
_CLASS_WORDS_FOR_CUSTOMER = {
    "retryable": "temporary (can be sent again)",
    "permanent": "refused by the carrier (the line's data needs a correction)",
    "needs_person": "needs action by our operations team",
    "unknown": "unclassified (we are looking into it)",
}
_TD = 'style="border:1px solid #d0d7de;padding:4px 10px;text-align:left"'
_TD_NUM = 'style="border:1px solid #d0d7de;padding:4px 10px;text-align:right"'
_TH = 'style="border:1px solid #d0d7de;padding:4px 10px;text-align:left;background:#eaeef2"'


def _mail_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th {_TH}>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td {_TD_NUM}>{_count(c)}</td>" if i in numeric else f"<td {_TD}>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table style="border-collapse:collapse"><tr>{head}</tr>{body}</table>'


def render_summary_html(report: Mapping[str, Any], *, is_update: bool = False, top_reasons: int = 5) -> str:
    """A short HTML e-mail body: the counts, failures by class and the most frequent reasons.

    Written for the customer: the operator's hints and who cancelled stay in the full report.

    Styles are inline (mail clients drop ``<style>`` blocks); no image, no link, no script.
    ``is_update`` says this outcome replaces one the customer was told before.
    """
    status = report.get("status")
    customer = report.get("customer_name")
    parts = ['<div style="font:14px/1.45 Arial,Helvetica,sans-serif;color:#1f2328">']
    if is_update:
        parts.append(
            "<p><strong>Update:</strong> this replaces the earlier notice about this bulk change.</p>"
        )
    greeting = f"Bulk change <strong>{esc(report.get('bulk_change_id'))}</strong>"
    if customer:
        greeting += f" for <strong>{esc(customer)}</strong>"
    colour = _STATUS_COLOURS.get(str(status), "#9a6700")
    words = STATUS_WORDS.get(str(status), "")
    parts.append(
        f'<p>{greeting} is <strong style="color:{colour}">{esc(status)}</strong>'
        + (f" ({esc(words)})" if words else "")
        + "."
        + "</p>"
    )
    counts = [
        ("lines in the bulk change", report.get("devices", 0)),
        ("activated", report.get("succeeded", 0)),
        ("failed", report.get("failed", 0)),
        ("outcome unknown", report.get("outcome_unknown", 0)),
        ("cancelled", report.get("cancelled", 0)),
        ("static IP addresses assigned", (report.get("static_ip") or {}).get("assigned", 0)),
    ]
    parts.append(_mail_table(["", "lines"], counts, numeric=[1]))
    if report.get("outcome_unknown"):
        parts.append(
            "<p>Lines with an unknown outcome are <strong>not</strong> failed: the carrier's answer was lost "
            "and we are confirming them. None will be activated twice.</p>"
        )
    cancellation = report.get("cancellation")
    if cancellation:
        parts.append(
            f"<p>Cancelled at {esc(cancellation.get('requested_at'))}: {esc(cancellation.get('reason'))}</p>"
        )
    by_class = report.get("failures_by_class") or {}
    if by_class:
        parts.append("<p><strong>Failures by class</strong></p>")
        parts.append(
            _mail_table(
                ["class", "lines"],
                [(_CLASS_WORDS_FOR_CUSTOMER.get(str(c), c), n) for c, n in by_class.items()],
                numeric=[1],
            )
        )
    # Reasons of failed lines only: an unknown outcome or a cancelled line is not a failure.
    failures = sorted(
        (
            f
            for f in report.get("failures_by_reason") or []
            if f.get("status") != "CANCELLED" and not is_outcome_unknown(f.get("reason"))
        ),
        key=lambda f: (-int(f.get("devices") or 0), str(f.get("reason"))),
    )
    if failures:
        shown = failures[:top_reasons]
        parts.append("<p><strong>Most frequent reasons for failed lines</strong></p>")
        parts.append(
            _mail_table(
                ["reason", "lines"],
                [(f.get("reason"), f.get("devices")) for f in shown],
                numeric=[1],
            )
        )
        # The report lists the reasons with the most devices; those it left out are counted.
        more = len(failures) - len(shown) + omitted_reasons(report)
        if more > 0:
            parts.append(f"<p>{more:,} more reason(s): see the full report.</p>")
    parts.append(
        '<p style="color:#57606a">Generated '
        f"{esc(report.get('generated_at'))}. The full report has the details of every failure.</p></div>"
    )
    return "".join(parts)


def _omitted_reasons_html(report: Mapping[str, Any]) -> str:
    """The reasons left out of the list (the report lists those with the most devices)."""
    if not omitted_reasons(report):
        return ""
    devices = int((report.get("failures_by_reason_omitted") or {}).get("devices") or 0)
    return (
        f'<p class="none">and {omitted_reasons(report):,} other reason(s) of {devices:,} '
        "device(s): see the CSV report, one line per device.</p>"
    )
