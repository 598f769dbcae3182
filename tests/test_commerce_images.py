"""Product images: only real JPEG, PNG and WebP content is accepted (not names or claimed types), size and
pixel limits hold before decoding (image bombs), stored copies carry no metadata (EXIF GPS) nor appended
payloads (polyglots), thumbnails are made, files are served with their type and long cache headers, and
images are listed, reordered and deleted through the API by their product's owner only."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from PIL import Image

from commerce.image_processing import ImageLimits, TooLarge, UnsupportedType, process
from config import apply_overrides
from tests.api_client import Client, bearer
from web.middleware import CONFIG

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000, max_side=4000, thumbnail_sizes=(32, 96))
GPS_LATITUDE = 2  # EXIF GPS IFD tag
SECRET_TEXT = b"PINSTREAM-SECRET-PAYLOAD"


def _image(image_format: str, size: tuple[int, int] = (320, 200), mode: str = "RGB", **save: Any) -> bytes:
    image = Image.new(mode, size)
    for x in range(0, size[0], 7):  # some detail, so encoders have work to do
        image.putpixel((x, x % size[1]), (255, 0, 0) if mode == "RGB" else 200)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save)
    return buffer.getvalue()


def _jpeg_with_gps(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0112] = orientation
    exif.get_ifd(0x8825)[GPS_LATITUDE] = (51.0, 30.0, 0.0)
    return _image("JPEG", exif=exif.tobytes())


def _with_declared_size(png: bytes, width: int, height: int) -> bytes:
    """The same small PNG claiming other dimensions in its header (with a correct CRC): a bomb's shape."""
    ihdr_data = struct.pack(">II", width, height) + png[24:29]
    chunk = b"IHDR" + ihdr_data
    return png[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def _bomb(width: int, height: int) -> bytes:
    """A real PNG of one colour that decodes to width x height pixels yet is a few KB on disk."""
    row = b"\x00" + b"\x00" * (width // 8 + 1)
    raw = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_exif_gps_is_stripped_and_orientation_applied() -> None:
    original = _jpeg_with_gps(orientation=6)  # stored sideways: 320x200 shown as 200x320
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
    result = process(original, LIMITS)
    stored = Image.open(io.BytesIO(result.full.data))
    assert stored.format == "JPEG" and result.content_type == "image/jpeg"
    assert not stored.getexif() and b"SpyCam" not in result.full.data and b"Exif" not in result.full.data
    assert (result.full.width, result.full.height) == stored.size == (200, 320)
    for size, thumbnail in result.thumbnails.items():
        shown = Image.open(io.BytesIO(thumbnail.data))
        assert max(shown.size) == size and shown.size == (thumbnail.width, thumbnail.height)
        assert not shown.getexif()


def test_png_text_chunks_and_webp_metadata_are_dropped() -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", SECRET_TEXT.decode())
    png = process(_image("PNG", mode="RGBA", pnginfo=info), LIMITS)
    assert png.format == "PNG" and SECRET_TEXT not in png.full.data
    assert Image.open(io.BytesIO(png.full.data)).mode == "RGBA"
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    webp = process(_image("WEBP", exif=exif.tobytes()), LIMITS)
    assert webp.content_type == "image/webp" and b"SpyCam" not in webp.full.data


def test_only_jpeg_png_webp_content_is_accepted() -> None:
    with pytest.raises(UnsupportedType) as garbage:
        process(b"\x00\x01garbage" * 100, LIMITS)
    assert garbage.value.field == "image" and garbage.value.http_status == 415
    for other in ("GIF", "BMP", "TIFF"):
        with pytest.raises(UnsupportedType):
            process(_image(other), LIMITS)
    with pytest.raises(UnsupportedType):  # an HTML/script file is not made an image by its name
        process(b"<html><script>alert(1)</script></html>", LIMITS)


def test_polyglot_payload_is_not_stored() -> None:
    """A JPEG with a ZIP/HTML payload appended is a valid JPEG; the stored copy holds only the pixels."""
    polyglot = _image("JPEG") + b"PK\x03\x04" + SECRET_TEXT + b"<script>alert(1)</script>"
    result = process(polyglot, LIMITS)
    assert SECRET_TEXT not in result.full.data and b"<script>" not in result.full.data
    gif_js = b"GIF89a/*" + b"\x00" * 20 + b"*/=alert(1)//"  # GIFAR-style: a GIF header, a script body
    with pytest.raises(UnsupportedType):
        process(gif_js, LIMITS)


def test_corrupt_images_are_422() -> None:
    jpeg = _image("JPEG")
    with pytest.raises(Exception) as truncated:
        process(jpeg[: len(jpeg) // 3], LIMITS)
    assert getattr(truncated.value, "http_status", None) == 422
    assert getattr(truncated.value, "code", None) == "corrupt_image"
    damaged_png = bytearray(_image("PNG"))
    damaged_png[60:200] = b"\xff" * 140
    with pytest.raises(Exception) as damaged:
        process(bytes(damaged_png), LIMITS)
    assert getattr(damaged.value, "http_status", None) == 422


def test_size_and_pixel_limits_hold_before_decoding() -> None:
    with pytest.raises(TooLarge) as too_big:
        process(b"\xff\xd8" + b"\x00" * 1_000_001, LIMITS)
    assert too_big.value.code == "image_too_large"
    small_png = _image("PNG", size=(16, 16))
    for width, height in ((5000, 10), (3000, 3000), (60_000, 60_000)):  # side, pixels, Pillow's own bomb limit
        with pytest.raises(TooLarge) as bomb:
            process(_with_declared_size(small_png, width, height), LIMITS)
        assert bomb.value.code == "image_too_many_pixels" and bomb.value.field == "image"
    real_bomb = _bomb(20_000, 20_000)  # 400 million pixels in a few kilobytes
    assert len(real_bomb) < 200_000
    with pytest.raises(TooLarge):
        process(real_bomb, LIMITS)


# Through the API


def _form(data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg",
          field: str = "image") -> FormData:
    form = FormData()
    form.add_field(field, data, filename=filename, content_type=content_type)
    return form


async def _product(client: Client, headers: dict[str, str]) -> int:
    response = await client.post("/api/products", headers=headers, json={"title": "Lamp", "price_minor": 900,
                                                                          "stock": 1, "status": "active"})
    assert response.status == 201
    product_id: int = (await response.json())["id"]
    return product_id


async def _expect(response: Any, status: int, code: str | None = None) -> Any:
    body = await response.json()
    assert response.status == status, (response.status, body)
    if code is not None:
        assert body["error"]["code"] == code and body["error"]["field"] == "image", body
    return body


async def test_upload_list_serve_reorder_delete(client: Client, tmp_path: Path) -> None:
    host = await bearer(client, "host@example.com", "host")
    pid = await _product(client, host)
    # A PNG named and labelled as a JPEG is stored as what it is.
    product = await _expect(await client.post(f"/api/products/{pid}/images", headers=host,
                                              data=_form(_image("PNG"), "lie.jpg", "image/jpeg")), 201)
    first = product["images"][0]
    assert first["content_type"] == "image/png" and first["url"].endswith(".png")
    assert (first["width"], first["height"]) == (320, 200)
    assert [t["size"] for t in first["thumbnails"]] == [160, 480]
    assert (first["thumbnails"][1]["width"], first["thumbnails"][1]["height"]) == (320, 200)  # never upscaled
    product = await _expect(await client.post(f"/api/products/{pid}/images", headers=host,
                                              data=_form(_jpeg_with_gps())), 201)
    second = product["images"][1]
    assert [image["position"] for image in product["images"]] == [0, 1]

    served = await client.get(second["url"])
    assert served.status == 200 and served.headers["Content-Type"] == "image/jpeg"
    assert "immutable" in served.headers["Cache-Control"] and "max-age=31536000" in served.headers["Cache-Control"]
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    body = await served.read()
    assert not Image.open(io.BytesIO(body)).getexif() and b"SpyCam" not in body
    thumbnail = await client.get(second["thumbnails"][0]["url"])
    assert thumbnail.status == 200 and max(Image.open(io.BytesIO(await thumbnail.read())).size) == 160

    listed = await _expect(await client.get(f"/api/products/{pid}"), 200)
    assert [image["id"] for image in listed["images"]] == [first["id"], second["id"]]
    reordered = await _expect(await client.put(f"/api/products/{pid}/images/order", headers=host,
                                               json={"image_ids": [second["id"], first["id"]]}), 200)
    assert [image["id"] for image in reordered["images"]] == [second["id"], first["id"]]
    bad = await _expect(await client.put(f"/api/products/{pid}/images/order", headers=host,
                                         json={"image_ids": [second["id"]]}), 422)
    assert bad["error"]["field"] == "image_ids"

    files = tmp_path / "product-images"
    assert len(list(files.iterdir())) == 6  # two images, two thumbnails each
    remaining = await _expect(await client.delete(f"/api/products/{pid}/images/{second['id']}", headers=host), 200)
    assert [(image["id"], image["position"]) for image in remaining["images"]] == [(first["id"], 0)]
    assert (await client.get(second["url"])).status == 404
    assert (await client.get(second["thumbnails"][0]["url"])).status == 404
    assert len(list(files.iterdir())) == 3
    assert (await client.get("/api/product-images/..%2Fdb.sqlite")).status == 404
    assert (await client.delete(f"/api/products/{pid}/images/{second['id']}", headers=host)).status == 404


async def test_only_the_owner_or_an_admin_changes_images(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    other = await bearer(client, "other@example.com", "host")
    viewer = await bearer(client, "viewer@example.com")
    admin = await bearer(client, "admin@example.com", "admin")
    pid = await _product(client, host)
    url = f"/api/products/{pid}/images"
    assert (await client.post(url, data=_form(_image("JPEG")))).status == 401
    assert (await client.post(url, headers=viewer, data=_form(_image("JPEG")))).status == 403
    denied = await client.post(url, headers=other, data=_form(_image("JPEG")))
    assert denied.status == 403 and (await denied.json())["error"]["code"] == "not_product_owner"
    assert (await client.post("/api/products/999/images", headers=host, data=_form(_image("JPEG")))).status == 404
    product = await _expect(await client.post(url, headers=admin, data=_form(_image("WEBP"), "x.webp")), 201)
    image_id = product["images"][0]["id"]
    assert (await client.delete(f"{url}/{image_id}", headers=other)).status == 403
    assert (await client.put(f"{url}/order", headers=other, json={"image_ids": [image_id]})).status == 403


async def test_bad_uploads_are_clear_client_errors(client: Client, tmp_path: Path) -> None:
    host = await bearer(client, "host@example.com", "host")
    pid = await _product(client, host)
    url = f"/api/products/{pid}/images"
    await _expect(await client.post(url, headers=host, data=_form(b"MZ\x90\x00" + b"\x00" * 500, "a.png",
                                                                  "image/png")), 415, "unsupported_image_type")
    await _expect(await client.post(url, headers=host, data=_form(_image("GIF"), "a.gif", "image/gif")), 415,
                  "unsupported_image_type")
    jpeg = _image("JPEG")
    await _expect(await client.post(url, headers=host, data=_form(jpeg[: len(jpeg) // 3])), 422, "corrupt_image")
    await _expect(await client.post(url, headers=host, data=_form(_bomb(20_000, 20_000), "bomb.png")), 413,
                  "image_too_many_pixels")
    await _expect(await client.post(url, headers=host, data=_form(b"\xff\xd8" + b"\x00" * 10_485_760)), 413,
                  "too_large")
    await _expect(await client.post(url, headers=host, data=jpeg, ), 415, "unsupported_media_type")
    await _expect(await client.post(url, headers=host, data=_form(jpeg, field="photo")), 422, "invalid")
    await _expect(await client.post(url, headers=host, data=_form(b"")), 422, "invalid")
    polyglot = jpeg + b"<script>alert(1)</script>" + SECRET_TEXT
    product = await _expect(await client.post(url, headers=host, data=_form(polyglot, "a.html", "text/html")), 201)
    stored = await (await client.get(product["images"][0]["url"])).read()
    assert SECRET_TEXT not in stored and b"<script>" not in stored
    assert not [path for path in (tmp_path / "product-images").iterdir() if path.name.startswith(".")]

    holder = client.server.app[CONFIG]
    holder.current = apply_overrides(holder.current, {"commerce.images.per_product": 1,
                                                      "commerce.images.max_bytes": 2048})
    await _expect(await client.post(url, headers=host, data=_form(_image("PNG", size=(8, 8)))), 409,
                  "too_many_images")
    await _expect(await client.post(url, headers=host, data=_form(jpeg)), 413, "too_large")
    assert len(list((tmp_path / "product-images").iterdir())) == 3  # refused uploads left no files


async def test_upload_is_documented_as_multipart(client: Client) -> None:
    document = await (await client.get("/api/openapi.json")).json()
    operation = document["paths"]["/api/products/{id}/images"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["image"]
    assert body["encoding"]["image"]["contentType"] == "image/jpeg, image/png, image/webp"
    assert {"413", "415", "422", "401", "403"} <= set(operation["responses"])
    assert "get" in document["paths"]["/api/product-images/{file}"]
