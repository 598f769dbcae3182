"""The first pages and their assets over HTTP: content types, caching, the Content-Security-Policy, and what the
page sources may and may not do (no markup from data, nothing fetched from elsewhere)."""

from __future__ import annotations

import re

import pytest

from tests.api_client import Client
from web.pages import HTML_DIR, STATIC_DIR, Site

REQUIRED_CSP = ("default-src 'self'", "media-src 'self' blob:", "connect-src 'self'", "img-src 'self' data: blob:")
ASSET_URL = re.compile(r'(?:src|href)="(/static/[^"]+)"')


@pytest.mark.parametrize("path", ["/", "/studio", "/live/vintage-finds"])
async def test_pages_are_html_with_csp_and_revalidated(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    assert all(directive in csp for directive in REQUIRED_CSP), csp
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    camera = "camera=(self)" if path == "/studio" else "camera=()"
    assert camera in response.headers["Permissions-Policy"]
    html = await response.text()
    assert "{{static}}" not in html
    etag = response.headers["ETag"]
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag

    version = Site.load().version
    urls = ASSET_URL.findall(html)
    assert {url.rsplit(".", 1)[1] for url in urls} >= {"css", "js", "svg"}
    for url in urls:
        assert url.startswith(f"/static/{version}/")
        asset = await client.get(url)
        assert asset.status == 200, url
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert asset.headers["X-Content-Type-Options"] == "nosniff"


async def test_assets_content_types_and_caching(client: Client) -> None:
    version = Site.load().version
    expected = {"app.css": "text/css; charset=utf-8", "studio.js": "text/javascript; charset=utf-8",
                "net.js": "text/javascript; charset=utf-8", "icon.svg": "image/svg+xml; charset=utf-8"}
    for name, content_type in expected.items():
        versioned = await client.get(f"/static/{version}/{name}")
        assert versioned.status == 200 and versioned.headers["Content-Type"] == content_type
        assert "immutable" in versioned.headers["Cache-Control"]
        plain = await client.get(f"/static/{name}")
        assert plain.status == 200 and plain.headers["Cache-Control"] == "no-cache"
        assert await plain.read() == await versioned.read()
        assert (await client.get(f"/static/{name}", headers={"If-None-Match": plain.headers["ETag"]})).status == 304
    # An older release's URL still gets today's bytes, but only for as long as it takes to revalidate.
    stale = await client.get("/static/v0123456789abcdef/app.css")
    assert stale.status == 200 and stale.headers["Cache-Control"] == "no-cache"
    for missing in ("/static/nope.js", f"/static/{version}/nope.js", "/static/%2e%2e/pages.py",
                    f"/static/{version}/../pages.py", "/static/..%2fpages.py"):
        response = await client.get(missing)
        assert response.status == 404, missing
        assert (await response.json())["error"]["code"] == "not_found"


def test_page_sources_build_no_markup_from_data_and_fetch_nothing_from_elsewhere() -> None:
    sources = [*HTML_DIR.glob("*.html"), *STATIC_DIR.glob("*.js"), *STATIC_DIR.glob("*.css")]
    assert len(sources) >= 8
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert forbidden not in text, f"{path.name} uses {forbidden}"
        assert not re.search(r"""["'(]\s*(https?:)?//""", text), f"{path.name} refers to another site"
    for path in HTML_DIR.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert "<script>" not in text and " style=" not in text, f"{path.name} has inline code or style"
