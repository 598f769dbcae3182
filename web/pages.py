"""The first pages: the landing list of live shows, the host's studio and the viewer's player.

Plain HTML and JavaScript modules with no build step. Pages come from `web/html`, assets from `web/static`;
both are read once when the routes are added. Pages refer to assets as `{{static}}/…`, which becomes
`/static/v<hash>/…`: the hash covers every asset, so a versioned URL always names the same bytes and may be
cached for a year, and modules importing `./other.js` resolve inside the same version. Pages themselves are
revalidated on every load (`no-cache` with an ETag), so a new release reaches the next page view.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

HTML_DIR = Path(__file__).parent / "html"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
STATIC_PLACEHOLDER = "{{static}}"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "img-src 'self' data: blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# Content types by suffix; the text ones are served as UTF-8. Anything else in web/static is not served.
_CONTENT_TYPES = {
    ".css": ("text/css", True),
    ".js": ("text/javascript", True),
    ".json": ("application/json", True),
    ".svg": ("image/svg+xml", True),
    ".png": ("image/png", False),
    ".webp": ("image/webp", False),
    ".woff2": ("font/woff2", False),
}
_VERSION = re.compile(r"v[0-9a-f]{16}")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    charset: str | None
    etag: str


@dataclass(frozen=True)
class Page:
    body: bytes
    etag: str
    permissions: str
    """Permissions-Policy: only the studio may ask for the camera and microphone."""


@dataclass(frozen=True)
class Site:
    version: str
    assets: dict[str, Asset]
    pages: dict[str, Page]

    @classmethod
    def load(cls, html_dir: Path = HTML_DIR, static_dir: Path = STATIC_DIR) -> Site:
        assets: dict[str, Asset] = {}
        digest = hashlib.sha256()
        for path in sorted(p for p in static_dir.rglob("*") if p.is_file()):
            kind = _CONTENT_TYPES.get(path.suffix)
            if kind is None:
                continue
            name = path.relative_to(static_dir).as_posix()
            body = path.read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
            content_type, is_text = kind
            assets[name] = Asset(body, content_type, "utf-8" if is_text else None, _etag(body))
        version = "v" + digest.hexdigest()[:16]
        pages = {}
        for path in sorted(html_dir.glob("*.html")):
            text = path.read_text(encoding="utf-8").replace(STATIC_PLACEHOLDER, f"{STATIC_PREFIX}/{version}")
            body = text.encode()
            media = "(self)" if path.stem == "studio" else "()"
            pages[path.stem] = Page(body, _etag(body), f"camera={media}, microphone={media}")
        return cls(version, assets, pages)

    def asset_url(self, name: str) -> str:
        return f"{STATIC_PREFIX}/{self.version}/{name}"


SITE = web.AppKey("site", Site)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'


def _not_modified(request: web.Request, etag: str) -> bool:
    wanted = request.headers.get(hdrs.IF_NONE_MATCH, "")
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in wanted.split(","))


def _page_handler(name: str) -> Handler:
    async def serve_page(request: web.Request) -> web.StreamResponse:
        page = request.app[SITE].pages[name]
        headers = {
            hdrs.CACHE_CONTROL: REVALIDATE,
            hdrs.ETAG: page.etag,
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Permissions-Policy": page.permissions,
        }
        if _not_modified(request, page.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=page.body, content_type="text/html", charset="utf-8", headers=headers)

    serve_page.__name__ = f"{name}_page"
    return serve_page


async def serve_asset(request: web.Request) -> web.StreamResponse:
    """`/static/v<hash>/NAME` (what pages use) is immutable; `/static/NAME`, or an older version's URL during a
    release, gets the current bytes but must be revalidated."""
    site = request.app[SITE]
    path = request.match_info["path"]
    head, _, rest = path.partition("/")
    if rest and _VERSION.fullmatch(head):
        path, cache = rest, IMMUTABLE if head == site.version else REVALIDATE
    else:
        cache = REVALIDATE
    asset = site.assets.get(path)
    if asset is None:
        raise web.HTTPNotFound(text=f"no static file {path!r}")
    headers = {hdrs.CACHE_CONTROL: cache, hdrs.ETAG: asset.etag, "X-Content-Type-Options": "nosniff"}
    if _not_modified(request, asset.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset=asset.charset, headers=headers)


def add_routes(app: web.Application, site: Site | None = None) -> None:
    app[SITE] = site if site is not None else Site.load()
    app.router.add_get("/", _page_handler("index"), name="index_page")
    app.router.add_get("/studio", _page_handler("studio"), name="studio_page")
    app.router.add_get("/live/{room}", _page_handler("live"), name="live_page")
    app.router.add_get(STATIC_PREFIX + "/{path:.+}", serve_asset, name="static")
