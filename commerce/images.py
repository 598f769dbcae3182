"""Product images: add (already processed by `commerce.image_processing`), remove, reorder, and their files.

Files live in one directory under random names (128 bits, so a draft's images cannot be guessed) that are
never reused: a stored file never changes, so it may be cached for good. Files are written before the row
that names them is committed and removed only after the row's removal is committed, so a row never names a
missing file; a failed insert removes the files it wrote.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Invalid, NotFound
from accounts.service import get_user
from accounts.user import User
from commerce.catalog import complete_product, product_row, require_owner
from commerce.image_processing import FORMATS, ProcessedImage
from commerce.models import ProductImageRow
from commerce.values import IMAGE_TYPES, Product, ProductImage
from store import Database, after_commit, clock

logger = logging.getLogger(__name__)

NAME_BYTES = 16


@dataclass(frozen=True)
class ImageFiles:
    """The directory holding every product image and thumbnail."""

    directory: Path

    def path(self, file_name: str) -> Path:
        return self.directory / file_name

    def write(self, name: str, image: ProcessedImage) -> list[Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        extension = FORMATS[image.format][1]
        files = {f"{name}.{extension}": image.full.data}
        files |= {f"{name}-{size}.{extension}": encoded.data for size, encoded in image.thumbnails.items()}
        written: list[Path] = []
        try:
            for file_name, data in files.items():
                partial = self.path(f".{file_name}.partial")
                partial.write_bytes(data)
                written.append(partial.replace(self.path(file_name)))
        except OSError:
            self.remove(written)
            raise
        return written

    def remove(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("could not remove image file %s", path.name)

    def files_of(self, image: ProductImage) -> list[Path]:
        sizes: list[int | None] = [None, *(thumbnail.size for thumbnail in image.thumbnails)]
        return [self.path(image.file_name(size)) for size in sizes]


async def add_image(db: Database, files: ImageFiles, actor_id: int, product_id: int, image: ProcessedImage, *,
                    per_product: int) -> Product:
    """Store `image` as the product's last image (owner or admin); Conflict("too_many_images") past the limit."""
    name = secrets.token_hex(NAME_BYTES)
    written = files.write(name, image)
    try:
        async with db.write() as session:
            row = await product_row(session, product_id)
            require_owner(await get_user(session, actor_id), row)
            count = (await session.execute(select(func.count()).select_from(ProductImageRow)
                                           .where(ProductImageRow.product_id == product_id))).scalar_one()
            if count >= per_product:
                raise Conflict("too_many_images", f"a product has at most {per_product} images", "image")
            session.add(ProductImageRow(
                product_id=product_id, name=name, format=FORMATS[image.format][1], width=image.full.width,
                height=image.full.height, bytes=len(image.full.data), position=count, created_at=clock.now_ms(),
                thumbnails=[[size, encoded.width, encoded.height] for size, encoded in image.thumbnails.items()]))
            await session.flush()
            return await complete_product(session, row)
    except BaseException:
        files.remove(written)
        raise


async def remove_image(session: AsyncSession, files: ImageFiles, actor: User, product_id: int,
                       image_id: int) -> Product:
    """Take an image off the product (owner or admin); its files go once that is committed."""
    row = await product_row(session, product_id)
    require_owner(actor, row)
    image = await session.get(ProductImageRow, image_id, populate_existing=True)
    if image is None or image.product_id != product_id:
        raise NotFound("image_not_found", "no such image on this product")
    gone = files.files_of(ProductImage.from_row(image))
    await session.delete(image)
    await session.flush()
    await _renumber(session, product_id, None)
    after_commit(session, lambda: files.remove(gone))
    return await complete_product(session, row)


async def reorder_images(session: AsyncSession, actor: User, product_id: int, image_ids: list[int]) -> Product:
    """Put the product's images in this order; `image_ids` must name each of them exactly once."""
    row = await product_row(session, product_id)
    require_owner(actor, row)
    await _renumber(session, product_id, image_ids)
    return await complete_product(session, row)


async def _renumber(session: AsyncSession, product_id: int, order: list[int] | None) -> None:
    rows = list((await session.execute(select(ProductImageRow).where(ProductImageRow.product_id == product_id)
                                       .order_by(ProductImageRow.position, ProductImageRow.id))).scalars())
    if order is not None:
        if sorted(order) != sorted(image.id for image in rows):
            raise Invalid("invalid_order", "name each of the product's images exactly once", "image_ids")
        by_id = {image.id: image for image in rows}
        rows = [by_id[image_id] for image_id in order]
    for position, image in enumerate(rows):
        image.position = position
    await session.flush()


def content_type(file_name: str) -> str:
    return IMAGE_TYPES[file_name.rsplit(".", 1)[1]]
