"""Buying: reserving (cart holds), cancelling holds, the cart, checkout, and the admission queue or lottery.

Reserve and checkout honour an `Idempotency-Key` header: a retry with the same key gets the first answer
(header `Idempotent-Replayed: true`) and never holds or orders twice; the same key with another request is
409 "idempotency_mismatch". Refusals are 409 with a machine-readable code: sold_out, limit_reached,
sale_not_started (with `starts_at`), sale_ended, queue_token_required (with `position`).
Reserve is rate limited per account only (`rate_limits.reserves_per_second`), never per address: buyers of
one venue share an address, and the atomic stock, purchase limits and idempotency already bound what a fast
client can take; the limit only keeps a bot's polling from crowding out everyone else's answers.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import admission, availability, flash_sales, idempotency, inventory, orders
from commerce.idempotency import HEADER, Outcome, error_body, fingerprint
from store import now_ms
from web.api.commerce_common import CartOut, HoldOut, OrderOut, SaleOut, TicketOut, path_id, with_details
from web.api.common import caller, principal, runtime, settings
from web.api.registry import Api

api = Api()
REPLAYED_HEADER = "Idempotent-Replayed"
SOLD_OUT = json.dumps(error_body(inventory.sold_out())).encode()
"""The sold-out refusal answered from memory, serialised once: it is the answer most requests of a flash sale get."""


class ReserveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"quantity": 1}, {"variant_id": 12, "quantity": 2, "show_id": 5},
        {"quantity": 1, "queue_token": "oV3f0tL3a7mJm2cZ0bq9pX4vQ1sR8uYw"}]})

    variant_id: int | None = Field(None, ge=1, description="required when the product has several variants")
    quantity: int = Field(1, ge=1, le=100)
    show_id: int | None = Field(None, ge=1, description="buying in a live show: its show price and limit")
    queue_token: str | None = Field(None, max_length=64, description="purchase token of a queue or lottery")


class AddressIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200)
    line2: str = Field("", max_length=200)
    city: str = Field(min_length=1, max_length=200)
    region: str = Field("", max_length=200)
    postal_code: str = Field(min_length=1, max_length=200)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")


class CheckoutIn(BaseModel):
    """The cart of `show_id` (or, without it, the holds made outside shows), or exactly `hold_ids`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"show_id": 5, "shipping_address": {"name": "Ada Lovelace", "line1": "12 St James's Square",
                                            "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}},
        {"hold_ids": [31, 32], "shipping_address": {"name": "Grace Hopper", "line1": "1 Navy Way",
                                                    "city": "Arlington", "region": "VA", "postal_code": "22202",
                                                    "country": "US"}}]})

    show_id: int | None = Field(None, ge=1)
    hold_ids: list[int] | None = Field(None, min_length=1, max_length=100)
    shipping_address: AddressIn


class CartQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    show_id: int | None = Field(None, ge=1)


def _answer(outcome: Outcome) -> web.Response:
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    return web.json_response(outcome.body, status=outcome.status, headers=headers)


def _key(request: web.Request) -> str | None:
    return request.headers.get(HEADER)


@api.route("POST", "/api/products/{id}/reserve", summary="Hold units for you until a deadline (Idempotency-Key)",
           tag="cart", access="user", body=ReserveIn, response=HoldOut, status=201, errors=(404, 409),
           rate_limit="reserve")
async def reserve(request: web.Request, body: ReserveIn) -> web.Response:
    product_id = path_id(request, "id", "product_not_found", "product")
    hold_seconds = settings(request).commerce.hold_seconds
    db = runtime(request).db
    user_id = principal(request).user_id or 0
    key = _key(request)
    hints = availability.for_database(db)

    async def action(session: AsyncSession) -> tuple[int, dict[str, Any]]:
        hold = await inventory.reserve(session, await caller(request, session), product_id,
                                       hold_seconds=hold_seconds, variant_id=body.variant_id, quantity=body.quantity,
                                       show_id=body.show_id, queue_token=body.queue_token)
        return 201, HoldOut.of(hold).model_dump(mode="json")

    async def run() -> web.Response:
        request_hash = fingerprint("reserve", {"product_id": product_id, **body.model_dump()})
        return _answer(await idempotency.run(db, user_id, key, "reserve", request_hash, action))

    if not hints.sold_out(product_id, body.variant_id, body.quantity):
        async with hints.turn(product_id, body.variant_id, body.quantity) as admitted:
            if admitted:
                return await run()
    # Sold out as far as this process knows; a key that already has an answer gets that answer replayed.
    await hints.refusal_turn()
    if key is not None and await idempotency.is_stored(db, user_id, key):
        return await run()
    return web.Response(body=SOLD_OUT, status=409, content_type="application/json", charset="utf-8")


