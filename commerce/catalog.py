"""Products a host sells, their variants (size, colour) with SKU and stock, and the host's shipping rate.

Images are added, removed and reordered in `commerce.images`; products read here come with them.

A product without variants gets one default variant, so stock, holds and orders always deal with variants.
Every function takes the caller's session; functions that write need one from `Database.write()`.
Stock changes made here go through `commerce.inventory`, which emits the `stock.changed` events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.user import User
from commerce import inventory
from commerce.models import HostSettingsRow, ProductImageRow, ProductRow, VariantRow
from commerce.values import LIMIT_SCOPES, PRODUCT_STATUSES, HostSettings, Money, Product, ProductImage, Variant
from rooms.service import validate_title
from store import clock
from store.statements import table_of

DESCRIPTION_MAX_LENGTH = 5000
PRICE_MAX_MINOR = 100_000_000_00
STOCK_MAX = 1_000_000
VARIANTS_MAX = 100
OPTIONS_MAX = 5
OPTION_NAME_MAX_LENGTH = 32
OPTION_VALUE_MAX_LENGTH = 64
PURCHASE_LIMIT_MAX = 10_000
DEFAULT_SKU = "default"
LIST_MAX_LIMIT = 100
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class VariantSpec:
    """A variant to create: its SKU, its options (e.g. {"size": "M"}) and its initial stock."""

    sku: str
    stock: int = 0
    options: Mapping[str, str] = field(default_factory=dict)


def validate_currency(currency: str, field_name: str = "currency") -> str:
    if not _CURRENCY.match(currency):
        raise Invalid("invalid_currency", "currency must be an ISO 4217 code such as USD", field_name)
    return currency


def validate_price(amount_minor: int, field_name: str = "price_minor") -> int:
    if not 0 <= amount_minor <= PRICE_MAX_MINOR:
        raise Invalid("invalid_price", f"{field_name} must be 0-{PRICE_MAX_MINOR} minor units", field_name)
    return amount_minor


def _validate_stock(stock: int, field_name: str = "stock") -> int:
    if not 0 <= stock <= STOCK_MAX:
        raise Invalid("invalid_stock", f"stock must be 0-{STOCK_MAX}", field_name)
    return stock


def _validate_sku(sku: str) -> str:
    if not _SKU.match(sku):
        raise Invalid("invalid_sku", "SKU must be 1-64 letters, digits, dots, hyphens or underscores", "sku")
    return sku


def _validate_options(options: Mapping[str, str]) -> dict[str, str]:
    if len(options) > OPTIONS_MAX:
        raise Invalid("invalid_options", f"a variant has at most {OPTIONS_MAX} options", "options")
    clean: dict[str, str] = {}
    for name, value in options.items():
        name, value = name.strip(), value.strip()
        if not 0 < len(name) <= OPTION_NAME_MAX_LENGTH or not 0 < len(value) <= OPTION_VALUE_MAX_LENGTH:
            raise Invalid("invalid_options", f"option names are 1-{OPTION_NAME_MAX_LENGTH} and values "
                          f"1-{OPTION_VALUE_MAX_LENGTH} characters", "options")
        clean[name] = value
    return clean


def _validate_limit(purchase_limit: int | None) -> int | None:
    if purchase_limit is not None and not 1 <= purchase_limit <= PURCHASE_LIMIT_MAX:
        raise Invalid("invalid_purchase_limit", f"purchase limit must be 1-{PURCHASE_LIMIT_MAX} or none",
                      "purchase_limit")
    return purchase_limit


def _validate_description(description: str) -> str:
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise Invalid("invalid_description", f"description must have at most {DESCRIPTION_MAX_LENGTH} characters",
                      "description")
    return description.strip()


def _choice(value: str, choices: tuple[str, ...], field_name: str) -> str:
    if value not in choices:
        raise Invalid(f"invalid_{field_name}", f"{field_name} must be one of {', '.join(choices)}", field_name)
    return value


def _require_seller(user: User) -> None:
    if user.disabled or not user.is_publisher:
        raise Forbidden("not_a_host", "only hosts and admins sell products")


def require_owner(user: User, row: ProductRow) -> None:
    if user.disabled or not (user.is_admin or user.id == row.owner_id):
        raise Forbidden("not_product_owner", "only the product's owner or an admin can change it")


async def _variants(session: AsyncSession, product_id: int) -> tuple[Variant, ...]:
    rows = (await session.execute(select(VariantRow).where(VariantRow.product_id == product_id)
                                  .order_by(VariantRow.position, VariantRow.id)
                                  .execution_options(populate_existing=True))).scalars().all()
    return tuple(Variant.from_row(row) for row in rows)


async def product_row(session: AsyncSession, product_id: int) -> ProductRow:
    row = (await session.execute(select(ProductRow).where(ProductRow.id == product_id)
                                 .execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        raise NotFound("product_not_found", "no such product")
    return row


async def get_product(session: AsyncSession, product_id: int) -> Product:
    """The product with its variants as stored now; NotFound("product_not_found") otherwise."""
    row = await product_row(session, product_id)
    return await complete_product(session, row)


async def visible_product(session: AsyncSession, product_id: int, viewer: User | None) -> Product:
    """The product as a buyer may see it: drafts only for their owner and admins (others get NotFound)."""
    product = await get_product(session, product_id)
    if product.status == "draft" and (viewer is None or not (viewer.is_admin or viewer.id == product.owner_id)):
        raise NotFound("product_not_found", "no such product")
    return product


async def create_product(session: AsyncSession, owner: User, title: str, price_minor: int, *,
                         currency: str, description: str = "", status: str = "draft", stock: int = 0,
                         variants: list[VariantSpec] | None = None, purchase_limit: int | None = None,
                         limit_scope: str = "overall", now_ms: int | None = None) -> Product:
    """A new product owned by `owner` (a host or admin). Without `variants` it gets one default variant
    holding `stock`; with them, each variant has its own SKU and stock and `stock` must be 0."""
    _require_seller(owner)
    if variants is not None and not 1 <= len(variants) <= VARIANTS_MAX:
        raise Invalid("invalid_variants", f"give 1-{VARIANTS_MAX} variants or none", "variants")
    if variants and stock:
        raise Invalid("invalid_stock", "with variants, stock is given per variant", "stock")
    specs = variants or [VariantSpec(sku=DEFAULT_SKU, stock=_validate_stock(stock))]
    skus = [_validate_sku(spec.sku) for spec in specs]
    if len(set(skus)) != len(skus):
        raise Invalid("duplicate_sku", "each variant needs its own SKU", "variants")
    now = clock.now_ms() if now_ms is None else now_ms
    row = ProductRow(owner_id=owner.id, title=validate_title(title), description=_validate_description(description),
                     price_minor=validate_price(price_minor), currency=validate_currency(currency),
                     status=_choice(status, PRODUCT_STATUSES, "status"), purchase_limit=_validate_limit(purchase_limit),
                     limit_scope=_choice(limit_scope, LIMIT_SCOPES, "limit_scope"), created_at=now, updated_at=now)
    session.add(row)
    await session.flush()
    for position, spec in enumerate(specs):
        session.add(VariantRow(product_id=row.id, sku=spec.sku, options=_validate_options(spec.options),
                               position=position, available=_validate_stock(spec.stock, "variants"), held=0, sold=0,
                               created_at=now))
    await session.flush()
    return await complete_product(session, row)


async def update_product(session: AsyncSession, actor: User, product_id: int, *, title: str | None = None,
                         description: str | None = None, price_minor: int | None = None, status: str | None = None,
                         purchase_limit: int | None = None, clear_purchase_limit: bool = False,
                         limit_scope: str | None = None, now_ms: int | None = None) -> Product:
    """Change what is given (owner or admin). The currency never changes: holds and orders quote it."""
    row = await product_row(session, product_id)
    require_owner(actor, row)
    if title is not None:
        row.title = validate_title(title)
    if description is not None:
        row.description = _validate_description(description)
    if price_minor is not None:
        row.price_minor = validate_price(price_minor)
    if status is not None:
        row.status = _choice(status, PRODUCT_STATUSES, "status")
    if clear_purchase_limit:
        row.purchase_limit = None
    elif purchase_limit is not None:
        row.purchase_limit = _validate_limit(purchase_limit)
    if limit_scope is not None:
        row.limit_scope = _choice(limit_scope, LIMIT_SCOPES, "limit_scope")
    row.updated_at = clock.now_ms() if now_ms is None else now_ms
    await session.flush()
    return await complete_product(session, row)


async def add_variant(session: AsyncSession, actor: User, product_id: int, spec: VariantSpec) -> Product:
    """Add a variant with its own SKU and stock (owner or admin); Conflict("duplicate_sku") if the SKU is used."""
    row = await product_row(session, product_id)
    require_owner(actor, row)
    existing = await _variants(session, row.id)
    if len(existing) >= VARIANTS_MAX:
        raise Invalid("invalid_variants", f"a product has at most {VARIANTS_MAX} variants", "variants")
    sku = _validate_sku(spec.sku)
    if any(variant.sku == sku for variant in existing):
        raise Conflict("duplicate_sku", "the product already has a variant with this SKU", "sku")
    session.add(VariantRow(product_id=row.id, sku=sku, options=_validate_options(spec.options),
                           position=len(existing), available=_validate_stock(spec.stock), held=0, sold=0,
                           created_at=clock.now_ms()))
    await session.flush()
    return await complete_product(session, row)


async def adjust_stock(session: AsyncSession, actor: User, product_id: int, variant_id: int, delta: int) -> Variant:
    """Add units to (or, with a negative delta, take free units off) a variant's stock (owner or admin).

    Held and sold units are never touched: taking off more than is free is Conflict("not_enough_free_stock").
    """
    row = await product_row(session, product_id)
    require_owner(actor, row)
    if not -STOCK_MAX <= delta <= STOCK_MAX or delta == 0:
        raise Invalid("invalid_delta", f"delta must be a non-zero number within ±{STOCK_MAX}", "delta")
    return await inventory.restock(session, product_id, variant_id, delta)


async def list_products(session: AsyncSession, *, owner_id: int | None = None, status: str | None = None,
                        limit: int = 50, offset: int = 0) -> list[Product]:
    """Products, newest first, by owner and/or status; at most `limit` (capped at 100) after `offset`."""
    query = select(ProductRow).order_by(ProductRow.id.desc())
    if owner_id is not None:
        query = query.where(ProductRow.owner_id == owner_id)
    if status is not None:
        query = query.where(ProductRow.status == _choice(status, PRODUCT_STATUSES, "status"))
    query = query.limit(max(1, min(limit, LIST_MAX_LIMIT))).offset(max(0, offset))
    rows = (await session.execute(query.execution_options(populate_existing=True))).scalars().all()
    return await _complete(session, list(rows))


async def products_by_id(session: AsyncSession, product_ids: list[int]) -> dict[int, Product]:
    """The products among `product_ids` that exist, with their variants."""
    rows = (await session.execute(select(ProductRow).where(ProductRow.id.in_(product_ids))
                                  .execution_options(populate_existing=True))).scalars().all()
    return {product.id: product for product in await _complete(session, list(rows))}


async def complete_product(session: AsyncSession, row: ProductRow) -> Product:
    """The product of `row` with its variants and images as stored now."""
    return (await _complete(session, [row]))[0]


async def _complete(session: AsyncSession, rows: list[ProductRow]) -> list[Product]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    variants = (await session.execute(select(VariantRow).where(VariantRow.product_id.in_(ids))
                                      .order_by(VariantRow.position, VariantRow.id)
                                      .execution_options(populate_existing=True))).scalars().all()
    images = (await session.execute(select(ProductImageRow).where(ProductImageRow.product_id.in_(ids))
                                    .order_by(ProductImageRow.position, ProductImageRow.id)
                                    .execution_options(populate_existing=True))).scalars().all()
    by_product: dict[int, list[Variant]] = {}
    for variant in variants:
        by_product.setdefault(variant.product_id, []).append(Variant.from_row(variant))
    images_of: dict[int, list[ProductImage]] = {}
    for image in images:
        images_of.setdefault(image.product_id, []).append(ProductImage.from_row(image))
    return [Product.from_row(row, tuple(by_product.get(row.id, ())), tuple(images_of.get(row.id, ())))
            for row in rows]


_HOSTS = table_of(HostSettingsRow)
_HOST_SETTINGS = select(_HOSTS).where(_HOSTS.c.user_id == bindparam("user"))


async def host_settings(session: AsyncSession, user_id: int, default_currency: str) -> HostSettings:
    """The host's shipping rate; free shipping in the default currency until the host sets one."""
    row = (await session.execute(_HOST_SETTINGS, {"user": user_id})).first()
    if row is None:
        return HostSettings(user_id=user_id, shipping=Money(0, default_currency))
    return HostSettings.from_row(row)


async def set_host_settings(session: AsyncSession, host: User, shipping_minor: int, currency: str) -> HostSettings:
    """Set the flat shipping charged once per order (and once per show when a buyer orders again)."""
    _require_seller(host)
    values = {"user_id": host.id, "shipping_minor": validate_price(shipping_minor, "shipping_minor"),
              "currency": validate_currency(currency), "updated_at": clock.now_ms()}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(HostSettingsRow).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[HostSettingsRow.user_id],
        set_={name: statement.excluded[name] for name in ("shipping_minor", "currency", "updated_at")})
    await session.execute(statement)
    return HostSettings(user_id=host.id, shipping=Money(shipping_minor, currency))
