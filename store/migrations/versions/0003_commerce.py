"""Commerce: host settings, products and variants with stock counters, show lineups, flash sales and admission
entries, orders with lines and audit events, holds, purchase counters, idempotency keys, payments.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str, column: str, target: str, ondelete: str | None = None) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}",
                                   ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "host_settings",
        sa.Column("user_id", BigId, nullable=False, autoincrement=False),
        sa.Column("shipping_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_host_settings"),
        _fk("host_settings", "user_id", "users", "CASCADE"),
        sa.CheckConstraint("shipping_minor >= 0", name="ck_host_settings_shipping_minor"),
    )
    op.create_table(
        "products",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner_id", BigId, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("price_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("purchase_limit", sa.Integer, nullable=True),
        sa.Column("limit_scope", sa.String(10), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        _fk("products", "owner_id", "users"),
        sa.CheckConstraint("status IN ('draft', 'active', 'archived')", name="ck_products_status"),
        sa.CheckConstraint("limit_scope IN ('show', 'overall')", name="ck_products_limit_scope"),
        sa.CheckConstraint("price_minor >= 0", name="ck_products_price_minor"),
        sa.CheckConstraint("purchase_limit IS NULL OR purchase_limit >= 1", name="ck_products_purchase_limit"),
    )
    op.create_index("ix_products_owner_id", "products", ["owner_id"])
    op.create_table(
        "variants",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("product_id", BigId, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("available", sa.Integer, nullable=False),
        sa.Column("held", sa.Integer, nullable=False),
        sa.Column("sold", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_variants"),
        _fk("variants", "product_id", "products", "CASCADE"),
        sa.UniqueConstraint("product_id", "sku", name="uq_variants_product_id_sku"),
        sa.CheckConstraint("available >= 0", name="ck_variants_available"),
        sa.CheckConstraint("held >= 0", name="ck_variants_held"),
        sa.CheckConstraint("sold >= 0", name="ck_variants_sold"),
    )
    op.create_index("ix_variants_product_id", "variants", ["product_id"])
    op.create_table(
        "lineup_items",
        sa.Column("show_id", BigId, nullable=False, autoincrement=False),
        sa.Column("product_id", BigId, nullable=False, autoincrement=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("show_price_minor", sa.BigInteger, nullable=True),
        sa.Column("added_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("show_id", "product_id", name="pk_lineup_items"),
        _fk("lineup_items", "show_id", "shows", "CASCADE"),
        _fk("lineup_items", "product_id", "products", "CASCADE"),
        sa.CheckConstraint("show_price_minor IS NULL OR show_price_minor >= 0", name="ck_lineup_items_show_price"),
    )
    op.create_index("ix_lineup_items_product_id", "lineup_items", ["product_id"])
    op.create_table(
        "flash_sales",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("product_id", BigId, nullable=False),
        sa.Column("price_minor", sa.BigInteger, nullable=False),
        sa.Column("starts_at", sa.BigInteger, nullable=False),
        sa.Column("ends_at", sa.BigInteger, nullable=False),
        sa.Column("admission", sa.String(10), nullable=False),
        sa.Column("queue_factor", sa.Integer, nullable=False),
        sa.Column("token_seconds", sa.Integer, nullable=False),
        sa.Column("seed", sa.String(64), nullable=True),
        sa.Column("drawn_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_flash_sales"),
        _fk("flash_sales", "product_id", "products", "CASCADE"),
        sa.UniqueConstraint("product_id", name="uq_flash_sales_product_id"),
        sa.CheckConstraint("admission IN ('open', 'queue', 'lottery')", name="ck_flash_sales_admission"),
        sa.CheckConstraint("ends_at > starts_at", name="ck_flash_sales_window"),
        sa.CheckConstraint("price_minor >= 0", name="ck_flash_sales_price_minor"),
    )
    op.create_table(
        "admission_entries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sale_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("rank", sa.Integer, nullable=True),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("token_expires_at", sa.BigInteger, nullable=True),
        sa.Column("joined_at", sa.BigInteger, nullable=False),
        sa.Column("admitted_at", sa.BigInteger, nullable=True),
        sa.Column("used_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admission_entries"),
        _fk("admission_entries", "sale_id", "flash_sales", "CASCADE"),
        _fk("admission_entries", "user_id", "users", "CASCADE"),
        sa.UniqueConstraint("sale_id", "user_id", name="uq_admission_entries_sale_id_user_id"),
        sa.UniqueConstraint("token", name="uq_admission_entries_token"),
        sa.CheckConstraint("status IN ('waiting', 'admitted', 'used', 'expired')", name="ck_admission_entries_status"),
    )
    op.create_index("ix_admission_entries_sale_status", "admission_entries", ["sale_id", "status", "id"])
    op.create_index("ix_admission_entries_user_id", "admission_entries", ["user_id"])
    op.create_table(
        "orders",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("buyer_id", BigId, nullable=False),
        sa.Column("seller_id", BigId, nullable=False),
        sa.Column("show_id", BigId, nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("items_minor", sa.BigInteger, nullable=False),
        sa.Column("shipping_minor", sa.BigInteger, nullable=False),
        sa.Column("tax_minor", sa.BigInteger, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("shipping_address", sa.JSON, nullable=False),
        sa.Column("tracking_number", sa.String(100), nullable=True),
        sa.Column("carrier", sa.String(50), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.ForeignKeyConstraint(["buyer_id"], ["users.id"], name="fk_orders_buyer_id_users"),
        sa.ForeignKeyConstraint(["seller_id"], ["users.id"], name="fk_orders_seller_id_users"),
        _fk("orders", "show_id", "shows", "SET NULL"),
        sa.CheckConstraint("status IN ('pending', 'reserved', 'paid', 'fulfilled', 'cancelled', 'expired', "
                           "'refunded')", name="ck_orders_status"),
    )
    op.create_index("ix_orders_buyer_created", "orders", ["buyer_id", "created_at"])
    op.create_index("ix_orders_seller_status", "orders", ["seller_id", "status"])
    op.create_index("ix_orders_buyer_seller_show", "orders", ["buyer_id", "seller_id", "show_id"])
    op.create_table(
        "holds",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("product_id", BigId, nullable=False),
        sa.Column("variant_id", BigId, nullable=False),
        sa.Column("show_id", BigId, nullable=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("limit_scope", sa.String(40), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("order_id", BigId, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        _fk("holds", "user_id", "users"),
        _fk("holds", "product_id", "products"),
        _fk("holds", "variant_id", "variants"),
        _fk("holds", "show_id", "shows", "SET NULL"),
        _fk("holds", "order_id", "orders"),
        sa.CheckConstraint("status IN ('active', 'cancelled', 'expired', 'paid', 'refunded')",
                           name="ck_holds_status"),
        sa.CheckConstraint("quantity > 0", name="ck_holds_quantity"),
    )
    op.create_index("ix_holds_user_status", "holds", ["user_id", "status"])
    op.create_index("ix_holds_variant_id", "holds", ["variant_id"])
    op.create_index("ix_holds_order_id", "holds", ["order_id"])
    op.create_table(
        "purchase_counters",
        sa.Column("product_id", BigId, nullable=False, autoincrement=False),
        sa.Column("user_id", BigId, nullable=False, autoincrement=False),
        sa.Column("scope", sa.String(40), nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("product_id", "user_id", "scope", name="pk_purchase_counters"),
        _fk("purchase_counters", "product_id", "products", "CASCADE"),
        _fk("purchase_counters", "user_id", "users", "CASCADE"),
        sa.CheckConstraint("units >= 0", name="ck_purchase_counters_units"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", BigId, nullable=False, autoincrement=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(40), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name="pk_idempotency_keys"),
        _fk("idempotency_keys", "user_id", "users", "CASCADE"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "order_lines",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("hold_id", BigId, nullable=False),
        sa.Column("product_id", BigId, nullable=False),
        sa.Column("variant_id", BigId, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_lines"),
        _fk("order_lines", "order_id", "orders", "CASCADE"),
        _fk("order_lines", "hold_id", "holds"),
        _fk("order_lines", "product_id", "products"),
        _fk("order_lines", "variant_id", "variants"),
        sa.UniqueConstraint("hold_id", name="uq_order_lines_hold_id"),
    )
    op.create_index("ix_order_lines_order_id", "order_lines", ["order_id"])
    op.create_table(
        "order_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("from_status", sa.String(10), nullable=True),
        sa.Column("to_status", sa.String(10), nullable=False),
        sa.Column("actor_id", BigId, nullable=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_events"),
        _fk("order_events", "order_id", "orders", "CASCADE"),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name="fk_order_events_actor_id_users",
                                ondelete="SET NULL"),
    )
    op.create_index("ix_order_events_order_id", "order_events", ["order_id"])
    op.create_table(
        "payments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("intent_id", sa.String(100), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("failure_code", sa.String(50), nullable=True),
        sa.Column("refund_id", sa.String(100), nullable=True),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        _fk("payments", "order_id", "orders", "CASCADE"),
        sa.UniqueConstraint("intent_id", name="uq_payments_intent_id"),
    )
    op.create_index("ix_payments_order_id", "payments", ["order_id"])


def downgrade() -> None:
    for table in ("payments", "order_events", "order_lines", "idempotency_keys", "purchase_counters", "holds",
                  "orders", "admission_entries", "flash_sales", "lineup_items", "variants", "products",
                  "host_settings"):
        op.drop_table(table)
