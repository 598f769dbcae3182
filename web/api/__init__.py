"""The REST API under /api: every operation declared once in a registry that also writes the OpenAPI document."""
