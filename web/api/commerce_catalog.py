"""Products with their variants and stock, flash sales, the host's shipping rate, and show lineups.

Product images have their own operations (`web.api.commerce_images`); products listed here carry them.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.service import get_user
from accounts.user import User
from commerce import availability, catalog, flash_sales, lineup
from commerce.catalog import VariantSpec
from web.api.commerce_common import (
    LineupOut,
    ProductList,
    ProductOut,
    SaleOut,
    ShippingOut,
    VariantOut,
    path_id,
)
from web.api.common import caller, runtime, settings
from web.api.registry import PRINCIPAL, Api

api = Api()

Status = Literal["draft", "active", "archived"]
Scope = Literal["show", "overall"]


class VariantIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"sku": "JKT-M-BLUE", "stock": 12, "options": {"size": "M", "colour": "blue"}}]})

    sku: str = Field(min_length=1, max_length=64)
    stock: int = Field(0, ge=0, le=1_000_000)
    options: dict[str, str] = Field(default_factory=dict)


class ProductIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"title": "90s denim jacket", "description": "Light wash, size M", "price_minor": 4500, "stock": 3,
         "status": "active", "purchase_limit": 1},
        {"title": "Band tee", "price_minor": 2000, "currency": "EUR", "variants": [
            {"sku": "TEE-S", "stock": 5, "options": {"size": "S"}},
            {"sku": "TEE-M", "stock": 8, "options": {"size": "M"}}], "purchase_limit": 2, "limit_scope": "show"}]})

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    price_minor: int = Field(ge=0, description="integer minor units (cents)")
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217; default commerce.currency")
    status: Status = "draft"
    stock: int = Field(0, ge=0, le=1_000_000, description="stock of the default variant (without variants)")
    variants: list[VariantIn] | None = Field(None, min_length=1, max_length=100)
    purchase_limit: int | None = Field(None, ge=1, le=10_000)
    limit_scope: Scope = "overall"


class ProductPatch(BaseModel):
    """Only the fields given change; `purchase_limit: null` removes the limit."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"price_minor": 3900, "status": "active"}, {"purchase_limit": None}]})

    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    price_minor: int | None = Field(None, ge=0)
    status: Status | None = None
    purchase_limit: int | None = Field(None, ge=1, le=10_000)
    limit_scope: Scope | None = None


class StockIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"delta": 10}, {"delta": -2}]})

    delta: int = Field(ge=-1_000_000, le=1_000_000, description="units to add (negative: free units to take off)")


class SaleIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"price_minor": 1999, "starts_at": 1767268800000, "ends_at": 1767270600000},
        {"price_minor": 9900, "starts_at": 1767268800000, "ends_at": 1767269100000, "admission": "queue",
         "queue_factor": 2, "token_seconds": 120},
        {"price_minor": 25000, "starts_at": 1767268800000, "ends_at": 1767272400000, "admission": "lottery"}]})

    price_minor: int = Field(ge=0)
    starts_at: int = Field(ge=0, description="ms since the Unix epoch (server time)")
    ends_at: int = Field(ge=0, description="ms since the Unix epoch; a lottery draws then")
    admission: Literal["open", "queue", "lottery"] = "open"
    queue_factor: int = Field(2, ge=1, le=100)
    token_seconds: int = Field(120, ge=10, le=3600)
    quantity: int | None = Field(None, ge=1, description="units offered at the sale price (default: the stock)")


class ShippingIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"shipping_minor": 599, "currency": "USD"}]})

    shipping_minor: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class ProductQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_id: int | None = Field(None, ge=1)
    limit: int = Field(50, ge=1, le=100)
    offset: int = Field(0, ge=0)


class MyProductQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    limit: int = Field(50, ge=1, le=100)
    offset: int = Field(0, ge=0)


class LineupIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"product_id": 7, "show_price_minor": 3500},
                                                              {"product_id": 8}]})

    product_id: int = Field(ge=1)
    show_price_minor: int | None = Field(None, ge=0)


class LineupOrderIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"product_ids": [8, 7, 9]}]})

    product_ids: list[int] = Field(max_length=200)


def _product_id(request: web.Request) -> int:
    return path_id(request, "id", "product_not_found", "product")


