"""What the commerce operations share: response models, path ids, the payment provider, detailed conflicts.

Every answer that concerns time carries `server_time` (ms since the epoch) next to its deadlines, so a
client can show a countdown without trusting its own clock.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from accounts.errors import NotFound
from commerce.errors import DetailedConflict
from commerce.idempotency import error_body
from commerce.payments import PaymentProvider, TestProvider
from commerce.values import FlashSale, Hold, HostSettings, LineupEntry, Order, Product, ProductImage, Ticket, Variant
from store import now_ms
from web.api.common import runtime, settings
from web.errors import ApiError


def path_id(request: web.Request, name: str, code: str, what: str) -> int:
    """A numeric path parameter; anything else names nothing, so it is NotFound(code)."""
    value = request.match_info[name]
    if not value.isdigit() or len(value) > 18:
        raise NotFound(code, f"no such {what}")
    return int(value)


def provider(request: web.Request) -> PaymentProvider:
    """The configured payment provider. `test` is built in; Stripe arrives with its own issue."""
    configured = settings(request).payments.provider
    if configured != "test":
        raise ApiError(503, "payments_unavailable", f"the {configured} payment provider is not available in this "
                       "build; set payments.provider to test")
    return TestProvider(runtime(request).secrets.secret_key or "")


Handler = Callable[..., Awaitable[Any]]


def with_details(handler: Handler) -> Handler:
    """Answer a DetailedConflict with its details (deadlines, queue position) inside the error object."""

    @functools.wraps(handler)
    async def answer(*args: Any) -> Any:
        try:
            return await handler(*args)
        except DetailedConflict as conflict:
            return web.json_response(error_body(conflict), status=conflict.http_status)

    return answer


class VariantOut(BaseModel):
    id: int
    sku: str
    options: dict[str, str]
    available: int
    held: int
    sold: int

    @classmethod
    def of(cls, variant: Variant) -> VariantOut:
        return cls(id=variant.id, sku=variant.sku, options=dict(variant.options), available=variant.available,
                   held=variant.held, sold=variant.sold)


class SaleOut(BaseModel):
    id: int
    product_id: int
    price_minor: int
    currency: str
    starts_at: int
    ends_at: int
    admission: str
    queue_factor: int
    token_seconds: int
    seed: str | None
    """A lottery's seed, published once drawn, so anyone can recompute the ranking."""
    seed_sha256: str | None
    """A lottery's commitment, published from the start: SHA-256 (hex) of the seed the draw will reveal."""
    drawn_at: int | None
    quantity: int | None
    """Units offered at the sale price (null: the stock); `taken` of them are held or sold."""
    taken: int
    server_time: int

    @classmethod
    def of(cls, sale: FlashSale) -> SaleOut:
        return cls(id=sale.id, product_id=sale.product_id, price_minor=sale.price.amount_minor,
                   currency=sale.price.currency, starts_at=sale.starts_at, ends_at=sale.ends_at,
                   admission=sale.admission, queue_factor=sale.queue_factor, token_seconds=sale.token_seconds,
                   seed=sale.seed, seed_sha256=sale.seed_hash, drawn_at=sale.drawn_at, quantity=sale.quantity,
                   taken=sale.taken, server_time=now_ms())


IMAGE_URL_PREFIX = "/api/product-images/"


class ThumbnailOut(BaseModel):
    size: int
    width: int
    height: int
    url: str


class ImageOut(BaseModel):
    id: int
    position: int
    content_type: str
    width: int
    height: int
    bytes: int
    url: str
    """The re-encoded image; it never changes, so clients may cache it for good."""
    thumbnails: list[ThumbnailOut]

    @classmethod
    def of(cls, image: ProductImage) -> ImageOut:
        return cls(id=image.id, position=image.position, content_type=image.content_type, width=image.width,
                   height=image.height, bytes=image.bytes, url=IMAGE_URL_PREFIX + image.file_name(),
                   thumbnails=[ThumbnailOut(size=t.size, width=t.width, height=t.height,
                                            url=IMAGE_URL_PREFIX + image.file_name(t.size))
                               for t in image.thumbnails])


class ProductOut(BaseModel):
    id: int
    owner_id: int
    title: str
    description: str
    price_minor: int
    currency: str
    status: str
    purchase_limit: int | None
    limit_scope: str
    available: int
    variants: list[VariantOut]
    images: list[ImageOut]
    sale: SaleOut | None = None
    created_at: int
    updated_at: int

    @classmethod
    def of(cls, product: Product, sale: FlashSale | None = None) -> ProductOut:
        return cls(id=product.id, owner_id=product.owner_id, title=product.title, description=product.description,
                   price_minor=product.price.amount_minor, currency=product.price.currency, status=product.status,
                   purchase_limit=product.purchase_limit, limit_scope=product.limit_scope,
                   available=product.available, variants=[VariantOut.of(v) for v in product.variants],
                   images=[ImageOut.of(image) for image in product.images],
                   sale=None if sale is None else SaleOut.of(sale), created_at=product.created_at,
                   updated_at=product.updated_at)


