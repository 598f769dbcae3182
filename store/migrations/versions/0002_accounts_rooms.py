"""Accounts and rooms: users, refresh tokens, stream keys, rooms, co-hosts, shows, publisher sessions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LIVE_CONDITION = "status = 'live'"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("role IN ('viewer', 'host', 'admin')", name="ck_users_role"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_refresh_tokens_user_id_users",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_table(
        "stream_keys",
        sa.Column("user_id", BigId, primary_key=True, autoincrement=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_stream_keys"),
        sa.UniqueConstraint("key_hash", name="uq_stream_keys_key_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_stream_keys_user_id_users",
                                ondelete="CASCADE"),
    )
    op.create_table(
        "rooms",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("owner_id", BigId, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("visibility", sa.String(10), nullable=False),
        sa.Column("guest_policy", sa.String(20), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("program_publisher_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rooms"),
        sa.UniqueConstraint("slug", name="uq_rooms_slug"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_rooms_owner_id_users"),
        sa.CheckConstraint("visibility IN ('public', 'unlisted')", name="ck_rooms_visibility"),
        sa.CheckConstraint("guest_policy IN ('watch_and_chat', 'no_guests')", name="ck_rooms_guest_policy"),
    )
    op.create_index("ix_rooms_owner_id", "rooms", ["owner_id"])
    op.create_table(
        "room_cohosts",
        sa.Column("room_id", BigId, nullable=False, autoincrement=False),
        sa.Column("user_id", BigId, nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("room_id", "user_id", name="pk_room_cohosts"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_room_cohosts_room_id_rooms",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_room_cohosts_user_id_users",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_room_cohosts_user_id", "room_cohosts", ["user_id"])
    op.create_table(
        "shows",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("room_id", BigId, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("scheduled_start", sa.BigInteger, nullable=True),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shows"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_shows_room_id_rooms", ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('scheduled', 'live', 'ended')", name="ck_shows_status"),
    )
    # At most one live show per room, enforced by the database on both backends.
    op.create_index("uq_shows_room_live", "shows", ["room_id"], unique=True,
                    sqlite_where=sa.text(LIVE_CONDITION), postgresql_where=sa.text(LIVE_CONDITION))
    op.create_index("ix_shows_room_status", "shows", ["room_id", "status"])
    op.create_index("ix_shows_status_scheduled_start", "shows", ["status", "scheduled_start"])
    op.create_table(
        "publisher_sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("show_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_publisher_sessions"),
        sa.ForeignKeyConstraint(["show_id"], ["shows.id"], name="fk_publisher_sessions_show_id_shows",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_publisher_sessions_user_id_users",
                                ondelete="CASCADE"),
        sa.CheckConstraint("kind IN ('whip', 'browser')", name="ck_publisher_sessions_kind"),
    )
    op.create_index("ix_publisher_sessions_show_ended", "publisher_sessions", ["show_id", "ended_at"])
    op.create_index("ix_publisher_sessions_user_id", "publisher_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_table("publisher_sessions")
    op.drop_table("shows")
    op.drop_table("room_cohosts")
    op.drop_table("rooms")
    op.drop_table("stream_keys")
    op.drop_table("refresh_tokens")
    op.drop_table("users")