def _show_id(request: web.Request) -> int:
    return path_id(request, "id", "show_not_found", "show")


async def _viewer(request: web.Request, session: AsyncSession) -> User | None:
    """The signed-in caller of a public operation, if any (an owner sees their drafts)."""
    principal = request.get(PRINCIPAL)
    if principal is None or principal.user_id is None:
        return None
    return await get_user(session, principal.user_id)


@api.route("POST", "/api/products", summary="Create a product (one default variant, or several)", tag="products",
           access="host", body=ProductIn, response=ProductOut, status=201, rate_limit="write")
async def create_product(request: web.Request, body: ProductIn) -> ProductOut:
    async with runtime(request).db.write() as session:
        product = await catalog.create_product(
            session, await caller(request, session), body.title, body.price_minor,
            currency=body.currency or settings(request).commerce.currency, description=body.description,
            status=body.status, stock=body.stock, purchase_limit=body.purchase_limit, limit_scope=body.limit_scope,
            variants=None if body.variants is None else [VariantSpec(v.sku, v.stock, v.options) for v in body.variants])
    return ProductOut.of(product)


@api.route("GET", "/api/products", summary="Products on sale (active), newest first", tag="products",
           query=ProductQuery, response=ProductList)
async def list_products(request: web.Request, query: ProductQuery) -> ProductList:
    async with runtime(request).db.read() as session:
        products = await catalog.list_products(session, owner_id=query.owner_id, status="active", limit=query.limit,
                                               offset=query.offset)
    return ProductList(products=[ProductOut.of(product) for product in products])


@api.route("GET", "/api/me/products", summary="Your products in every status", tag="products", access="host",
           query=MyProductQuery, response=ProductList)
async def my_products(request: web.Request, query: MyProductQuery) -> ProductList:
    async with runtime(request).db.read() as session:
        user = await caller(request, session)
        products = await catalog.list_products(session, owner_id=user.id, status=query.status, limit=query.limit,
                                               offset=query.offset)
    return ProductList(products=[ProductOut.of(product) for product in products])


@api.route("GET", "/api/products/{id}", summary="A product with its stock and flash sale (drafts: owner only)",
           tag="products", response=ProductOut, errors=(404,))
async def get_product(request: web.Request) -> ProductOut:
    db = runtime(request).db
    async with db.read() as session:
        product = await catalog.visible_product(session, _product_id(request), await _viewer(request, session))
        sale = await flash_sales.sale_for_product(session, product.id, product.price.currency)
    availability.for_database(db).note_read(product.id, [(variant.id, variant.available)
                                                         for variant in product.variants])
    return ProductOut.of(product, sale)


@api.route("PATCH", "/api/products/{id}", summary="Change a product (owner or admin)", tag="products",
           access="host", body=ProductPatch, response=ProductOut, errors=(404,), rate_limit="write")
async def update_product(request: web.Request, body: ProductPatch) -> ProductOut:
    async with runtime(request).db.write() as session:
        product = await catalog.update_product(
            session, await caller(request, session), _product_id(request), title=body.title,
            description=body.description, price_minor=body.price_minor, status=body.status,
            purchase_limit=body.purchase_limit, limit_scope=body.limit_scope,
            clear_purchase_limit="purchase_limit" in body.model_fields_set and body.purchase_limit is None)
    return ProductOut.of(product)


@api.route("POST", "/api/products/{id}/variants", summary="Add a variant with its own SKU and stock",
           tag="products", access="host", body=VariantIn, response=ProductOut, status=201, errors=(404, 409),
           rate_limit="write")
async def add_variant(request: web.Request, body: VariantIn) -> ProductOut:
    async with runtime(request).db.write() as session:
        product = await catalog.add_variant(session, await caller(request, session), _product_id(request),
                                            VariantSpec(body.sku, body.stock, body.options))
    return ProductOut.of(product)


@api.route("POST", "/api/products/{id}/variants/{variant_id}/stock", summary="Add or take off free stock",
           tag="products", access="host", body=StockIn, response=VariantOut, errors=(404, 409), rate_limit="write")
