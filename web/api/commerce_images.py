"""Product images: upload (host owner or admin), remove, reorder, and serve the stored files.

Uploads are checked by content and re-encoded in a worker thread (`commerce.image_processing`); the files
are served from the data directory under names that never change meaning, so they are cached for a year.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commerce import images
from commerce.catalog import product_row, require_owner
from commerce.image_processing import ImageLimits, process
from web.api.commerce_common import ProductOut, path_id
from web.api.common import caller, principal, runtime, settings
from web.api.registry import Api, Upload, UploadedFile
from web.errors import ApiError

api = Api()

IMAGE_DIRECTORY = "product-images"
"""Under the configured data_dir."""
CACHE_CONTROL = "public, max-age=31536000, immutable"
_FILE_NAME = re.compile(r"^[0-9a-f]{32}(-[0-9]{1,4})?\.(jpg|png|webp)$")


class ImageOrderIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"image_ids": [12, 10, 11]}]})

    image_ids: list[int] = Field(max_length=100)


def image_files(request: web.Request) -> images.ImageFiles:
    return images.ImageFiles(Path(settings(request).data_dir) / IMAGE_DIRECTORY)


def _limits(request: web.Request) -> ImageLimits:
    configured = settings(request).commerce.images
    return ImageLimits(max_bytes=configured.max_bytes, max_pixels=configured.max_pixels,
                       max_side=configured.max_side, thumbnail_sizes=tuple(configured.thumbnail_sizes))


def _product_id(request: web.Request) -> int:
    return path_id(request, "id", "product_not_found", "product")


IMAGE_UPLOAD = Upload(field="image", max_bytes=lambda request: settings(request).commerce.images.max_bytes,
                      media_types=("image/jpeg", "image/png", "image/webp"),
                      description="A JPEG, PNG or WebP image (checked by content, re-encoded without metadata)")


@api.route("POST", "/api/products/{id}/images", summary="Add an image to a product (owner or admin)",
           tag="products", access="host", upload=IMAGE_UPLOAD, response=ProductOut, status=201,
           errors=(404, 409), rate_limit="write")
async def upload_image(request: web.Request, upload: UploadedFile) -> ProductOut:
    product_id = _product_id(request)
    async with runtime(request).db.read() as session:  # refuse strangers before spending CPU on their file
        require_owner(await caller(request, session), await product_row(session, product_id))
    processed = await asyncio.to_thread(process, upload.data, _limits(request), upload.field)
    product = await images.add_image(runtime(request).db, image_files(request), principal(request).user_id or 0,
                                     product_id, processed, per_product=settings(request).commerce.images.per_product)
    return ProductOut.of(product)


@api.route("DELETE", "/api/products/{id}/images/{image_id}", summary="Remove a product image (owner or admin)",
           tag="products", access="host", response=ProductOut, errors=(404,), rate_limit="write")
async def delete_image(request: web.Request) -> ProductOut:
    image_id = path_id(request, "image_id", "image_not_found", "image")
    async with runtime(request).db.write() as session:
        product = await images.remove_image(session, image_files(request), await caller(request, session),
                                            _product_id(request), image_id)
    return ProductOut.of(product)


@api.route("PUT", "/api/products/{id}/images/order", summary="Reorder a product's images (owner or admin)",
           tag="products", access="host", body=ImageOrderIn, response=ProductOut, errors=(404,),
           rate_limit="write")
async def reorder_images(request: web.Request, body: ImageOrderIn) -> ProductOut:
    async with runtime(request).db.write() as session:
        product = await images.reorder_images(session, await caller(request, session), _product_id(request),
                                              body.image_ids)
    return ProductOut.of(product)


@api.route("GET", "/api/product-images/{file}", summary="A stored product image or thumbnail (cached for a year)",
           tag="products", errors=(404,))
async def image_file(request: web.Request) -> web.StreamResponse:
    file_name = request.match_info["file"]
    path = image_files(request).path(file_name)
    if not _FILE_NAME.match(file_name) or not path.is_file():
        raise ApiError(404, "image_not_found", "no such image")
    return web.FileResponse(path, headers={"Content-Type": images.content_type(file_name),
                                           "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"})
