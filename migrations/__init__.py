"""Alembic migrations for Corral's database (run with ``corral db upgrade``)."""
