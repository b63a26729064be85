"""The bulk change report: final status, unfinished count, and the assembled report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telegence_activation.domain.report import (
    MAX_LISTED_REASONS,
    StepTime,
    build_report,
    final_status,
    outcome_key,
    run_note,
    summarize_failures,
    unfinished,
)

T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        ({}, "PROCESSED"),
        ({"PROCESSED": 12}, "PROCESSED"),
        ({"PROCESSED": 12, "ERROR": 0, "API_FAILED": 0}, "PROCESSED"),
        ({"PROCESSED": 12, "ERROR": 1}, "ERROR"),
        ({"PROCESSED": 12, "API_FAILED": 1}, "ERROR"),
        ({"ERROR": 3}, "ERROR"),
        ({"PROCESSED": 12, "NEW": 1}, "ERROR"),
    ],
)
def test_final_status_is_processed_only_when_every_device_is(counts: dict[str, int], status: str) -> None:
    assert final_status(counts) == status


def test_unfinished_counts_devices_outside_terminal_states() -> None:
    counts = {"PROCESSED": 2, "ERROR": 1, "API_FAILED": 4, "NEW": 3, "PENDING": 5, "IP_PENDING": 1}
    assert unfinished(counts) == 9


def test_unfinished_is_zero_when_all_terminal() -> None:
    assert unfinished({"PROCESSED": 2, "ERROR": 1, "API_FAILED": 4}) == 0
    assert unfinished({}) == 0


def _report(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "bulk_change": {"id": 42, "service_provider_id": 3, "customer_name": "Acme", "status": "ERROR"},
        "by_status_step": [
            ("PROCESSED", "Done", 5),
            ("ERROR", "ActivateDevice", 2),
            ("PROCESSED", "ProvisionStaticIP", 1),
            ("API_FAILED", "ActivateDevice", 1),
        ],
        "failures": [
            ("ERROR", "carrier refused the activation", 2),
            ("API_FAILED", "carrier unavailable", 1),
        ],
        "ips_assigned": 3,
        "static_ip_requested": 4,
        "step_times": [
            StepTime("ActivateDevice", T0, T0 + timedelta(seconds=90, microseconds=123456)),
            StepTime("ProvisionStaticIP", T0 + timedelta(minutes=2), None),
        ],
        "generated_at": T0 + timedelta(minutes=5),
    }
    arguments.update(overrides)
    return build_report(**arguments)  # type: ignore[arg-type]


def test_build_report_sums_statuses_across_steps() -> None:
    report = _report()
    assert report["devices"] == 9
    assert report["succeeded"] == 6
    assert report["failed"] == 3
    assert report["by_status"] == {"API_FAILED": 1, "ERROR": 2, "PROCESSED": 6}
    assert list(report["by_status"]) == ["API_FAILED", "ERROR", "PROCESSED"]  # type: ignore[arg-type]


def test_build_report_keeps_rows_by_status_and_step_and_failures_by_reason() -> None:
    report = _report()
    assert report["by_status_and_step"] == [
        {"status": "PROCESSED", "step": "Done", "devices": 5},
        {"status": "ERROR", "step": "ActivateDevice", "devices": 2},
        {"status": "PROCESSED", "step": "ProvisionStaticIP", "devices": 1},
        {"status": "API_FAILED", "step": "ActivateDevice", "devices": 1},
    ]
    assert [(f["status"], f["reason"], f["devices"], f["class"]) for f in report["failures_by_reason"]] == [
        ("ERROR", "carrier refused the activation", 2, "unknown"),
        ("API_FAILED", "carrier unavailable", 1, "retryable"),
    ]
    assert all(f["hint"] for f in report["failures_by_reason"])
    assert report["failures_by_class"] == {"retryable": 1, "unknown": 2}
    assert report["unknown_answers"] == ["carrier refused the activation"]


def test_a_cancelled_bulk_change_counts_cancelled_devices_apart_from_failures() -> None:
    report = build_report(
        bulk_change={
            "id": 7,
            "service_provider_id": 3,
            "status": "CANCELLED",
            "cancel_requested_at": datetime(2026, 11, 30, 1, 0, tzinfo=UTC),
            "cancelled_by": "alice",
            "cancel_reason": "wrong rate plan",
        },
        by_status_step=[("PROCESSED", "Done", 3), ("CANCELLED", "ActivateDevice", 5)],
        failures=[],
        ips_assigned=0,
        static_ip_requested=0,
        step_times=[],
        generated_at=datetime(2026, 11, 30, 2, 0, tzinfo=UTC),
    )
    assert (report["succeeded"], report["failed"], report["cancelled"]) == (3, 0, 5)
    assert report["cancellation"] == {
        "requested_at": "2026-11-30T01:00:00+00:00",
        "by": "alice",
        "reason": "wrong rate plan",
    }
    assert outcome_key(report).endswith(":cancelled=5")
    assert final_status({"PROCESSED": 3, "CANCELLED": 5}, cancelled=True) == "CANCELLED"
    assert final_status({"PROCESSED": 3}) == "PROCESSED"


def test_build_report_header_and_static_ip() -> None:
    report = _report()
    assert report["bulk_change_id"] == 42
    assert report["service_provider_id"] == 3
    assert report["customer_name"] == "Acme"
    assert report["status"] == "ERROR"
    assert report["generated_at"] == "2026-11-29T10:05:00+00:00"
    assert report["static_ip"] == {"requested": 4, "assigned": 3, "reserved_not_used": []}


def test_build_report_step_times_in_seconds_rounded_and_open_steps() -> None:
    assert _report()["steps"] == [
        {
            "step": "ActivateDevice",
            "started_at": "2026-11-29T10:00:00+00:00",
            "finished_at": "2026-11-29T10:01:30.123456+00:00",
            "seconds": 90.123,
        },
        {
            "step": "ProvisionStaticIP",
            "started_at": "2026-11-29T10:02:00+00:00",
            "finished_at": None,
            "seconds": None,
        },
    ]


def test_build_report_of_an_empty_bulk_change() -> None:
    report = _report(
        bulk_change={"id": 1, "service_provider_id": 9, "status": "PROCESSED"},
        by_status_step=iter(()),
        failures=[],
        ips_assigned=0,
        static_ip_requested=0,
        step_times=[],
    )
    assert report["customer_name"] is None
    assert (report["devices"], report["succeeded"], report["failed"]) == (0, 0, 0)
    assert report["by_status"] == {}
    assert report["steps"] == []


def test_build_report_accepts_one_shot_iterators() -> None:
    # The database hands rows as cursors; each must be read once and still counted fully.
    report = _report(by_status_step=iter([("PROCESSED", "Done", 2), ("ERROR", "ActivateDevice", 1)]))
    assert report["devices"] == 3
    assert len(report["by_status_and_step"]) == 2  # type: ignore[arg-type]


def test_the_run_note_says_what_a_green_run_hides() -> None:
    from telegence_activation.domain.report import run_note

    report = _report()
    note = run_note({"id": 42, "status": "ERROR"}, report, None)
    assert note.startswith("**Bulk change 42: ERROR**: 6 of 9 line(s) activated, 3 failed")
    assert "- 2 device(s), unknown: carrier refused the activation" in note
    assert "- 1 device(s), retryable: carrier unavailable" in note
    plan = {
        "dry_run": True,
        "to_send": 450,
        "batches": 3,
        "static_ip": {"devices": 150},
        "problems": ["1 device(s) have a stored request the carrier would refuse"],
    }
    dry = run_note({"id": 7, "status": "NEW"}, None, plan)
    assert dry.startswith("**Dry run of bulk change 7**: 450 line(s) in 3 call(s), 150 static IP(s)")
    assert "- problem: 1 device(s) have a stored request" in dry
    stuck = run_note({"id": 8, "status": "PROCESSING", "status_details": None}, None, None)
    assert "not finished" in stuck
    rejected = run_note(
        {"id": 9, "status": "CANCELLED", "status_details": "cancelled by ann: no"}, None, None
    )
    assert rejected == "**Bulk change 9: CANCELLED**: cancelled by ann: no"


def test_the_report_lists_the_reasons_with_most_devices_and_counts_every_failed_device() -> None:
    # Reasons that name a device: as many groups as failed devices. The report keeps the first
    # MAX_LISTED_REASONS groups (the database hands them largest first) and counts the rest.
    many = [("ERROR", "refused by the carrier: SIM 89010000000000000000 not eligible", 7)]
    many += [("ERROR", f"API error: subscriber 555{n:07d} missing from the reply", 1) for n in range(250)]
    many += [("ERROR", "outcome unknown: the answer was lost", 3)]
    report = _report(failures=iter(many))  # a one-shot stream, as the server-side cursor gives it
    listed = report["failures_by_reason"]
    assert isinstance(listed, list) and len(listed) == MAX_LISTED_REASONS
    assert listed[0]["devices"] == 7
    assert report["failures_by_reason_omitted"] == {"reasons": 152, "devices": 151 + 3}
    # Every device is still counted: by class (outcome unknown apart) and in the unknown outcome.
    assert sum(report["failures_by_class"].values()) == 7 + 250  # type: ignore[union-attr]
    assert report["outcome_unknown"] == 3
    assert len(report["unknown_answers"]) <= MAX_LISTED_REASONS  # type: ignore[arg-type]
    # The run note shows five and counts the other 95 listed and the 152 left out.
    assert "- … 247 more reason(s): see the report" in run_note({"id": 42, "status": "ERROR"}, report, None)
    # The HTML report and the e-mail summary say what the list left out.
    from telegence_activation.domain.report_html import render_report_html, render_summary_html

    assert "and 152 other reason(s) of 154 device(s)" in render_report_html(report)
    assert "251 more reason(s): see the full report." in render_summary_html(report, top_reasons=1)


def test_a_summary_of_few_reasons_omits_nothing() -> None:
    found = summarize_failures([("ERROR", "a", 2), ("API_FAILED", "carrier unavailable", 1)])
    assert [r for _s, r, _n, _c in found.listed] == ["a", "carrier unavailable"]
    assert (found.omitted_reasons, found.omitted_devices) == (0, 0)
    assert found.every_class == {"unknown": 2, "retryable": 1}
