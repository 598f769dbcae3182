"""Persistence: the database handle, the shared model base, migrations, the server clock."""

from store.base import Base
from store.clock import now_ms
from store.database import Database, after_commit
from store.migrate import current_revision, migrate

__all__ = ["Base", "Database", "after_commit", "current_revision", "migrate", "now_ms"]
