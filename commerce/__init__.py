"""Catalog, inventory, orders and payments: plain domain code over SQLAlchemy."""
