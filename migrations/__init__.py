"""Alembic migrations for migrator's job table (installed as migrator._migrations)."""