class ProductList(BaseModel):
    products: list[ProductOut]


class LineupItemOut(BaseModel):
    position: int
    show_price_minor: int | None
    price_minor: int
    """What the product costs in this show."""
    currency: str
    product: ProductOut


class LineupOut(BaseModel):
    show_id: int
    items: list[LineupItemOut]

    @classmethod
    def of(cls, show_id: int, entries: list[LineupEntry]) -> LineupOut:
        return cls(show_id=show_id, items=[
            LineupItemOut(position=entry.position, show_price_minor=entry.show_price_minor,
                          price_minor=entry.price.amount_minor, currency=entry.price.currency,
                          product=ProductOut.of(entry.product)) for entry in entries])


class HoldOut(BaseModel):
    id: int
    product_id: int
    variant_id: int
    show_id: int | None
    quantity: int
    unit_price_minor: int
    currency: str
    status: str
    order_id: int | None
    created_at: int
    expires_at: int
    """Deadline (ms since the epoch) after which the units go back on sale unless paid."""
    server_time: int

    @classmethod
    def of(cls, hold: Hold) -> HoldOut:
        return cls(id=hold.id, product_id=hold.product_id, variant_id=hold.variant_id, show_id=hold.show_id,
                   quantity=hold.quantity, unit_price_minor=hold.unit_price.amount_minor,
                   currency=hold.unit_price.currency, status=hold.status, order_id=hold.order_id,
                   created_at=hold.created_at, expires_at=hold.expires_at, server_time=now_ms())


class CartOut(BaseModel):
    holds: list[HoldOut]
    items_minor: dict[str, int]
    """Sum of the held items per currency."""
    server_time: int


class OrderLineOut(BaseModel):
    hold_id: int
    product_id: int
    variant_id: int
    title: str
    sku: str
    quantity: int
    unit_price_minor: int
    total_minor: int


class OrderEventOut(BaseModel):
    from_status: str | None
    to_status: str
    actor_id: int | None
    reason: str
    at: int


class OrderOut(BaseModel):
    id: int
    buyer_id: int
    seller_id: int
    show_id: int | None
    status: str
    currency: str
    items_minor: int
    shipping_minor: int
    tax_minor: int
    total_minor: int
    shipping_address: dict[str, str]
    tracking_number: str | None
    carrier: str | None
    created_at: int
    updated_at: int
    expires_at: int | None
    lines: list[OrderLineOut]
    events: list[OrderEventOut]
    server_time: int

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(id=order.id, buyer_id=order.buyer_id, seller_id=order.seller_id, show_id=order.show_id,
                   status=order.status, currency=order.currency, items_minor=order.items_minor,
                   shipping_minor=order.shipping_minor, tax_minor=order.tax_minor, total_minor=order.total_minor,
                   shipping_address={k: str(v) for k, v in order.shipping_address.items()},
                   tracking_number=order.tracking_number, carrier=order.carrier, created_at=order.created_at,
                   updated_at=order.updated_at, expires_at=order.expires_at,
                   lines=[OrderLineOut(hold_id=line.hold_id, product_id=line.product_id, variant_id=line.variant_id,
                                       title=line.title, sku=line.sku, quantity=line.quantity,
                                       unit_price_minor=line.unit_price_minor, total_minor=line.total_minor)
                          for line in order.lines],
                   events=[OrderEventOut(from_status=event.from_status, to_status=event.to_status,
                                         actor_id=event.actor_id, reason=event.reason, at=event.at)
                           for event in order.events],
                   server_time=now_ms())


class OrderList(BaseModel):
    orders: list[OrderOut]


class TicketOut(BaseModel):
    sale_id: int
    status: str
    """waiting, admitted (the token is yours until token_expires_at), used or expired."""
    position: int | None
    rank: int | None
    token: str | None
    token_expires_at: int | None
    server_time: int

    @classmethod
    def of(cls, ticket: Ticket) -> TicketOut:
        return cls(sale_id=ticket.sale_id, status=ticket.status, position=ticket.position, rank=ticket.rank,
                   token=ticket.token, token_expires_at=ticket.token_expires_at, server_time=now_ms())


class ShippingOut(BaseModel):
    shipping_minor: int
    currency: str

    @classmethod
    def of(cls, host_settings: HostSettings) -> ShippingOut:
        return cls(shipping_minor=host_settings.shipping.amount_minor, currency=host_settings.shipping.currency)
