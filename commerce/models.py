"""Tables of commerce: catalog, lineups, stock and holds, purchase limits, idempotency keys, flash sales and
their admission entries, orders with their audit trail, and payments.

Stock lives in three counters on the variant row (available, held, sold) whose CHECK constraints keep each
one non-negative, so even a bug in the application cannot store an oversold variant: the database refuses
the row. Services hand callers the frozen values of `commerce.values` instead of these rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from accounts.models import UserRow
from rooms.models import ShowRow
from store.base import Base, BigId

PRODUCT_STATUS_CHECK = "status IN ('draft', 'active', 'archived')"
LIMIT_SCOPE_CHECK = "limit_scope IN ('show', 'overall')"
HOLD_STATUS_CHECK = "status IN ('active', 'cancelled', 'expired', 'paid', 'refunded')"
ADMISSION_CHECK = "admission IN ('open', 'queue', 'lottery')"
ENTRY_STATUS_CHECK = "status IN ('waiting', 'admitted', 'used', 'expired')"
ORDER_STATUS_CHECK = ("status IN ('pending', 'reserved', 'paid', 'fulfilled', 'cancelled', 'expired', "
                      "'refunded')")


class HostSettingsRow(Base):
    """What a host charges for shipping: one flat amount per order, combined across one show."""

    __tablename__ = "host_settings"
    __table_args__ = (CheckConstraint("shipping_minor >= 0", name="shipping_minor"),)

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    shipping_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ProductRow(Base):
    """Something a host sells; its stock is in its variants (at least one, the default for plain products)."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint(PRODUCT_STATUS_CHECK, name="status"),
        CheckConstraint(LIMIT_SCOPE_CHECK, name="limit_scope"),
        CheckConstraint("price_minor >= 0", name="price_minor"),
        CheckConstraint("purchase_limit IS NULL OR purchase_limit >= 1", name="purchase_limit"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10))
    purchase_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    limit_scope: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class VariantRow(Base):
    """One sellable version of a product (a size, a colour) with its own SKU and stock counters.

    available + held + sold is the variant's stock; only conditional UPDATEs move units between them.
    """

    __tablename__ = "variants"
    __table_args__ = (
        UniqueConstraint("product_id", "sku", name="uq_variants_product_id_sku"),
        CheckConstraint("available >= 0", name="available"),
        CheckConstraint("held >= 0", name="held"),
        CheckConstraint("sold >= 0", name="sold"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id, ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    position: Mapped[int] = mapped_column(Integer)
    available: Mapped[int] = mapped_column(Integer)
    held: Mapped[int] = mapped_column(Integer, default=0)
    sold: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ProductImageRow(Base):
    """A product photo as stored: a re-encoded file under a random name, plus its thumbnails, in order."""

    __tablename__ = "product_images"
    __table_args__ = (CheckConstraint("format IN ('jpg', 'png', 'webp')", name="format"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id, ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    """Random hex: the stored files are `name.format` and `name-SIZE.format`."""
    format: Mapped[str] = mapped_column(String(4))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    thumbnails: Mapped[list[list[int]]] = mapped_column(JSON)
    """[[size, width, height], ...] for each thumbnail made."""
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)


class LineupItemRow(Base):
    """A product offered in a show, in order, optionally at a show price."""

    __tablename__ = "lineup_items"
    __table_args__ = (CheckConstraint("show_price_minor IS NULL OR show_price_minor >= 0", name="show_price"),)

    show_id: Mapped[int] = mapped_column(BigId, ForeignKey(ShowRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id, ondelete="CASCADE"),
                                            primary_key=True, autoincrement=False, index=True)
    position: Mapped[int] = mapped_column(Integer)
    show_price_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    added_at: Mapped[int] = mapped_column(BigInteger)


class FlashSaleRow(Base):
    """A product on sale at a price between two server times, with how buyers are admitted."""

    __tablename__ = "flash_sales"
    __table_args__ = (
        CheckConstraint(ADMISSION_CHECK, name="admission"),
        CheckConstraint("ends_at > starts_at", name="window"),
        CheckConstraint("price_minor >= 0", name="price_minor"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id, ondelete="CASCADE"), unique=True)
    price_minor: Mapped[int] = mapped_column(BigInteger)
    starts_at: Mapped[int] = mapped_column(BigInteger)
    ends_at: Mapped[int] = mapped_column(BigInteger)
    admission: Mapped[str] = mapped_column(String(10))
    queue_factor: Mapped[int] = mapped_column(Integer)
    token_seconds: Mapped[int] = mapped_column(Integer)
    seed: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """A lottery's random seed, chosen when the sale is set; only its SHA-256 is shown until the draw reveals
    it, so anyone can check the seed was fixed before the entries and recompute the ranking."""
    drawn_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quantity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Units offered at the sale price (None: as many as the stock holds)."""
    taken: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Units of `quantity` held or sold; only a conditional UPDATE that keeps it within `quantity` raises it."""
    created_at: Mapped[int] = mapped_column(BigInteger)


class AdmissionEntryRow(Base):
    """A buyer waiting for a hot item (queue: FIFO by id) or entered in a draw (lottery: by drawn rank)."""

    __tablename__ = "admission_entries"
    __table_args__ = (
        UniqueConstraint("sale_id", "user_id", name="uq_admission_entries_sale_id_user_id"),
        CheckConstraint(ENTRY_STATUS_CHECK, name="status"),
        Index("ix_admission_entries_sale_status", "sale_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sale_id: Mapped[int] = mapped_column(BigId, ForeignKey(FlashSaleRow.id, ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(10))
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    token_expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    joined_at: Mapped[int] = mapped_column(BigInteger)
    admitted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class OrderRow(Base):
    """A buyer's checkout of held items from one seller: totals in integer minor units of one currency."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(ORDER_STATUS_CHECK, name="status"),
        Index("ix_orders_buyer_created", "buyer_id", "created_at"),
        Index("ix_orders_seller_status", "seller_id", "status"),
        Index("ix_orders_buyer_seller_show", "buyer_id", "seller_id", "show_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id))
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id))
    show_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(ShowRow.id, ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(10))
    currency: Mapped[str] = mapped_column(String(3))
    items_minor: Mapped[int] = mapped_column(BigInteger)
    shipping_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    tracking_number: Mapped[str | None] = mapped_column(String(100), nullable=True)
    carrier: Mapped[str | None] = mapped_column(String(50), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


OrderRecord = OrderRow | Row[Any]
"""An order as the ORM loads it or as a Core statement over its table returns it (the same attribute names)."""


class HoldRow(Base):
    """Units of a variant set aside for one buyer until `expires_at`; paying converts them into sold units."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(HOLD_STATUS_CHECK, name="status"),
        CheckConstraint("quantity > 0", name="quantity"),
        Index("ix_holds_user_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id))
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id))
    variant_id: Mapped[int] = mapped_column(BigId, ForeignKey(VariantRow.id), index=True)
    show_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(ShowRow.id, ondelete="SET NULL"), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    limit_scope: Mapped[str | None] = mapped_column(String(40), nullable=True)
    sale_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The quantity-limited flash sale this hold took its units from, if any."""
    """The purchase counter this hold counts against (None: the product has no limit)."""
    status: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(OrderRow.id), nullable=True, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


HoldRecord = HoldRow | Row[Any]
"""A hold as the ORM loads it or as a Core statement over its table returns it (the same attribute names)."""


class PurchaseCounterRow(Base):
    """Units of a product one buyer holds or bought, per show or overall; its conditional UPDATE is the limit."""

    __tablename__ = "purchase_counters"
    __table_args__ = (CheckConstraint("units >= 0", name="units"),)

    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id, ondelete="CASCADE"),
                                            primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    units: Mapped[int] = mapped_column(Integer)


class IdempotencyKeyRow(Base):
    """The first outcome of a request sent with an `Idempotency-Key`, replayed to retries of it."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    operation: Mapped[str] = mapped_column(String(40))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)


class OrderLineRow(Base):
    """One held item of an order, with the title, SKU and price as they were at checkout."""

    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey(OrderRow.id, ondelete="CASCADE"), index=True)
    hold_id: Mapped[int] = mapped_column(BigId, ForeignKey(HoldRow.id), unique=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey(ProductRow.id))
    variant_id: Mapped[int] = mapped_column(BigId, ForeignKey(VariantRow.id))
    title: Mapped[str] = mapped_column(String(200))
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)


class OrderEventRow(Base):
    """One transition of an order's state: the audit trail (who, why, when)."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey(OrderRow.id, ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(10), nullable=True)
    to_status: Mapped[str] = mapped_column(String(10))
    actor_id: Mapped[int | None] = mapped_column(BigId, ForeignKey(UserRow.id, ondelete="SET NULL"),
                                                 nullable=True)
    """None when the system acted (hold expiry, a payment webhook)."""
    reason: Mapped[str] = mapped_column(String(200))
    at: Mapped[int] = mapped_column(BigInteger)


class PaymentRow(Base):
    """A payment attempt for an order at a provider (a PaymentIntent, in Stripe's words)."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey(OrderRow.id, ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    intent_id: Mapped[str] = mapped_column(String(100), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(30))
    failure_code: Mapped[str | None] = mapped_column(String(50), nullable=True)
    refund_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
