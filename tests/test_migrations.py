"""Schema migrations against a real PostgreSQL server."""

from __future__ import annotations

import threading

import psycopg
import pytest

from telegence_activation.db.migrate import Migration, MigrationError, load_migrations, migrate


def _tables(uri: str) -> set[str]:
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'activation'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_from_empty_database(scratch_db: str) -> None:
    applied = migrate(scratch_db)
    assert applied == [m.version for m in load_migrations()]
    assert {
        "schema_migrations",
        "bulk_change",
        "device_change",
        "device_change_log",
        "step_timing",
        "bulk_change_report",
        "notification",
        "carrier_rate_bucket",
    } <= _tables(scratch_db)


def test_reapplying_is_a_no_op(scratch_db: str) -> None:
    migrate(scratch_db)
    assert migrate(scratch_db) == []
    with psycopg.connect(scratch_db) as conn:
        versions = conn.execute("SELECT version FROM activation.schema_migrations ORDER BY 1").fetchall()
    assert [v[0] for v in versions] == [m.version for m in load_migrations()]


def test_concurrent_migrations_apply_each_file_once(scratch_db: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(scratch_db))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]


def test_an_edited_applied_migration_is_refused(scratch_db: str) -> None:
    migrate(scratch_db)
    first = load_migrations()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(scratch_db, [edited])


def test_a_failing_migration_leaves_nothing_half_applied(scratch_db: str) -> None:
    migrate(scratch_db)
    bad = Migration(9999, "broken", "CREATE TABLE activation.half (id int); SELECT no_such_function();")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(scratch_db, [*load_migrations(), bad])
    assert "half" not in _tables(scratch_db)
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM activation.schema_migrations WHERE version = 9999"
        ).fetchone() == (0,)


def test_schema_enforces_what_the_workflow_relies_on(db_uri: str) -> None:
    with psycopg.connect(db_uri) as conn:
        bc = conn.execute(
            "INSERT INTO activation.bulk_change (service_provider_id) VALUES (1) RETURNING id"
        ).fetchone()
        assert bc is not None
        insert = (
            "INSERT INTO activation.device_change (bulk_change_id, line_number, iccid, imei, change_request) "
            "VALUES (%s, %s, %s, %s, %s)"
        )
        request = '{"TelegenceActivationRequest": {}, "StaticIPProvision": {"PDPName": "P"}}'
        conn.execute(insert, (bc[0], 2, "89014100000000000019", "359211080000006", request))
        needs_ip = conn.execute(
            "SELECT needs_static_ip FROM activation.device_change WHERE bulk_change_id = %s", (bc[0],)
        ).fetchone()
        assert needs_ip == (True,)
        # An ICCID appears once per bulk change.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute(insert, (bc[0], 3, "89014100000000000019", "359211080000014", "{}"))
        # A device in error always carries a reason.
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(
                "UPDATE activation.device_change SET status = 'ERROR' WHERE bulk_change_id = %s", (bc[0],)
            )
        # Unknown statuses are refused.
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute("UPDATE activation.bulk_change SET status = 'DONE' WHERE id = %s", (bc[0],))
        conn.rollback()
