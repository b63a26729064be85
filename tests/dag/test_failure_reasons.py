"""Failure reasons on the real database: grouped largest first, as a list with a limit or as a
stream through a server-side cursor (a bulk change can have as many reasons as failed devices)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from conftest import BulkChange

from telegence_activation import repository as repo


def _fail_devices(conn: psycopg.Connection, bulk_change_id: int) -> None:
    """30 devices: 5 share one reason, 24 have a reason of their own, 1 is API_FAILED."""
    ids = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM activation.device_change WHERE bulk_change_id = %s ORDER BY line_number",
            (bulk_change_id,),
        ).fetchall()
    ]
    updates = [
        repo.DeviceUpdate(i, "ERROR", repo.STEP_ACTIVATE, "refused: SIM not eligible") for i in ids[:5]
    ]
    updates += [
        repo.DeviceUpdate(i, "ERROR", repo.STEP_CHECK_IP, f"subscriber {n:04d} missing from the reply")
        for n, i in enumerate(ids[5:29])
    ]
    updates.append(repo.DeviceUpdate(ids[29], "API_FAILED", repo.STEP_ACTIVATE, "carrier unavailable"))
    with conn.transaction():
        repo.update_devices(conn, updates)


def test_reasons_stream_in_pages_in_the_order_of_the_list(
    db: psycopg.Connection, make_bulk_change: Callable[..., BulkChange]
) -> None:
    bc = make_bulk_change(32, static_ip_every=0)
    _fail_devices(db, bc.id)
    listed = repo.failure_reasons(db, bc.id)
    assert len(listed) == 26 and listed[0] == ("ERROR", "refused: SIM not eligible", 5)
    assert sum(n for _s, _r, n in listed) == 30  # the two devices left NEW are not failures
    assert repo.failure_reasons(db, bc.id, limit=3) == listed[:3]
    # Pages of 7 groups: the stream gives every group, in the same order, read through a
    # server-side cursor that is gone once the stream is read.
    streamed = list(repo.iter_failure_reasons(db, bc.id, page=7))
    assert streamed == listed
    assert not db.execute("SELECT name FROM pg_cursors").fetchall()


def test_the_stream_works_inside_a_callers_transaction_and_in_autocommit(
    db_uri: str, make_bulk_change: Callable[..., BulkChange]
) -> None:
    bc = make_bulk_change(32, static_ip_every=0)
    with psycopg.connect(db_uri) as conn:
        _fail_devices(conn, bc.id)
        expected = repo.failure_reasons(conn, bc.id)
        with conn.transaction():  # as finalize reads it, beside its other queries
            first = next(repo.iter_failure_reasons(conn, bc.id, page=2))
            assert first == expected[0]
            assert repo.status_counts(conn, bc.id)  # the connection stays usable in between
        assert list(repo.iter_failure_reasons(conn, bc.id)) == expected
    with psycopg.connect(db_uri, autocommit=True) as conn:  # as the page and the CLI connect
        assert list(repo.iter_failure_reasons(conn, bc.id, page=5)) == expected


def test_retry_stages_the_reasons_it_keeps_a_page_at_a_time_and_resets_only_those(
    db_uri: str, make_bulk_change: Callable[..., BulkChange]
) -> None:
    # 25 distinct per-device reasons in pages of 4 (more pages than one): retry-failed keeps those a
    # predicate accepts without a list of every reason in memory, and resets exactly their devices.
    bc = make_bulk_change(32, static_ip_every=0)
    with psycopg.connect(db_uri) as conn:
        _fail_devices(conn, bc.id)
        conn.commit()

        def keep(reason: str) -> bool:
            return reason.startswith("subscriber") and int(reason.split()[1]) % 2 == 0

        staged, left_out = repo.stage_retry_reasons(conn, bc.id, keep, page=4)
        assert (staged, left_out) == (12, 5 + 12)  # 12 even subscribers; the shared reason and the odd ones
        assert conn.execute("SELECT count(*) FROM retry_reason").fetchone() == (12,)
        reset = repo.reset_failed_devices(conn, bc.id, "test", only_staged=True)
        assert reset == {repo.STEP_REQUEST_IP: 12}  # a failed IP check goes back to the request step
        conn.commit()
        # The staging table belonged to that transaction only.
        assert conn.execute("SELECT to_regclass('pg_temp.retry_reason')").fetchone() == (None,)
        assert repo.status_counts(conn, bc.id)["ERROR"] == 5 + 12
        # Nothing kept: nothing reset.
        assert repo.stage_retry_reasons(conn, bc.id, lambda _reason: False, page=4) == (0, 17)
        assert repo.reset_failed_devices(conn, bc.id, "test", only_staged=True) == {}
        conn.rollback()
