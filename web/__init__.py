"""The aiohttp application: pages, static assets, health and metrics."""
