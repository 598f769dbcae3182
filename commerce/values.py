"""What callers get to know about products, holds, sales and orders: frozen values, safe to keep after the
transaction that read them. Money is always integer minor units (cents) next to its ISO 4217 currency."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import Row

from commerce.models import (
    AdmissionEntryRow,
    FlashSaleRow,
    HoldRecord,
    HostSettingsRow,
    OrderEventRow,
    OrderLineRow,
    OrderRecord,
    PaymentRow,
    ProductImageRow,
    ProductRow,
    VariantRow,
)

ProductStatus = Literal["draft", "active", "archived"]
LimitScope = Literal["show", "overall"]
HoldStatus = Literal["active", "cancelled", "expired", "paid", "refunded"]
Admission = Literal["open", "queue", "lottery"]
EntryStatus = Literal["waiting", "admitted", "used", "expired"]
OrderStatus = Literal["pending", "reserved", "paid", "fulfilled", "cancelled", "expired", "refunded"]

PRODUCT_STATUSES: tuple[ProductStatus, ...] = ("draft", "active", "archived")
LIMIT_SCOPES: tuple[LimitScope, ...] = ("show", "overall")
HOLD_STATUSES: tuple[HoldStatus, ...] = ("active", "cancelled", "expired", "paid", "refunded")
ADMISSIONS: tuple[Admission, ...] = ("open", "queue", "lottery")
ENTRY_STATUSES: tuple[EntryStatus, ...] = ("waiting", "admitted", "used", "expired")
ORDER_STATUSES: tuple[OrderStatus, ...] = ("pending", "reserved", "paid", "fulfilled", "cancelled", "expired",
                                           "refunded")

_Choice = TypeVar("_Choice", bound=str)


def pick(value: str, choices: tuple[_Choice, ...]) -> _Choice:
    """`value` as one of the literal `choices`; a stored value outside them is a corrupt row (ValueError)."""
    for choice in choices:
        if value == choice:
            return choice
    raise ValueError(f"{value!r} is not one of {choices}")


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class HostSettings:
    user_id: int
    shipping: Money

    @classmethod
    def from_row(cls, row: HostSettingsRow | Row[Any]) -> HostSettings:
        return cls(user_id=row.user_id, shipping=Money(row.shipping_minor, row.currency))


@dataclass(frozen=True)
class Variant:
    id: int
    product_id: int
    sku: str
    options: Mapping[str, str]
    position: int
    available: int
    held: int
    sold: int

    @property
    def stock(self) -> int:
        """Every unit the variant has: free, held for a buyer, or sold."""
        return self.available + self.held + self.sold

    @classmethod
    def from_row(cls, row: VariantRow) -> Variant:
        return cls(id=row.id, product_id=row.product_id, sku=row.sku, options=dict(row.options or {}),
                   position=row.position, available=row.available, held=row.held, sold=row.sold)


IMAGE_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class Thumbnail:
    size: int
    """The longest side asked for; width and height fit inside it (never upscaled)."""
    width: int
    height: int


@dataclass(frozen=True)
class ProductImage:
    id: int
    product_id: int
    name: str
    extension: str
    width: int
    height: int
    bytes: int
    position: int
    thumbnails: tuple[Thumbnail, ...]

    @property
    def content_type(self) -> str:
        return IMAGE_TYPES[self.extension]

    def file_name(self, size: int | None = None) -> str:
        """The stored file of the image (size None) or of one of its thumbnails."""
        return f"{self.name}.{self.extension}" if size is None else f"{self.name}-{size}.{self.extension}"

    @classmethod
    def from_row(cls, row: ProductImageRow) -> ProductImage:
        return cls(id=row.id, product_id=row.product_id, name=row.name, extension=row.format, width=row.width,
                   height=row.height, bytes=row.bytes, position=row.position,
                   thumbnails=tuple(Thumbnail(size, width, height) for size, width, height in row.thumbnails))


@dataclass(frozen=True)
class Product:
    id: int
    owner_id: int
    title: str
    description: str
    price: Money
    status: ProductStatus
    purchase_limit: int | None
    """Units one buyer may hold or buy, counted per show or overall (`limit_scope`); None: no limit."""
    limit_scope: LimitScope
    created_at: int
    updated_at: int
    variants: tuple[Variant, ...]
    images: tuple[ProductImage, ...] = ()

    @property
    def available(self) -> int:
        return sum(variant.available for variant in self.variants)

    @classmethod
    def from_row(cls, row: ProductRow, variants: tuple[Variant, ...],
                 images: tuple[ProductImage, ...] = ()) -> Product:
        return cls(id=row.id, owner_id=row.owner_id, title=row.title, description=row.description,
                   price=Money(row.price_minor, row.currency), status=pick(row.status, PRODUCT_STATUSES),
                   purchase_limit=row.purchase_limit, limit_scope=pick(row.limit_scope, LIMIT_SCOPES),
                   created_at=row.created_at, updated_at=row.updated_at, variants=variants, images=images)


@dataclass(frozen=True)
class LineupEntry:
    show_id: int
    position: int
    show_price_minor: int | None
    product: Product

    @property
    def price(self) -> Money:
        """What the product costs in this show (its show price, else its own)."""
        if self.show_price_minor is None:
            return self.product.price
        return Money(self.show_price_minor, self.product.price.currency)


@dataclass(frozen=True)
class Hold:
    id: int
    user_id: int
    product_id: int
    variant_id: int
    show_id: int | None
    quantity: int
    unit_price: Money
    status: HoldStatus
    order_id: int | None
    created_at: int
    expires_at: int
    """Milliseconds since the epoch: the deadline after which the units go back on sale."""
    ended_at: int | None

    @classmethod
    def from_row(cls, row: HoldRecord) -> Hold:
        return cls(id=row.id, user_id=row.user_id, product_id=row.product_id, variant_id=row.variant_id,
                   show_id=row.show_id, quantity=row.quantity, unit_price=Money(row.unit_price_minor, row.currency),
                   status=pick(row.status, HOLD_STATUSES), order_id=row.order_id, created_at=row.created_at,
                   expires_at=row.expires_at, ended_at=row.ended_at)


@dataclass(frozen=True)
class FlashSale:
    id: int
    product_id: int
    price: Money
    starts_at: int
    ends_at: int
    admission: Admission
    queue_factor: int
    """Queue mode: purchase tokens out at once, as a multiple of the units still free."""
    token_seconds: int
    seed: str | None
    """A lottery's seed once drawn (None before: it is secret until the draw)."""
    seed_hash: str | None
    """SHA-256 (hex) of a lottery's seed, public from the moment the sale is set: the commitment."""
    drawn_at: int | None
    quantity: int | None = None
    """Units offered at the sale price (None: the stock); `taken` of them are held or sold."""
    taken: int = 0

    @classmethod
    def from_row(cls, row: FlashSaleRow, currency: str) -> FlashSale:
        committed = row.seed
        return cls(id=row.id, product_id=row.product_id, price=Money(row.price_minor, currency),
                   starts_at=row.starts_at, ends_at=row.ends_at, admission=pick(row.admission, ADMISSIONS),
                   queue_factor=row.queue_factor, token_seconds=row.token_seconds,
                   seed=committed if row.drawn_at is not None else None,
                   seed_hash=None if committed is None else hashlib.sha256(committed.encode()).hexdigest(),
                   drawn_at=row.drawn_at, quantity=row.quantity, taken=row.taken or 0)


