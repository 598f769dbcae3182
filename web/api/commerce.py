"""The commerce part of the API in one place: its operations, and what it needs from the process (its
durable job handlers, and the idempotency-key housekeeping job scheduled once the database is up)."""

from __future__ import annotations

from aiohttp import web

from commerce.idempotency import ensure_purge_scheduled
from commerce.jobs import HANDLERS
from web.api import commerce_cart, commerce_catalog, commerce_images, commerce_orders
from web.runtime import RUNTIME

operations = [*commerce_catalog.api.operations, *commerce_images.api.operations, *commerce_cart.api.operations,
              *commerce_orders.api.operations]


def install(app: web.Application) -> None:
    """Register commerce's job handlers with the app's runner (before it starts) and its housekeeping."""
    app[RUNTIME].job_handlers.update(HANDLERS)
    app.on_startup.append(_schedule_housekeeping)


async def _schedule_housekeeping(app: web.Application) -> None:
    async with app[RUNTIME].db.write() as session:
        await ensure_purge_scheduled(session)
