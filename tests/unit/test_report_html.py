"""The report as HTML: a self-contained page and a short e-mail body, every value escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from telegence_activation.domain.report import StepTime, build_report
from telegence_activation.domain.report_html import render_report_html, render_summary_html, title_of

T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
HOSTILE_NAME = '<script>alert("owned")</script> & Sons'
# Not in the error catalogue: listed among the unknown answers too.
HOSTILE_REASON = "carrier said: <img src=x onerror=alert(1)> ???"
SECTIONS = (
    "summary",
    "cancellation",
    "by-status",
    "by-status-and-step",
    "failures-by-class",
    "failures-by-reason",
    "unknown-answers",
    "static-ip",
    "carrier-writes",
    "steps",
)


def _report(**bulk_change: Any) -> dict[str, Any]:
    return build_report(
        bulk_change={
            "id": 42,
            "service_provider_id": 3,
            "customer_name": HOSTILE_NAME,
            "status": "ERROR",
            **bulk_change,
        },
        by_status_step=[
            ("PROCESSED", "Done", 439),
            ("ERROR", "ActivateDevice", 7),
            ("ERROR", "WaitForActivation", 3),
            ("API_FAILED", "ActivateDevice", 1),
        ],
        failures=[
            ("ERROR", HOSTILE_REASON, 5),
            ("ERROR", "HTTP 422: SIM not eligible for activation", 2),
            ("ERROR", "outcome unknown: the activation answer was lost", 2),
            ("API_FAILED", "carrier unavailable: HTTP 503 after 5 attempt(s)", 1),
            ("ERROR", "HTTP 403: forbidden", 1),
        ],
        ips_assigned=12,
        static_ip_requested=14,
        step_times=[
            StepTime("ActivateDevice", T0, T0 + timedelta(seconds=90)),
            StepTime("RequestIPProvision", T0 + timedelta(minutes=2), None),
        ],
        generated_at=T0 + timedelta(minutes=5),
        carrier_writes={"ANSWERED": 12, "NO_ANSWER": 1},
        reserved_unused=["10.20.0.7"],
    )


class _Tags(HTMLParser):
    """Every start tag and attribute of a page, to check what markup it really holds."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def test_the_page_escapes_a_hostile_customer_name_and_reason() -> None:
    page = render_report_html(_report())
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; Sons" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    parsed = _parse(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "img", "iframe", "object", "link")]
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    # What a reader sees is the text as it was.
    text = "".join(parsed.text)
    assert HOSTILE_NAME in text and HOSTILE_REASON in text


def test_the_page_has_every_section_and_is_self_contained() -> None:
    page = render_report_html(_report())
    assert page.startswith("<!DOCTYPE html>")
    ids = [attrs.get("id") for tag, attrs in _parse(page).tags if tag == "section"]
    assert ids == list(SECTIONS)
    assert "<style>" in page
    parsed = _parse(page)
    assert not [a for _, attrs in parsed.tags for a in attrs if a in ("src", "href", "action")], (
        "no asset, no link"
    )
    assert not [t for t, _ in parsed.tags if t in ("script", "link", "img", "iframe")]
    assert "http://" not in page and "https://" not in page and "@import" not in page


def test_the_page_shows_the_counts_failures_and_details() -> None:
    report = _report()
    page = render_report_html(report)
    assert "<title>Bulk change 42: ERROR \u2014 439 of 450 lines activated</title>" in page
    text = "".join(_parse(page).text)
    for expected in (
        "450",  # devices
        "439",  # activated
        "outcome unknown",
        "HTTP 422: SIM not eligible for activation",
        "carrier unavailable: HTTP 503 after 5 attempt(s)",
        "10.20.0.7",  # reserved, not used
        "NO_ANSWER",
        "ActivateDevice",
        "RequestIPProvision",
        "90.0",  # seconds of the activation step
        "needs a person",  # a class with its meaning
    ):
        assert expected in text, expected
    # Each failure reason with its catalogue key and hint.
    for failure in report["failures_by_reason"]:
        assert failure["key"] in text and failure["hint"] in text
    # An answer the catalogue does not know is listed apart.
    assert report["unknown_answers"], report["failures_by_reason"]
    unknown = page.split('id="unknown-answers"')[1].split("</section>")[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in unknown


def test_a_report_with_nothing_to_list_still_has_every_section() -> None:
    report = build_report(
        bulk_change={"id": 7, "service_provider_id": 1, "status": "PROCESSED"},
        by_status_step=[("PROCESSED", "Done", 3)],
        failures=[],
        ips_assigned=0,
        static_ip_requested=0,
        step_times=[],
        generated_at=T0,
    )
    page = render_report_html(report)
    ids = [attrs.get("id") for tag, attrs in _parse(page).tags if tag == "section"]
    assert ids == list(SECTIONS)
    assert "not cancelled" in page and 'class="none"' in page
    assert title_of(report) == "Bulk change 7: PROCESSED \u2014 3 of 3 lines activated"


def test_a_cancelled_report_shows_who_when_and_why() -> None:
    report = _report(
        status="CANCELLED",
        cancel_requested_at=T0 + timedelta(minutes=1),
        cancelled_by="<b>ops-jane</b>",
        cancel_reason="customer asked: wrong <rate plan>",
    )
    page = render_report_html(report)
    section = page.split('id="cancellation"')[1].split("</section>")[0]
    assert "&lt;b&gt;ops-jane&lt;/b&gt;" in section
    assert "customer asked: wrong &lt;rate plan&gt;" in section
    assert "2026-11-29T10:01:00+00:00" in section
    assert "<b>" not in page


def test_the_summary_has_counts_classes_and_top_reasons_escaped() -> None:
    body = render_summary_html(_report(), top_reasons=2)
    assert "<script" not in body.lower() and "<img" not in body.lower()
    assert "&lt;script&gt;" in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    parsed = _parse(body)
    assert not [t for t, _ in parsed.tags if t in ("script", "img", "style", "link")]
    text = "".join(parsed.text)
    assert "is ERROR" in text
    assert "450" in text and "439" in text and "12" in text  # devices, activated, IPs
    assert "refused by the carrier" in text  # a class in the customer's words
    assert "not failed" in text  # the outcome-unknown note
    # The two most frequent reasons of failed lines (an unknown outcome is not one); the other two
    # are left to the full report.
    assert HOSTILE_REASON in text and "SIM not eligible" in text
    assert "carrier unavailable" not in text and "the activation answer was lost" not in text
    assert "2 more reason(s)" in text
    assert "retry-failed" not in text  # operator hints stay in the full report
    assert "Update:" not in text
    assert "Update:" in "".join(_parse(render_summary_html(_report(), is_update=True)).text)


def test_the_summary_of_a_cancelled_bulk_change_says_why() -> None:
    report = _report(
        status="CANCELLED",
        cancel_requested_at=T0,
        cancelled_by="ops-jane",
        cancel_reason="customer <asked>",
    )
    body = render_summary_html(report)
    assert "is <strong" in body and "CANCELLED" in body
    assert "customer &lt;asked&gt;" in body