@dataclass(frozen=True)
class Ticket:
    """A buyer's place for a hot item: where they stand, and their purchase token once admitted."""

    sale_id: int
    user_id: int
    entry_id: int
    status: EntryStatus
    position: int | None
    """1 for the next buyer to be admitted; None unless waiting (or, in a lottery, before the draw)."""
    rank: int | None
    token: str | None
    token_expires_at: int | None

    @classmethod
    def from_row(cls, row: AdmissionEntryRow, position: int | None) -> Ticket:
        return cls(sale_id=row.sale_id, user_id=row.user_id, entry_id=row.id,
                   status=pick(row.status, ENTRY_STATUSES), position=position, rank=row.rank,
                   token=row.token if row.status == "admitted" else None,
                   token_expires_at=row.token_expires_at if row.status == "admitted" else None)


@dataclass(frozen=True)
class OrderLine:
    id: int
    hold_id: int
    product_id: int
    variant_id: int
    title: str
    sku: str
    quantity: int
    unit_price_minor: int
    total_minor: int

    @classmethod
    def from_row(cls, row: OrderLineRow | Row[Any]) -> OrderLine:
        return cls(id=row.id, hold_id=row.hold_id, product_id=row.product_id, variant_id=row.variant_id,
                   title=row.title, sku=row.sku, quantity=row.quantity, unit_price_minor=row.unit_price_minor,
                   total_minor=row.total_minor)


@dataclass(frozen=True)
class OrderEvent:
    from_status: OrderStatus | None
    to_status: OrderStatus
    actor_id: int | None
    reason: str
    at: int

    @classmethod
    def from_row(cls, row: OrderEventRow | Row[Any]) -> OrderEvent:
        return cls(from_status=None if row.from_status is None else pick(row.from_status, ORDER_STATUSES),
                   to_status=pick(row.to_status, ORDER_STATUSES), actor_id=row.actor_id, reason=row.reason,
                   at=row.at)


@dataclass(frozen=True)
class Order:
    id: int
    buyer_id: int
    seller_id: int
    show_id: int | None
    status: OrderStatus
    currency: str
    items_minor: int
    shipping_minor: int
    tax_minor: int
    total_minor: int
    shipping_address: Mapping[str, Any]
    tracking_number: str | None
    carrier: str | None
    created_at: int
    updated_at: int
    expires_at: int | None
    """While reserved: when its holds lapse unless it is paid."""
    lines: tuple[OrderLine, ...]
    events: tuple[OrderEvent, ...]

    @classmethod
    def from_row(cls, row: OrderRecord, lines: tuple[OrderLine, ...], events: tuple[OrderEvent, ...],
                 expires_at: int | None) -> Order:
        return cls(id=row.id, buyer_id=row.buyer_id, seller_id=row.seller_id, show_id=row.show_id,
                   status=pick(row.status, ORDER_STATUSES), currency=row.currency, items_minor=row.items_minor,
                   shipping_minor=row.shipping_minor, tax_minor=row.tax_minor, total_minor=row.total_minor,
                   shipping_address=dict(row.shipping_address or {}), tracking_number=row.tracking_number,
                   carrier=row.carrier, created_at=row.created_at, updated_at=row.updated_at,
                   expires_at=expires_at, lines=lines, events=events)


@dataclass(frozen=True)
class Payment:
    id: int
    order_id: int
    provider: str
    intent_id: str
    amount: Money
    status: str
    failure_code: str | None
    refund_id: str | None
    refunded_minor: int

    @classmethod
    def from_row(cls, row: PaymentRow) -> Payment:
        return cls(id=row.id, order_id=row.order_id, provider=row.provider, intent_id=row.intent_id,
                   amount=Money(row.amount_minor, row.currency), status=row.status, failure_code=row.failure_code,
                   refund_id=row.refund_id, refunded_minor=row.refunded_minor)
