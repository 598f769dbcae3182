"""Persistence: the database handle, the shared model base, migrations, the server clock, durable jobs."""

from store.base import Base
from store.clock import now_ms
from store.database import Database, after_commit
from store.jobs import JobContext, JobRunner
from store.migrate import current_revision, migrate

__all__ = [
    "Base", "Database", "JobContext", "JobRunner", "after_commit", "current_revision", "migrate", "now_ms",
]
