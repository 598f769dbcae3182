"""Commerce: product images (re-encoded files under random names, their thumbnails, their order).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "product_images",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("product_id", BigId, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("format", sa.String(4), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("thumbnails", sa.JSON, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_product_images"),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], name="fk_product_images_product_id_products",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("name", name="uq_product_images_name"),
        sa.CheckConstraint("format IN ('jpg', 'png', 'webp')", name="ck_product_images_format"),
    )
    op.create_index("ix_product_images_product_id", "product_images", ["product_id"])


def downgrade() -> None:
    op.drop_table("product_images")
