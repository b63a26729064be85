"""Versioned schema migrations: ordered SQL files applied once each, recorded in a version table.

Files live in ``migrations/`` and are named ``NNNN_description.sql``. Each one runs in its own
transaction under a Postgres advisory lock, so two processes migrating at once (two workers, a
test and the demo) never apply a file twice. An applied file whose text has changed is an error:
migrations are append-only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

# Any constant works; it only has to be the same for every process migrating this schema.
_ADVISORY_LOCK_KEY = 0x7E1E6E3C
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS activation;
CREATE TABLE IF NOT EXISTS activation.schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(RuntimeError):
    """The database's migration history does not match the migration files."""


@dataclass(frozen=True)
class Migration:
    """One SQL migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Return the packaged migrations in version order."""
    found: list[Migration] = []
    for entry in resources.files("telegence_activation.db").joinpath("migrations").iterdir():
        match = _FILE_PATTERN.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return found


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Return ``{version: checksum}`` of the migrations already applied (empty on a new database)."""
    row = conn.execute("SELECT to_regclass('activation.schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return {}
    return dict(conn.execute("SELECT version, checksum FROM activation.schema_migrations").fetchall())


def migrate(uri: str, migrations: list[Migration] | None = None) -> list[int]:
    """Apply every pending migration to the database at ``uri``; return the versions applied now."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(_BOOTSTRAP)
            done = applied_versions(conn)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was "
                            "applied; add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO activation.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied_now
