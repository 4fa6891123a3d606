"""Persistence: typed models, the session factory, migrations and repository functions."""

from scheduler.db.session import Database, corral_home, default_url

__all__ = ["Database", "corral_home", "default_url"]