@api.route("DELETE", "/api/holds/{id}", summary="Give held units back at once", tag="cart", access="user",
           response=HoldOut, errors=(404, 409))
async def cancel_hold(request: web.Request) -> HoldOut:
    hold_id = path_id(request, "id", "hold_not_found", "hold")
    async with runtime(request).db.write() as session:
        return HoldOut.of(await inventory.cancel_hold(session, await caller(request, session), hold_id))


@api.route("GET", "/api/cart", summary="Your held items not yet checked out (all, or one show's)", tag="cart",
           access="user", query=CartQuery, response=CartOut)
async def cart(request: web.Request, query: CartQuery) -> CartOut:
    async with runtime(request).db.read() as session:
        holds = await inventory.active_holds(session, (await caller(request, session)).id, query.show_id)
    totals: dict[str, int] = {}
    for hold in holds:
        totals[hold.unit_price.currency] = totals.get(hold.unit_price.currency, 0) + \
            hold.unit_price.amount_minor * hold.quantity
    out = [HoldOut.of(hold) for hold in holds]
    return CartOut(holds=out, items_minor=totals, server_time=now_ms())


@api.route("POST", "/api/checkout", summary="Turn held items into a reserved order (Idempotency-Key)", tag="orders",
           access="user", body=CheckoutIn, response=OrderOut, status=201, errors=(404, 409))
async def checkout(request: web.Request, body: CheckoutIn) -> web.Response:
    commerce_settings = settings(request).commerce
    address = orders.address_from(body.shipping_address.model_dump())

    async def action(session: AsyncSession) -> tuple[int, dict[str, Any]]:
        order = await orders.checkout(session, await caller(request, session), address, show_id=body.show_id,
                                      hold_ids=body.hold_ids,
                                      tax_rate_basis_points=commerce_settings.tax_rate_basis_points,
                                      default_currency=commerce_settings.currency)
        return 201, OrderOut.of(order).model_dump(mode="json")

    request_hash = fingerprint("checkout", body.model_dump())
    return _answer(await idempotency.run(runtime(request).db, principal(request).user_id or 0, _key(request),
                                         "checkout", request_hash, action))


def _sale_id(request: web.Request) -> int:
    return path_id(request, "id", "sale_not_found", "flash sale")


@api.route("GET", "/api/flash-sales/{id}", summary="A flash sale: deadlines, and a lottery's seed once drawn",
           tag="flash-sales", response=SaleOut, errors=(404,))
async def get_sale(request: web.Request) -> SaleOut:
    async with runtime(request).db.read() as session:
        return SaleOut.of(await flash_sales.get_sale(session, _sale_id(request)))


@api.route("POST", "/api/flash-sales/{id}/queue", summary="Join a sale's queue or lottery (again: same place)",
           tag="flash-sales", access="user", response=TicketOut, errors=(404, 409))
@with_details
async def join_queue(request: web.Request) -> TicketOut:
    async with runtime(request).db.write() as session:
        return TicketOut.of(await admission.join(session, _sale_id(request), await caller(request, session)))


@api.route("GET", "/api/flash-sales/{id}/queue", summary="Your place in line, and your purchase token in turn",
           tag="flash-sales", access="user", response=TicketOut, errors=(404,))
async def queue_ticket(request: web.Request) -> TicketOut:
    # A write: polling is what hands out tokens as earlier ones are used or lapse.
    async with runtime(request).db.write() as session:
        return TicketOut.of(await admission.ticket(session, _sale_id(request), principal(request).user_id or 0))
