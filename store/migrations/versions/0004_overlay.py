"""Overlay: show overlays (pins, slow mode, the studio's flash sale), chat messages, room sanctions, presence
per node and the last announced coalesced values.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}",
                                   ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "show_overlays",
        sa.Column("show_id", BigId, nullable=False, autoincrement=False),
        sa.Column("pinned", sa.JSON, nullable=False),
        sa.Column("slow_mode_seconds", sa.Integer, nullable=False),
        sa.Column("sale_product_id", sa.BigInteger, nullable=True),
        sa.Column("sale_quantity", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("show_id", name="pk_show_overlays"),
        _fk("show_overlays", "show_id", "shows", "CASCADE"),
    )
    op.create_table(
        "chat_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("room_id", BigId, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("user_id", BigId, nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("text", sa.String(10_000), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
        sa.Column("deleted_by", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        _fk("chat_messages", "room_id", "rooms", "CASCADE"),
        _fk("chat_messages", "user_id", "users", "SET NULL"),
        _fk("chat_messages", "deleted_by", "users", "SET NULL"),
    )
    op.create_index("ix_chat_messages_room_id_id", "chat_messages", ["room_id", "id"])
    op.create_index("ix_chat_messages_room_author_at", "chat_messages", ["room_id", "author", "created_at"])
    op.create_table(
        "room_sanctions",
        sa.Column("room_id", BigId, nullable=False, autoincrement=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("until", sa.BigInteger, nullable=True),
        sa.Column("by_user_id", BigId, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("room_id", "author", "kind", name="pk_room_sanctions"),
        _fk("room_sanctions", "room_id", "rooms", "CASCADE"),
        _fk("room_sanctions", "by_user_id", "users", "SET NULL"),
        sa.CheckConstraint("kind IN ('mute', 'ban')", name="ck_room_sanctions_kind"),
    )
    op.create_table(
        "room_presence",
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("room", "node", name="pk_room_presence"),
    )
    op.create_table(
        "overlay_announced",
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(4000), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("room", "key", name="pk_overlay_announced"),
    )


def downgrade() -> None:
    for table in ("overlay_announced", "room_presence", "room_sanctions", "chat_messages", "show_overlays"):
        op.drop_table(table)