async def adjust_stock(request: web.Request, body: StockIn) -> VariantOut:
    variant_id = path_id(request, "variant_id", "variant_not_found", "variant")
    async with runtime(request).db.write() as session:
        variant = await catalog.adjust_stock(session, await caller(request, session), _product_id(request),
                                             variant_id, body.delta)
    return VariantOut.of(variant)


@api.route("PUT", "/api/products/{id}/sale", summary="Put a product on flash sale (or change a sale not started)",
           tag="flash-sales", access="host", body=SaleIn, response=SaleOut, errors=(404, 409), rate_limit="write")
async def set_sale(request: web.Request, body: SaleIn) -> SaleOut:
    async with runtime(request).db.write() as session:
        sale = await flash_sales.set_sale(session, await caller(request, session), _product_id(request),
                                          price_minor=body.price_minor, starts_at=body.starts_at,
                                          ends_at=body.ends_at, admission=body.admission,
                                          queue_factor=body.queue_factor, token_seconds=body.token_seconds,
                                          quantity=body.quantity)
    return SaleOut.of(sale)


@api.route("DELETE", "/api/products/{id}/sale", summary="Remove a sale not started, or end a running one now",
           tag="flash-sales", access="host", status=204, errors=(404,), rate_limit="write")
async def end_sale(request: web.Request) -> None:
    async with runtime(request).db.write() as session:
        await flash_sales.end_sale_now(session, await caller(request, session), _product_id(request))


@api.route("GET", "/api/me/shipping", summary="Your flat shipping rate per order", tag="products", access="host",
           response=ShippingOut)
async def get_shipping(request: web.Request) -> ShippingOut:
    async with runtime(request).db.read() as session:
        user = await caller(request, session)
        return ShippingOut.of(await catalog.host_settings(session, user.id, settings(request).commerce.currency))


@api.route("PUT", "/api/me/shipping", summary="Set your flat shipping rate (charged once per show and buyer)",
           tag="products", access="host", body=ShippingIn, response=ShippingOut, rate_limit="write")
async def set_shipping(request: web.Request, body: ShippingIn) -> ShippingOut:
    async with runtime(request).db.write() as session:
        return ShippingOut.of(await catalog.set_host_settings(session, await caller(request, session),
                                                              body.shipping_minor, body.currency))


@api.route("GET", "/api/shows/{id}/lineup", summary="A show's products in order", tag="lineup", response=LineupOut,
           errors=(404,))
async def get_lineup(request: web.Request) -> LineupOut:
    show_id = _show_id(request)
    async with runtime(request).db.read() as session:
        return LineupOut.of(show_id, await lineup.get_lineup(session, show_id))


@api.route("POST", "/api/shows/{id}/lineup", summary="Offer a product in a show (or change its show price)",
           tag="lineup", access="host", body=LineupIn, response=LineupOut, errors=(404, 409), rate_limit="write")
async def add_to_lineup(request: web.Request, body: LineupIn) -> LineupOut:
    show_id = _show_id(request)
    async with runtime(request).db.write() as session:
        entries = await lineup.add(session, await caller(request, session), show_id, body.product_id,
                                   show_price_minor=body.show_price_minor)
    return LineupOut.of(show_id, entries)


@api.route("DELETE", "/api/shows/{id}/lineup/{product_id}", summary="Take a product out of a show's lineup",
           tag="lineup", access="host", response=LineupOut, errors=(404, 409), rate_limit="write")
async def remove_from_lineup(request: web.Request) -> LineupOut:
    show_id = _show_id(request)
    product_id = path_id(request, "product_id", "not_in_lineup", "lineup item")
    async with runtime(request).db.write() as session:
        entries = await lineup.remove(session, await caller(request, session), show_id, product_id)
    return LineupOut.of(show_id, entries)


@api.route("PUT", "/api/shows/{id}/lineup/order", summary="Reorder a show's lineup", tag="lineup", access="host",
           body=LineupOrderIn, response=LineupOut, errors=(404, 409), rate_limit="write")
async def reorder_lineup(request: web.Request, body: LineupOrderIn) -> LineupOut:
    show_id = _show_id(request)
    async with runtime(request).db.write() as session:
        entries = await lineup.reorder(session, await caller(request, session), show_id, body.product_ids)
    return LineupOut.of(show_id, entries)

