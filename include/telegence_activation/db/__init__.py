"""Database access: connection URI resolution, embedded server, schema migrations."""
