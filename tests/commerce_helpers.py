"""Shared set-up for the commerce tests: accounts made without password hashing, products, live shows."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import UserRow
from accounts.user import User
from commerce import catalog
from commerce.catalog import VariantSpec
from commerce.values import Product
from rooms import service as rooms
from rooms.live import go_live
from rooms.values import Room, Show
from store import Database, now_ms

_emails = itertools.count(1)


async def add_users(session: AsyncSession, count: int, role: str = "viewer") -> list[User]:
    """Accounts inserted directly (no password to hash): the tests need buyers, not logins."""
    rows = [UserRow(email=f"user{next(_emails)}@example.com", display_name="buyer", role=role,
                    password_hash="unused", created_at=now_ms(), disabled=False) for _ in range(count)]
    session.add_all(rows)
    await session.flush()
    return [User.from_row(row) for row in rows]


async def users(db: Database, count: int, role: str = "viewer") -> list[User]:
    async with db.write() as session:
        return await add_users(session, count, role)


async def product(db: Database, host: User, stock: int = 10, **options: Any) -> Product:
    """An active product with one default variant holding `stock`, or with `variants`."""
    variants: list[VariantSpec] | None = options.pop("variants", None)
    async with db.write() as session:
        return await catalog.create_product(session, host, options.pop("title", "Denim jacket"),
                                            options.pop("price_minor", 2500), currency=options.pop("currency", "USD"),
                                            status=options.pop("status", "active"),
                                            stock=0 if variants else stock, variants=variants, **options)


async def live_show(db: Database, host: User, slug: str = "vintage-finds") -> tuple[Room, Show]:
    async with db.write() as session:
        room = await rooms.create_room(session, host, slug, "Vintage finds")
        show = await go_live(session, room)
    return room, show
