"""Statements built once, with bound parameters, for the paths a flash sale runs thousands of times.

Building a SQLAlchemy statement (its clauses, then its cache key) costs more than running it, and an
ORM-enabled one costs again in loading: a hold, checkout or payment runs a dozen statements, so the hot ones
are module constants over the tables themselves (`table_of`), executed with a dict of parameters. Upserts
differ by dialect and are built once for each (`PerDialect`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

T = TypeVar("T")


def table_of(model: type[Any]) -> Table:
    """The Core table of a mapped class: statements over it skip the ORM's compile and load steps."""
    return cast(Table, model.__table__)


def bound_values(table: Table, *names: str) -> dict[str, BindParameter[Any]]:
    """`values()` for an INSERT or UPDATE bound at execution: each column `name` takes parameter `v_{name}`, typed
    as the column (JSON columns serialise). The prefix keeps them apart from the names SQLAlchemy reserves."""
    return {name: bindparam(f"v_{name}", type_=table.c[name].type) for name in names}


def bound(values: dict[str, Any]) -> dict[str, Any]:
    """The execution parameters of `bound_values`: {"v_" + column: value}."""
    return {f"v_{name}": value for name, value in values.items()}


class PerDialect(Generic[T]):
    """A statement built once with SQLite's and once with PostgreSQL's `insert` (their upserts differ)."""

    def __init__(self, build: Callable[[Any], T]) -> None:
        self._built = {"sqlite": build(sqlite.insert), "postgresql": build(postgresql.insert)}

    def of(self, session: AsyncSession) -> T:
        return self._built[session.get_bind().dialect.name]
