"""Alembic migrations: every schema change ships here, and no upgrade loses data."""
