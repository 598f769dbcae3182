"""Commerce: a flash sale may offer a limited number of units at its price (`quantity`, with `taken` counting
them); a hold remembers the sale it took a unit from, to give it back if the hold ends unpaid.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flash_sales", sa.Column("quantity", sa.BigInteger(), nullable=True))
    op.add_column("flash_sales", sa.Column("taken", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("holds", sa.Column("sale_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("holds", "sale_id")
    op.drop_column("flash_sales", "taken")
    op.drop_column("flash_sales", "quantity")
