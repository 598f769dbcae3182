"""Orders after checkout: paying, cancelling, the buyer's history, the seller's orders, shipping, refunds, and
the payment provider's webhook."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commerce import orders
from commerce.payments import SIGNATURE_HEADER
from web.api.commerce_common import OrderList, OrderOut, path_id, provider
from web.api.common import caller, runtime
from web.api.registry import Api
from web.errors import ApiError

api = Api()

OrderStatus = Literal["pending", "reserved", "paid", "fulfilled", "cancelled", "expired", "refunded"]


class PayIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"payment_method": "4242 4242 4242 4242"}, {"payment_method": "pm_card_visa"}]})

    payment_method: str = Field(min_length=1, max_length=100, description=(
        "a card number or a payment method id; with the test provider 4000 0000 0000 0002 declines"))


class ReasonIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "ordered the wrong size"}, {}]})

    reason: str = Field("", max_length=200)


class ShipIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"tracking_number": "1Z999AA10123456784", "carrier": "UPS"}]})

    tracking_number: str = Field(min_length=1, max_length=100)
    carrier: str = Field("", max_length=50)


class OrderQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0)


class SalesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: OrderStatus | None = None
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0)


def _order_id(request: web.Request) -> int:
    return path_id(request, "id", "order_not_found", "order")


@api.route("GET", "/api/orders", summary="Your order history, newest first", tag="orders", access="user",
           query=OrderQuery, response=OrderList)
async def my_orders(request: web.Request, query: OrderQuery) -> OrderList:
    async with runtime(request).db.read() as session:
        found = await orders.list_buyer_orders(session, (await caller(request, session)).id, limit=query.limit,
                                               offset=query.offset)
    return OrderList(orders=[OrderOut.of(order) for order in found])


@api.route("GET", "/api/orders/{id}", summary="An order (its buyer, its seller or an admin)", tag="orders",
           access="user", response=OrderOut, errors=(404,))
async def get_order(request: web.Request) -> OrderOut:
    async with runtime(request).db.read() as session:
        return OrderOut.of(await orders.order_for(session, await caller(request, session), _order_id(request)))


@api.route("POST", "/api/orders/{id}/pay", summary="Pay a reserved order (402 when declined)", tag="orders",
           access="user", body=PayIn, response=OrderOut, errors=(402, 404, 409))
async def pay(request: web.Request, body: PayIn) -> OrderOut:
    order_id = _order_id(request)
    async with runtime(request).db.read() as session:
        buyer = await caller(request, session)
    return OrderOut.of(await orders.pay(runtime(request).db, provider(request), buyer, order_id, body.payment_method))


@api.route("POST", "/api/orders/{id}/cancel", summary="Cancel an unpaid order; its items go back on sale",
           tag="orders", access="user", body=ReasonIn, response=OrderOut, errors=(404, 409))
async def cancel_order(request: web.Request, body: ReasonIn) -> OrderOut:
    async with runtime(request).db.write() as session:
        return OrderOut.of(await orders.cancel_order(session, await caller(request, session), _order_id(request),
                                                     reason=body.reason or "cancelled"))


@api.route("GET", "/api/me/sales", summary="Orders of your products, newest first (e.g. ?status=paid to ship)",
           tag="orders", access="host", query=SalesQuery, response=OrderList)
async def my_sales(request: web.Request, query: SalesQuery) -> OrderList:
    async with runtime(request).db.read() as session:
        found = await orders.list_seller_orders(session, (await caller(request, session)).id, status=query.status,
                                                limit=query.limit, offset=query.offset)
    return OrderList(orders=[OrderOut.of(order) for order in found])


@api.route("POST", "/api/orders/{id}/ship", summary="Mark a paid order shipped with its tracking number",
           tag="orders", access="host", body=ShipIn, response=OrderOut, errors=(404, 409), rate_limit="write")
async def ship(request: web.Request, body: ShipIn) -> OrderOut:
    async with runtime(request).db.write() as session:
        return OrderOut.of(await orders.ship(session, await caller(request, session), _order_id(request),
                                             body.tracking_number, body.carrier))


@api.route("POST", "/api/orders/{id}/refund", summary="Refund a paid or shipped order in full", tag="orders",
           access="host", body=ReasonIn, response=OrderOut, errors=(404, 409), rate_limit="write")
async def refund(request: web.Request, body: ReasonIn) -> OrderOut:
    order_id = _order_id(request)
    async with runtime(request).db.read() as session:
        actor = await caller(request, session)
    return OrderOut.of(await orders.refund(runtime(request).db, provider(request), actor, order_id,
                                           reason=body.reason or "refunded"))


@api.route("POST", "/api/payments/webhook/{provider}", summary="Payment provider events (signed)", tag="orders",
           status=204, errors=(401, 404))
async def webhook(request: web.Request) -> None:
    chosen = provider(request)
    if request.match_info["provider"] != chosen.name:
        raise ApiError(404, "unknown_provider", "no webhook for this provider here")
    event = chosen.parse_webhook(await request.read(), request.headers.get(SIGNATURE_HEADER))
    await orders.handle_event(runtime(request).db, chosen, event)
