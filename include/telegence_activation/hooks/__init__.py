"""Hooks: I/O only (Telegence over HTTP, the activation database over Postgres)."""
